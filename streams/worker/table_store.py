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
from typing import Any, cast

import orjson
from faust.serializers import codecs
from faust.streams import _current_event
from faust.types import TP

from streams.domain.state import CustomerState
from streams.processor import CLOCK_KEY, ERASED_KEY
from streams.worker.produce import offset_of, send_batched

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
        took ~6 µs and ~2.5 KB each, i.e. a minute and gigabytes at a million customers. A
        format-4 row's index head is read without parsing the row (``CustomerState.index_head``;
        its customer id is its table key).
        """
        index_head = CustomerState.index_head
        due: dict[int, list[tuple[int | None, str]]] = {}
        for key, raw in local_rows(self.table):
            if raw is None:
                continue
            if key.startswith("\x00"):
                if key.startswith("\x00clock/"):
                    purchases_ms, interactions_ms = orjson.loads(raw)
                    self.store(int(key.split("/", 1)[1]))._clock = (purchases_ms, interactions_ms)
                    continue
                if key.startswith("\x00erased/"):
                    partition = orjson.loads(raw)["partition"]
                    self.store(int(partition)).erased.add(key.split("/", 1)[1])
                    continue
            head = index_head(raw)  # the row's first bytes; older formats are parsed whole
            if head is None:
                key, partition, next_due_ms = CustomerState.index_entry(raw)
            else:
                partition, next_due_ms = head
            if partition is not None and next_due_ms is not None:
                entries = due.get(partition)
                if entries is None:
                    entries = due[partition] = self.store(partition).loaded_due
                entries.append((next_due_ms, key))
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

    def settle(self) -> None:
        """After a batch's changelog writes are acknowledged (and so in the local store)."""
        for store in self._stores.values():
            store.settle()

    def read_directly(self) -> bool:
        """True when state reads need no current event (the worker's own stores)."""
        return hasattr(self.table.data, "read_raw")


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
        self._deleting: set[str] = set()  # tombstones flushed, not yet acknowledged
        # the worker's stores read a row directly (streams.worker.bulk_store): Faust's table
        # lookup went through three wrappers and needed the current event (a tenth of a
        # worker's time); a plain Faust store (tests may build one) is read through the table
        self._read_raw = getattr(table.data, "read_raw", None)

    def get(self, customer_id: str) -> CustomerState | None:
        state = self.cache.get(customer_id)
        if state is None:
            raw = self._stored_row(customer_id)
            if raw is not None:
                state = CustomerState.from_bytes(raw)
                self.cache[customer_id] = state
        return state

    def _stored_row(self, customer_id: str) -> bytes | None:
        """The customer's row in the local table; None when there is none or it is erased
        (the local table has an erased row until its tombstone is acknowledged)."""
        if customer_id in self.deleted or customer_id in self._deleting:
            return None
        read = self._read_raw
        raw: bytes | None = (
            read(self.partition, customer_id) if read else self.table.get(customer_id)
        )
        return raw

    def put(self, state: CustomerState) -> None:
        self.cache[state.customer_id] = state
        self.dirty.add(state.customer_id)
        self.deleted.discard(state.customer_id)

    def states(self) -> Iterable[CustomerState]:
        """Every state of this partition, decoded one at a time (a model change reads all)."""
        for key, raw in local_rows(self.table):
            if raw is None or key.startswith("\x00"):
                continue
            if key in self.deleted or key in self._deleting:
                continue
            cached = self.cache.get(key)
            if cached is not None:
                yield cached
                continue
            head = CustomerState.index_head(raw)
            partition = CustomerState.index_entry(raw)[1] if head is None else head[0]
            if partition == self.partition:
                yield CustomerState.from_bytes(raw)

    def due_entries(self) -> Iterable[tuple[int | None, str]]:
        """The due index read at load time (handed over once, then forgotten)."""
        entries, self.loaded_due = self.loaded_due, []
        return entries

    def due_of(self, customer_id: str) -> int | None:
        """From the batch's cached state, else the row's head (no state object is built)."""
        state = self.cache.get(customer_id)
        if state is not None:
            return state.next_due_ms
        raw = self._stored_row(customer_id)
        if raw is None:
            return None
        head = CustomerState.index_head(raw)
        return CustomerState.index_entry(raw)[2] if head is None else head[1]

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
        """The changed states, then the clock (a clock never runs ahead of its states).

        Returns the changelog writes, sent by :func:`changelog_written`, which writes them to
        the local store only once the broker has them: the batch is acknowledged after that,
        and local state is never ahead of the changelog. A plain ``table[key] = value`` would
        write locally first and queue the send in Faust's producer buffer. Until
        :meth:`settle`, the states stay in the cache, so reads see them.
        """
        writes: list[ChangelogWrite] = []
        for customer_id in self.dirty:
            writes.append(self._write(customer_id, self.cache[customer_id].to_bytes(), event))
        for customer_id in self.deleted:
            # a tombstone: compaction removes every earlier record of the key
            writes.append(self._write(customer_id, None, event))
        for hashed in self._erased_new:
            row = orjson.dumps({"partition": self.partition})
            writes.append(self._write(ERASED_KEY.format(hashed=hashed), row, event))
        if self._clock_dirty:
            key = CLOCK_KEY.format(partition=self.partition)
            writes.append(self._write(key, orjson.dumps(list(self._clock)), event))
        self.dirty.clear()
        # the local store still has the erased rows until the tombstones are acknowledged
        self._deleting |= self.deleted
        self.deleted.clear()
        self._erased_new.clear()
        self._clock_dirty = False
        return writes

    def settle(self) -> None:
        """Forget the cached states that are written (memory is bounded by the batch)."""
        if self.dirty:
            self.cache = {k: v for k, v in self.cache.items() if k in self.dirty}
        else:
            self.cache.clear()
        self._deleting.clear()

    def _write(self, key: str, raw: bytes | None, event: Any) -> ChangelogWrite:
        return ChangelogWrite(self.table, self.partition, key, raw, event=event)


def local_rows(table: Any) -> Iterable[tuple[str, bytes]]:
    """Every (key, raw value) the table's local store holds, read as cheaply as it allows.

    The worker's stores (:mod:`streams.worker.bulk_store`) read their dict or RocksDB files
    directly; Faust's table iterator decodes every key and value through its codecs (27 s
    for a million RocksDB rows).
    """
    rows = getattr(table.data, "local_rows", None)
    if rows is not None:
        return cast(Iterable[tuple[str, bytes]], rows())
    return ((key, raw) for key, raw in list(table.items()) if isinstance(key, str))


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
    event: Any = None


async def changelog_written(writes: Sequence[ChangelogWrite], producer: Any = None) -> None:
    """Send a batch's changelog records and wait until the broker has every one of them.

    The batch's events are acknowledged after this, so an offset is never committed before
    the states it produced are on the broker. A write the producer gave up on (the broker was
    gone longer than the producer's request timeout) is sent again, same key, same value —
    before any later batch could write that key. Only acknowledged records go to the local
    store, with the last changelog offset it then holds (RocksDB keeps it for recovery, in the
    same write batch as the rows).
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
            # whole batches per partition, one future each (see streams.worker.produce)
            placed = await send_batched(
                producer, [(topic, w.partition, changelog_key(w.key), w.value) for w in pending]
            )
            for w, where in zip(pending, placed, strict=True):
                w.future = where
        except Exception as exc:  # not handed to the producer: every one not sent yet fails
            first = exc
            failed = list(pending)  # none of the batches is known to be queued whole
            placed = []
        batches = list({id(future): future for future, _ in placed}.values())
        outcome = dict(
            zip(
                map(id, batches),
                await asyncio.gather(*batches, return_exceptions=True),
                strict=True,
            )
        )
        acked: dict[int, list[tuple[str, bytes | None]]] = {}
        events: dict[int, Any] = {}
        last: dict[int, int] = {}
        for w in pending if placed else ():
            future, index = w.future
            r = outcome[id(future)]
            if isinstance(r, BaseException):
                failed.append(w)
                first = first or r
            else:
                acked.setdefault(w.partition, []).append((w.key, w.value))
                events[w.partition] = w.event
                last[w.partition] = max(last.get(w.partition, -1), offset_of(r, index))
        for partition, rows in acked.items():
            write_local(table, partition, rows, last[partition], events[partition])
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


def write_local(
    table: Any,
    partition: int,
    rows: Sequence[tuple[str, bytes | None]],
    offset: int,
    event: Any,
) -> None:
    """Write acknowledged changelog rows to the local store (see :func:`changelog_written`)."""
    store = table.data
    write = getattr(store, "write_acknowledged", None)
    if write is not None:
        write(partition, rows, offset)
        return
    # a plain Faust store (tests may build one): its writes pick the partition from the event
    with as_current_event(event):
        for key, raw in rows:
            if raw is None:
                with suppress(KeyError):
                    del store[key]
            else:
                store[key] = raw
    store.set_persisted_offset(TP(table.changelog_topic_name, partition), offset)
