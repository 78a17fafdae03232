"""Kafka records in, Kafka records out: decode, apply to the core, encode. No Faust here.

The Faust agents, the replay reference used by the tests, and the plain-consumer benchmark all
call :class:`Processor`, so the three can only differ in transport. Per input partition it
keeps one :class:`PartitionEngine` over a :class:`PartitionStore` (the Faust table in the
worker, a dict elsewhere).

Every failure path ends in a record, never in an exception out of :meth:`Processor.process`:

* bytes that do not decode or validate → a dead letter with the decoder's reason;
* a purchase in another currency than the reporting one → a dead letter saying so;
* a purchase or refund older than closed event time minus the late horizon → a dead letter
  ``beyond_late_horizon`` (a later one is folded in as a correction by the core); an
  interaction older than closed event time → a dead letter ``late_event``;
* an exception inside the core (a bug) → a dead letter ``processing_error`` with the model
  version, an error log with the traceback, and the customer's cached state discarded so it is
  read back as last written (the core mutates states in place for speed);
* a redelivered or repeated event → counted, nothing published;
* an event of an erased customer → a dead letter ``erased`` without its payload (see
  :mod:`streams.erasure`; an erasure request is a control record like a tick).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from schemas import (
    DEFAULT_LIMITS,
    DeadLetter,
    DeadLetterReason,
    Limits,
    SourceRef,
    dead_letter,
    decode_interaction,
    decode_purchase,
    to_json_bytes,
)
from streams.config import Settings
from streams.convert import (
    churn_alert_json,
    fast_interaction,
    fast_purchase,
    interaction_fact,
    offer_outcome_json,
    purchase_fact,
    segment_change_json,
)
from streams.domain.engine import PartitionEngine
from streams.domain.erasure import ErasureLedger
from streams.domain.events import (
    ChurnRiskRaised,
    DomainEvent,
    DuplicateEvent,
    LateEvent,
    OfferOutcome,
    SegmentChanged,
)
from streams.domain.facts import InteractionFact, PurchaseFact, SourcePosition
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.domain.state import CustomerState
from streams.erasure import (
    ERASE_HEADER,
    BadEraseRequestError,
    customer_erased_json,
    input_partition,
    parse_erase_request,
)

log = logging.getLogger(__name__)

TICK_HEADER = "rfm-tick"
PURCHASES, INTERACTIONS = "purchases", "interactions"


@dataclass(frozen=True, slots=True)
class InRecord:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce. ``partition`` None lets the producer partition by key.

    A ``tombstone`` is produced with no value (``value`` is then empty): a compacted topic
    forgets the key (an erasure's record on ``profiles``).
    """

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None
    tombstone: bool = False


@dataclass
class Counters:
    """What went through, for logs, metrics and the demo's summary."""

    consumed: int = 0
    purchases: int = 0
    interactions: int = 0
    ticks: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    corrections: int = 0  # late purchases and refunds folded in (cause late_purchase)
    segment_changes: int = 0
    churn_alerts: int = 0
    erasures: int = 0
    offer_outcomes: int = 0

    def dead(self, code: str) -> None:
        self.dead_letters[code] = self.dead_letters.get(code, 0) + 1


CLOCK_KEY: Final = "\x00clock/{partition}"
"""The table key of a partition's clock row, beside the customers' rows (the worker's table
store writes it, the import writes it too). The NUL byte keeps it apart from any customer id."""

ERASED_KEY: Final = "\x00erased/{hashed}"
"""The table key of an erased customer's suppression row: the salted hash, never the id. Its
value is ``{"partition": p}``, so a restart knows which partition's ledger it belongs to."""


class PartitionStore(Protocol):
    """Customer states and the partition clock for one input partition."""

    def get(self, customer_id: str) -> CustomerState | None: ...

    def put(self, state: CustomerState) -> None: ...

    def states(self) -> Iterable[CustomerState]: ...

    def due_entries(self) -> Iterable[tuple[int | None, str]]:
        """(next due time, customer id) of every stored state, to rebuild the due index."""
        ...

    def due_of(self, customer_id: str) -> int | None:
        """The current next due time of a customer (None: none, or no state), cheaply: the
        due index's compaction asks it of every entry."""
        ...

    def clock(self) -> tuple[int | None, int | None]: ...

    def put_clock(self, purchases_ms: int | None, interactions_ms: int | None) -> None: ...

    def discard(self, customer_id: str) -> None:
        """Forget any cached, possibly half-updated copy of this customer's state."""

    def erase(self, customer_id: str) -> None:
        """Delete the customer's state (the table writes a tombstone)."""

    def erased_hashes(self) -> Iterable[str]:
        """The salted hashes of the customers erased on this partition."""
        ...

    def put_erased(self, hashed: str) -> None:
        """Remember an erased customer by hash (the table writes a suppression row)."""


class MemoryPartitionStore:
    """A dict-backed :class:`PartitionStore` (replay references, benchmarks, tests)."""

    def __init__(self) -> None:
        self.by_customer: dict[str, CustomerState] = {}
        self._clock: tuple[int | None, int | None] = (None, None)
        self.erased: set[str] = set()

    def get(self, customer_id: str) -> CustomerState | None:
        return self.by_customer.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.by_customer[state.customer_id] = state

    def states(self) -> Iterable[CustomerState]:
        return self.by_customer.values()

    def due_entries(self) -> Iterable[tuple[int | None, str]]:
        return ((s.next_due_ms, s.customer_id) for s in self.by_customer.values())

    def due_of(self, customer_id: str) -> int | None:
        state = self.by_customer.get(customer_id)
        return None if state is None else state.next_due_ms

    def clock(self) -> tuple[int | None, int | None]:
        return self._clock

    def put_clock(self, purchases_ms: int | None, interactions_ms: int | None) -> None:
        self._clock = (purchases_ms, interactions_ms)

    def discard(self, customer_id: str) -> None:
        """Nothing to re-read: here the dict is the only copy."""

    def erase(self, customer_id: str) -> None:
        self.by_customer.pop(customer_id, None)

    def erased_hashes(self) -> Iterable[str]:
        return self.erased

    def put_erased(self, hashed: str) -> None:
        self.erased.add(hashed)


def _source(record: InRecord) -> SourceRef:
    """Where a record came from, for its dead letter (built only when one is written)."""
    return SourceRef(record.topic, record.partition, record.offset, record.key)


def tick_record(topic: str, partition: int, at_ms: int) -> OutRecord:
    """A control record that moves one purchase partition's clock (live clock, end of replay)."""
    return OutRecord(topic, b"__tick__", orjson.dumps({"at_ms": at_ms}), partition)


DUE_COMPACT_STEP = 20_000
"""Due entries checked per partition between two batches while a compaction is under way
(~2 µs each: ~40 ms; see ``PartitionEngine.compact_due``)."""


class Processor:
    """Turns input records into output records, one engine per input partition."""

    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        model: Model,
        store_for: Callable[[int], PartitionStore],
        *,
        limits: Limits = DEFAULT_LIMITS,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.model = model
        self.topics = settings.topics
        self._store_for = store_for
        self._limits = limits
        self._wall_clock = wall_clock
        self._engines: dict[int, PartitionEngine] = {}
        self._stores: dict[int, PartitionStore] = {}
        self._ledgers: dict[int, ErasureLedger] = {}
        self._salt = settings.erasure_salt.get_secret_value()
        # each partition's clock as last read from or written to its store
        self._clocks: dict[int, tuple[int | None, int | None]] = {}
        self._history: dict[str, list[tuple[str, str]]] = {}
        self.counters = Counters()

    # ------------------------------------------------------------------ partitions
    def engine(self, partition: int) -> PartitionEngine:
        engine = self._engines.get(partition)
        if engine is None:
            store = self._store_for(partition)
            purchases_ms, interactions_ms = store.clock()
            engine = PartitionEngine(
                self.rules,
                self.model,
                store,
                clock_ms=purchases_ms,
                touch_clock_ms=interactions_ms,
            )
            if engine.model.version != self.model.version:
                engine.set_model(self.model, store.states())
            else:
                engine.rebuild(store.due_entries())
            self._engines[partition] = engine
            self._stores[partition] = store
            self._ledgers[partition] = ErasureLedger(self._salt, store.erased_hashes())
            self._clocks[partition] = (purchases_ms, interactions_ms)
        return engine

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop engines of revoked partitions; they are rebuilt from the table if re-assigned."""
        for p in partitions:
            self._engines.pop(p, None)
            self._stores.pop(p, None)
            self._ledgers.pop(p, None)
            self._clocks.pop(p, None)

    def read_time(self, customer_id: str) -> tuple[int, Model, Rules] | None:
        """(now, model, rules) for figures computed when a profile is read: now is the latest
        event time a due evaluation of this customer could have run at — the closed event
        time of their partition, or of the newest partition this processor holds when it does
        not hold theirs; None before any clock."""
        engine = self._engines.get(input_partition(customer_id, self.settings.partitions))
        closed = engine.closed_ms if engine is not None else None
        if closed is None:
            known = [e.closed_ms for e in self._engines.values() if e.closed_ms is not None]
            closed = max(known) if known else None
        if closed is None:
            return None
        edge = closed - 1 if self.rules.allowed_lateness_ms else closed
        return edge, self.model, self.rules

    def set_model(self, model: Model) -> None:
        """Adopt a newly published model on every partition this processor holds."""
        if model.version == self.model.version:
            return
        log.info("adopting model %s (was %s)", model.version, self.model.version)
        self.model = model
        for p, engine in self._engines.items():
            engine.set_model(model, self._stores[p].states())

    # ------------------------------------------------------------------ records
    def process(self, record: InRecord) -> list[OutRecord]:
        """Never raises for bad input: every failure becomes a dead letter (see module doc)."""
        self.counters.consumed += 1
        raw = record.value if record.value is not None else b""
        if record.topic == self.topics.purchases:
            if record.headers:
                for k, _ in record.headers:
                    if k == TICK_HEADER:
                        return self._tick(record, raw)
                    if k == ERASE_HEADER:
                        return self._erase(record, raw)
            now = self._wall_clock()
            fast_p = fast_purchase(raw, now, self._limits)
            if fast_p is not None and fast_p[1] == self.settings.currency:
                self.counters.purchases += 1
                return self._apply(record, raw, now, fast_p[0])
            source = _source(record)
            decoded_p = decode_purchase(raw, source, now=now, limits=self._limits)
            if isinstance(decoded_p, DeadLetter):
                return [self._dead(decoded_p)]
            if decoded_p.currency != self.settings.currency:
                return [
                    self._dead(
                        dead_letter(
                            source,
                            raw,
                            DeadLetterReason.INVALID_EVENT,
                            f"currency {decoded_p.currency} is not the reporting currency "
                            f"{self.settings.currency}: convert amounts upstream, or run with "
                            f"RFM_CURRENCY={decoded_p.currency}",
                            event=decoded_p,
                        )
                    )
                ]
            self.counters.purchases += 1
            return self._apply(record, raw, now, purchase_fact(decoded_p))
        if record.topic == self.topics.interactions:
            now = self._wall_clock()
            fast_i = fast_interaction(raw, now, self._limits)
            if fast_i is not None:
                self.counters.interactions += 1
                return self._apply(record, raw, now, fast_i)
            source = _source(record)
            decoded_i = decode_interaction(raw, source, now=now, limits=self._limits)
            if isinstance(decoded_i, DeadLetter):
                return [self._dead(decoded_i)]
            self.counters.interactions += 1
            return self._apply(record, raw, now, interaction_fact(decoded_i))
        log.warning("record from unexpected topic %s ignored", record.topic)
        return []

    def _tick(self, record: InRecord, raw: bytes) -> list[OutRecord]:
        try:
            at_ms = int(orjson.loads(raw)["at_ms"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            source = SourceRef(record.topic, record.partition, record.offset, record.key)
            return [
                self._dead(
                    dead_letter(
                        source,
                        raw,
                        DeadLetterReason.INVALID_EVENT,
                        f'a record with the {TICK_HEADER} header must be {{"at_ms": <epoch ms>}}',
                    )
                )
            ]
        self.counters.ticks += 1
        engine = self.engine(record.partition)
        out = self._publish(engine.tick(at_ms), record, raw)
        self._save_clock(record.partition, engine)
        return out

    def _apply(
        self, record: InRecord, raw: bytes, now: datetime, fact: PurchaseFact | InteractionFact
    ) -> list[OutRecord]:
        engine = self.engine(record.partition)
        ledger = self._ledgers[record.partition]
        if (
            ledger.hashes
            and self._stores[record.partition].get(fact.customer_id) is None
            and ledger.is_erased(fact.customer_id)
        ):
            if isinstance(fact, InteractionFact) and (
                engine.touch_clock_ms is None or fact.at_ms > engine.touch_clock_ms
            ):
                # an interaction moves its clock as if applied: whether it came before or
                # after the erasure request is arrival order across two topics
                engine.touch_clock_ms = fact.at_ms
                self._save_clock(record.partition, engine)
            return [self._erased_letter(record)]
        try:
            if isinstance(fact, PurchaseFact):
                position = SourcePosition(PURCHASES, record.partition, record.offset)
                corrected = engine.corrections
                events = engine.on_purchase(fact, position)
                self.counters.corrections += engine.corrections - corrected
            else:
                position = SourcePosition(INTERACTIONS, record.partition, record.offset)
                events = engine.on_interaction(fact, position)
            out = self._publish(events, record, raw)
        except Exception as exc:  # the core failed: dead-letter the event, keep the stream
            source = _source(record)
            log.exception("processing failed for %s", source)
            engine.changed.discard(fact.customer_id)
            engine.verdicts.pop(fact.customer_id, None)
            self._stores[record.partition].discard(fact.customer_id)
            decode = decode_purchase if isinstance(fact, PurchaseFact) else decode_interaction
            event = decode(raw, source, now=now, limits=self._limits)  # valid: it was applied
            return [
                self._dead(
                    dead_letter(
                        source,
                        raw,
                        DeadLetterReason.PROCESSING_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        event=None if isinstance(event, DeadLetter) else event,
                        model_version=self.model.version,
                    )
                )
            ]
        self._save_clock(record.partition, engine)
        return out

    def _erase(self, record: InRecord, raw: bytes) -> list[OutRecord]:
        """Erase a customer, in order with their events (see :mod:`streams.erasure`).

        The state goes (a tombstone in the table's changelog), the customer leaves the due
        index and the pending views; a tombstone on ``profiles`` tells the views agent to delete
        the Redis keys (and lets compaction drop the last profile); ``customer-erased`` tells
        downstream tools, once per customer; the salted hash stays, so later or replayed
        events are dead-lettered ``erased``.
        """
        try:
            customer_id, requested_ms = parse_erase_request(raw)
        except BadEraseRequestError as exc:
            source = SourceRef(record.topic, record.partition, record.offset, record.key)
            reason = f"a record with the {ERASE_HEADER} header is not an erasure request: {exc}"
            return [self._dead(dead_letter(source, raw, DeadLetterReason.INVALID_EVENT, reason))]
        engine = self.engine(record.partition)
        store = self._stores[record.partition]
        had_state = store.get(customer_id) is not None
        store.erase(customer_id)
        engine.drop(customer_id)
        self._history.pop(customer_id, None)
        self.counters.erasures += 1
        out = [OutRecord(self.topics.profiles, customer_id.encode(), b"", tombstone=True)]
        erased = self._ledgers[record.partition].erase(
            customer_id, at_ms=engine.clock_ms, requested_ms=requested_ms, had_state=had_state
        )
        if erased is not None:
            store.put_erased(erased.customer_hash)
            value = customer_erased_json(erased)
            out.append(OutRecord(self.topics.customer_erased, customer_id.encode(), value))
        return out

    def _erased_letter(self, record: InRecord) -> OutRecord:
        """The dead letter of an erased customer's event: neither payload nor key is kept."""
        source = SourceRef(record.topic, record.partition, record.offset, None)
        return self._dead(
            dead_letter(
                source,
                b"",
                DeadLetterReason.ERASED,
                "the customer of this event was erased; it was not applied, and neither its "
                "payload nor its key is kept here (the source topic still holds it at this "
                "offset until retention removes it)",
            )
        )

    def drain_profiles(self) -> list[OutRecord]:
        """The current profile of every customer changed since the last call (for the views).

        Called once per batch: ``profiles`` is a compacted latest-value view, so one record
        per changed customer per batch is all it needs. Each carries the customer's outputs
        since the last call, for the views' history lists.
        """
        topic = self.topics.profiles
        dumps = orjson.dumps
        return [
            OutRecord(topic, customer_id.encode(), dumps(update))
            for customer_id, update in self.drain_profile_updates()
        ]

    def drain_profile_updates(self) -> list[tuple[str, dict[str, Any]]]:
        """:meth:`drain_profiles` before serialization: (customer id, update) with the
        ``Profile`` itself, for the import, which keeps them in memory (no JSON round trip)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for partition, engine in self._engines.items():
            out += self.profile_updates_of(partition, sorted(engine.changed))
            engine.changed.clear()
            engine.verdicts.clear()
            if engine.due_bloated():  # between batches, a step at a time: no pause
                dropped = engine.compact_due(self._stores[partition].due_of, DUE_COMPACT_STEP)
                if dropped is not None:
                    log.debug("partition %d: due index compacted, %d dropped", partition, dropped)
        self._history.clear()
        return out

    def profile_updates_of(
        self, partition: int, customer_ids: Iterable[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The current profile updates of these customers of a partition, with their history
        since the last drain (taken); customers with no evaluated state are left out.

        The import asks for its final profiles a batch at a time with it; unlike a drain it
        leaves the other customers' cached verdicts and history alone.
        """
        engine = self._engines[partition]
        out: list[tuple[str, dict[str, Any]]] = []
        for customer_id in customer_ids:
            state = engine.store.get(customer_id)
            if state is None or state.evaluated_ms is None:
                continue
            cached = engine.verdicts.get(customer_id)
            verdict = cached[1] if cached and cached[0] == state.evaluated_ms else None
            update = {
                "profile": engine.classifier.assess(state, state.evaluated_ms, verdict),
                "segment_since_ms": state.segment_since_ms,
                "quadrant_since_ms": state.quadrant_since_ms,
                "history": self._history.pop(customer_id, []),
            }
            out.append((customer_id, update))
        return out

    def _save_clock(self, partition: int, engine: PartitionEngine) -> None:
        """Write the partition clock when it moved (the store's copy is only written here)."""
        saved = self._clocks[partition]
        if saved[0] != engine.clock_ms or saved[1] != engine.touch_clock_ms:
            self._clocks[partition] = (engine.clock_ms, engine.touch_clock_ms)
            self._stores[partition].put_clock(engine.clock_ms, engine.touch_clock_ms)

    def _publish(self, events: list[DomainEvent], record: InRecord, raw: bytes) -> list[OutRecord]:
        out: list[OutRecord] = []
        for e in events:
            if isinstance(e, SegmentChanged):
                self.counters.segment_changes += 1
                value = segment_change_json(e, self.rules)
                out.append(OutRecord(self.topics.segment_changes, e.customer_id.encode(), value))
                self._history.setdefault(e.customer_id, []).append((e.id, value.decode()))
            elif isinstance(e, ChurnRiskRaised):
                self.counters.churn_alerts += 1
                value = churn_alert_json(e, self.rules)
                out.append(OutRecord(self.topics.churn_alerts, e.customer_id.encode(), value))
                self._history.setdefault(e.customer_id, []).append((e.id, value.decode()))
            elif isinstance(e, OfferOutcome):
                self.counters.offer_outcomes += 1
                value = offer_outcome_json(e)
                out.append(OutRecord(self.topics.offer_outcomes, e.customer_id.encode(), value))
            elif isinstance(e, LateEvent):
                out.append(self._dead(self._late_letter(e, record, raw)))
            elif isinstance(e, DuplicateEvent):
                self.counters.duplicates += 1
        return out

    def _late_letter(self, e: LateEvent, record: InRecord, raw: bytes) -> DeadLetter:
        source = SourceRef(record.topic, record.partition, record.offset, record.key)
        late_by = (e.closed_ms - e.fact.at_ms) / 1000
        behind = (
            f"event time is {late_by:.3f} s before this partition's closed event time "
            f"(watermark minus the allowed lateness of "
            f"{self.rules.allowed_lateness_seconds:g} s)"
        )
        if e.horizon_ms is None:
            return dead_letter(
                source,
                raw,
                DeadLetterReason.LATE_EVENT,
                f"{behind}; it was not applied. Replay it in order, or raise "
                f"allowed_lateness_seconds (RFM_ALLOWED_LATENESS_SECONDS).",
            )
        return dead_letter(
            source,
            raw,
            DeadLetterReason.BEYOND_LATE_HORIZON,
            f"{behind}, beyond the late horizon of {self.rules.late_horizon_days:g} days "
            f"(or before the purchase days this customer's state still holds); it was not "
            f"applied. History this old is loaded before going live, with the workers "
            f"stopped: `rfm-stream import LOG`; or raise the horizon (RFM_LATE_HORIZON_DAYS) "
            f"before it arrives.",
        )

    def internal_error(self, message: object, exc: Exception) -> OutRecord:
        """A dead letter for a record the glue itself failed on (a bug: logged with traceback)."""
        topic = str(getattr(message, "topic", "?"))
        source = SourceRef(
            topic,
            int(getattr(message, "partition", -1)),
            int(getattr(message, "offset", -1)),
            getattr(message, "key", None),
        )
        value = getattr(message, "value", None)
        raw = value if isinstance(value, bytes) else b""
        return self._dead(
            dead_letter(
                source,
                raw,
                DeadLetterReason.INTERNAL_ERROR,
                f"{type(exc).__name__}: {exc}; the event was not applied, please report it",
                model_version=self.model.version,
            )
        )

    def _dead(self, letter: DeadLetter) -> OutRecord:
        self.counters.dead(str(letter.reason_code))
        key = (letter.customer_id or f"{letter.source_topic}:{letter.source_partition}").encode()
        return OutRecord(self.topics.dead_letters, key, to_json_bytes(letter))
