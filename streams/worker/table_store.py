"""Customer states in the Faust table: decoded once, written once per batch, after outputs.

Why writes wait for the batch end: a state row records the offsets it has applied, and a
redelivered event at or below them is skipped. If a state reached the changelog before the
outputs of the same event reached their topics, a crash in between would lose those outputs
for good. So the agent (1) processes a batch, (2) waits until every output of the batch is
acknowledged, and only then (3) writes each changed state once (also cutting changelog
traffic: one write per customer per batch, not per event). A crash before (3) only means the
batch is processed again, giving the same outputs with the same ids.

Faust decides a table write's changelog partition from the event being processed; writes for
partition p therefore run with an event of partition p set as the current event.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import orjson
from faust.serializers import codecs
from faust.streams import _current_event
from faust.types import TP

from streams.domain.state import CustomerState
from streams.processor import CLOCK_KEY, ERASED_KEY

log = logging.getLogger(__name__)

PURCHASE_STREAMS = ("purchases/", "interactions/")


def partition_of(state: CustomerState) -> int | None:
    """The input partition a state belongs to, from the offsets it has applied."""
    for key in state.offsets:
        return int(key.rsplit("/", 1)[1])
    return None


@contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Run table writes as if ``event`` were the one being processed (see module doc)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableStores:
    """One :class:`TableStore` per input partition over a shared Faust table."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._stores: dict[int, TableStore] = {}
        self._loaded = False

    def _load(self) -> None:
        """Read each partition's clock and due index from the local table; no state is built.

        States are decoded when an event or a due time needs them: decoding all of them here
        took ~6 µs and ~2.5 KB each, i.e. a minute and gigabytes at a million customers.
        """
        for key, raw in self.table.items():
            if not isinstance(key, str) or raw is None:
                continue
            if key.startswith("\x00clock/"):
                purchases_ms, interactions_ms = orjson.loads(raw)
                self.store(int(key.split("/", 1)[1]))._clock = (purchases_ms, interactions_ms)
                continue
            if key.startswith("\x00erased/"):
                partition = orjson.loads(raw)["partition"]
                self.store(int(partition)).erased.add(key.split("/", 1)[1])
                continue
            customer_id, partition, next_due_ms = CustomerState.index_entry(raw)
            if partition is not None:
                self.store(partition).loaded_due.append((next_due_ms, customer_id))
        self._loaded = True

    def store(self, partition: int) -> TableStore:
        if partition not in self._stores:
            self._stores[partition] = TableStore(self.table, partition)
        return self._stores[partition]

    def for_partition(self, partition: int) -> TableStore:
        if not self._loaded:
            self._load()
        return self.store(partition)

    def reset(self) -> None:
        """After a rebalance: forget everything; the next use re-reads the recovered table."""
        self._stores.clear()
        self._loaded = False

    def flush(self, partition: int, event: Any) -> list[Any]:
        """Write the partition's changed states; ``event`` must come from that partition."""
        store = self._stores.get(partition)
        if store is None:
            return []
        return store.flush(event)


class TableStore:
    """A :class:`streams.processor.PartitionStore` over one partition of the Faust table."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        # states used by the current batch only: flush() writes the changed ones and
        # empties it, so memory is bounded by the batch, not by the number of customers
        self.cache: dict[str, CustomerState] = {}
        self.loaded_due: list[tuple[int | None, str]] = []
        self.dirty: set[str] = set()
        self._clock: tuple[int | None, int | None] = (None, None)
        self._clock_dirty = False
        # erasures: customers to tombstone at the next flush, and the suppressed hashes
        self.deleted: set[str] = set()
        self.erased: set[str] = set()
        self._erased_new: set[str] = set()

    def get(self, customer_id: str) -> CustomerState | None:
        state = self.cache.get(customer_id)
        if state is None:
            if customer_id in self.deleted:
                return None  # erased in this batch: the table still has it until flush
            raw = self.table.get(customer_id)
            if raw is not None:
                state = CustomerState.from_bytes(raw)
                self.cache[customer_id] = state
        return state

    def put(self, state: CustomerState) -> None:
        self.cache[state.customer_id] = state
        self.dirty.add(state.customer_id)
        self.deleted.discard(state.customer_id)

    def states(self) -> Iterable[CustomerState]:
        """Every state of this partition, decoded one at a time (a model change reads all)."""
        for key, raw in list(self.table.items()):
            if not isinstance(key, str) or raw is None or key.startswith("\x00"):
                continue
            cached = self.cache.get(key)
            if cached is not None:
                yield cached
                continue
            _customer_id, partition, _due = CustomerState.index_entry(raw)
            if partition == self.partition:
                yield CustomerState.from_bytes(raw)

    def due_entries(self) -> Iterable[tuple[int | None, str]]:
        """The due index read at load time (handed over once, then forgotten)."""
        entries, self.loaded_due = self.loaded_due, []
        return entries

    def clock(self) -> tuple[int | None, int | None]:
        return self._clock

    def put_clock(self, purchases_ms: int | None, interactions_ms: int | None) -> None:
        self._clock = (purchases_ms, interactions_ms)
        self._clock_dirty = True

    def discard(self, customer_id: str) -> None:
        self.cache.pop(customer_id, None)
        self.dirty.discard(customer_id)

    def erase(self, customer_id: str) -> None:
        """Drop the customer from the cache; the next flush writes its tombstone."""
        self.discard(customer_id)
        self.deleted.add(customer_id)

    def erased_hashes(self) -> Iterable[str]:
        return self.erased

    def put_erased(self, hashed: str) -> None:
        self.erased.add(hashed)
        self._erased_new.add(hashed)

    def flush(self, event: Any) -> list[ChangelogWrite]:
        """Write changed states, then the clock (a clock never runs ahead of its states).

        Returns the changelog writes, sent by :func:`changelog_written`: the batch is
        acknowledged only once the broker has all of them. A plain ``table[key] = value`` would
        queue the send in Faust's producer buffer and hand back nothing to wait for.
        """
        writes: list[ChangelogWrite] = []
        with as_current_event(event):
            for customer_id in self.dirty:
                writes.append(self._write(customer_id, self.cache[customer_id].to_bytes()))
            for customer_id in self.deleted:
                writes.append(self._delete(customer_id))
            for hashed in self._erased_new:
                row = orjson.dumps({"partition": self.partition})
                writes.append(self._write(ERASED_KEY.format(hashed=hashed), row))
            if self._clock_dirty:
                key = CLOCK_KEY.format(partition=self.partition)
                writes.append(self._write(key, orjson.dumps(list(self._clock))))
        self.dirty.clear()
        self.cache.clear()
        self.deleted.clear()
        self._erased_new.clear()
        self._clock_dirty = False
        return writes

    def _write(self, key: str, raw: bytes) -> ChangelogWrite:
        self.table.data[key] = raw
        return ChangelogWrite(self.table, self.partition, key, raw)

    def _delete(self, key: str) -> ChangelogWrite:
        """A tombstone: compaction removes every earlier record of the key from the changelog."""
        with suppress(KeyError):
            del self.table.data[key]
        return ChangelogWrite(self.table, self.partition, key, None)


def changelog_key(key: str) -> bytes:
    """The changelog key bytes Faust's table writes for ``key`` (its JSON codec).

    orjson gives the same bytes for printable ASCII; anything else goes through Faust's codec,
    so a customer's key is always the same bytes (compaction keeps one record per key).
    """
    if key.isascii() and key.isprintable():
        return orjson.dumps(key)
    return bytes(codecs.dumps("json", key))


@dataclass
class ChangelogWrite:
    """One table write on its way to the changelog partition of its input partition.

    Sent with the producer directly (:func:`changelog_written`): Faust's ``send_changelog``
    goes through its producer buffer, one background send and one future per record.
    """

    table: Any
    partition: int
    key: str
    value: bytes | None
    future: Any = None


async def changelog_written(writes: Sequence[ChangelogWrite], producer: Any = None) -> None:
    """Send a batch's changelog records and wait until the broker has every one of them.

    The batch's events are acknowledged after this, so an offset is never committed before
    the states it produced are on the broker. A write the producer gave up on (the broker was
    gone longer than the producer's request timeout) is sent again, same key, same value —
    before any later batch could write that key. Then, as Faust's own changelog callback
    does, each store learns the last changelog offset it holds (RocksDB keeps it for recovery).
    """
    if not writes:
        return
    table = writes[0].table
    producer = producer if producer is not None else table.app.producer
    topic = table.changelog_topic_name
    pending = list(writes)
    delay = 0.2
    while True:
        failed: list[ChangelogWrite] = []
        first: BaseException | None = None
        try:
            for w in pending:
                w.future = await producer.send(
                    topic, changelog_key(w.key), w.value, w.partition, None, None
                )
        except Exception as exc:  # not handed to the producer: every one not sent yet fails
            first = exc
            failed = [w for w in pending if w.future is None]
        sent = [w for w in pending if w.future is not None]
        results = await asyncio.gather(*(w.future for w in sent), return_exceptions=True)
        last: dict[int, int] = {}
        for w, r in zip(sent, results, strict=True):
            if isinstance(r, BaseException):
                failed.append(w)
                first = first or r
            else:
                last[w.partition] = max(last.get(w.partition, -1), r.offset)
        for partition, offset in last.items():
            table.data.set_persisted_offset(TP(topic, partition), offset)
        if not failed:
            return
        log.warning(
            "%d changelog writes failed (%s: %s); sending them again in %.1f s",
            len(failed),
            type(first).__name__,
            first,
            delay,
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
        for w in failed:
            w.future = None
        pending = failed
