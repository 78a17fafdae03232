"""The end-to-end verifier: what the topics hold against the pure core over the same input.

Modelled on the verifier of Kafka Streams' exactly-once system test. It reads the input topics
(or takes a given list of input records), runs :func:`streams.tools.reference.run_reference` over
them — the same :class:`~streams.processor.Processor` the worker runs, without Kafka or Faust —
then reads every output topic to its end and compares, **by output id**:

* **processor outputs** (``segment-changes``, ``churn-alerts``, ``dead-letters``): every
  expected id is there (*missing* otherwise), no other id is (*unexpected*), and every copy of
  an id is byte-identical to the expected record (*conflicting* otherwise: always a failure;
  two texts are masked, see :data:`_CLOCK_TEXT` and :data:`_LATE_TEXT`).
  Extra identical copies — a batch re-published after a crash — are *duplicates dropped*,
  which consumers do by id (docs/architecture.md, "Effectively once");
* **retention offers**: one per segment change or churn alert the offer policy covers (id
  ``offer:<trigger id>``), never two contents for one id. The decision itself depends on the
  customer's offer history in Redis, and the offers agent reads its triggers from two topics
  whose interleaving is not reproducible, so the rule is (see :func:`check_offers`): a decision
  that does not depend on history (``offer``, ``holdout``, ``no_offer``) must be exactly what
  the policy decides with no history; ``cooldown`` / ``capped`` are accepted only for a trigger
  the policy would otherwise offer on, with every other field as expected, and only when the
  offers actually published justify them (an earlier recorded offer within the cooldown, or
  ``cap_count`` of them within the cap window);
* **final state**: the latest state of every customer in the worker's table changelog equals
  the reference's final state (every field, the applied source offsets included), the
  partition clocks too, and the latest record of every customer on the compacted ``profiles``
  topic equals the reference's last profile — except engagement (see :data:`PROFILE_VOLATILE`).

:attr:`Verdict.ok` holds when missing = unexpected = conflicting = 0 (outputs and offers), no
cooldown or cap is unjustified, and the final state matches; :meth:`Verdict.report` then ends
with the line :data:`DELIVERED`, and otherwise says what is missing or different (first few).

With ``wait`` > 0 it keeps reading until the worker group has committed everything it
consumes (no lag) and a last read brings nothing new — or, while the verdict is bad, nothing
new arrived for ``settle`` seconds — or the wait runs out: run it right after a backfill and it
waits for the workers, and sees whatever they publish last.

The reference is exact only for a fixed model (docs/architecture.md, "Time, lateness and
determinism"): a model published while the input was processed makes the verdict meaningless.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from schemas import (
    ChurnAlert,
    DeadLetter,
    OutputEvent,
    RetentionOffer,
    SegmentChange,
    parse_output,
    to_json_bytes,
)
from streams.config import Settings
from streams.convert import retention_offer, trigger_of
from streams.domain.facts import MS_PER_DAY
from streams.domain.model import Model
from streams.domain.offers import OfferDecision, OfferHistory, decide
from streams.domain.rules import OfferRules, Rules
from streams.domain.state import CustomerState
from streams.processor import TICK_HEADER, InRecord, OutRecord
from streams.tools.reference import ReferenceRun, run_reference
from streams.tools.replay import Order, as_consumed, detect_format, plan, read_lines

log = logging.getLogger(__name__)

DELIVERED: Final = "ALL-RECORDS-DELIVERED"
NOT_DELIVERED: Final = "RECORDS-NOT-DELIVERED"

PROFILE_FINAL: Final = (
    "customer_id",
    "model_version",
    "rfm_segment",
    "quadrant",
    "first_purchase_ms",
    "last_purchase_ms",
    "purchase_count",
    "repeat_days",
)
"""Profile fields compared with the reference's final profile. A customer's profile is
republished when purchases are folded or an output is made, not at every silent
re-evaluation (which batch one falls in depends on timing), so time-dependent fields
(scores, P(alive), windows, engagement…) of the last record are as of its last change, not
of the end of the log. These fields only change with a fold or an output."""

_CLOCK_TEXT: Final = re.compile(rb"is [^\"]{1,64}? ahead of the worker clock \([^)\"]{1,64}\)")
"""A dead letter for a timestamp too far ahead names the worker's wall clock at decoding: the
only wall-clock-dependent output text. Compared with the clock and the distance masked."""

_LATE_TEXT: Final = re.compile(rb"event time is [0-9.]{1,32} s before this partition's closed")
"""A ``late_event`` or ``beyond_late_horizon`` dead letter says how far behind its partition's
closed time the event was. Such an event changes no state, so after a crash it is judged again
against the clock the new owner restored, which can be further ahead: same id, same verdict
(clocks only move forward, so what was beyond the horizon stays so), another distance.
Compared with the distance masked (docs/architecture.md, "Effectively once"). A late purchase
*within* the horizon is a correction: it changes its customer's state and applied offset like
any other, so reading it again is a no-op and the reference predicts its outputs exactly."""

RECORDED: Final = frozenset({"offer", "holdout"})  # decisions that count toward caps
HISTORY_DEPENDENT: Final = frozenset({"cooldown", "capped"})
SHOWN: Final = 8  # ids listed per problem in a report


def changelog_topic(settings: Settings) -> str:
    """The Faust changelog of the worker's ``customers`` table."""
    return f"{settings.app_id}-customers-changelog"


def compared_topics(settings: Settings) -> list[str]:
    """The output topics the Processor writes, hence the ones the reference predicts."""
    t = settings.topics
    return [t.dead_letters, t.segment_changes, t.churn_alerts, t.customer_erased, t.offer_outcomes]


def consumed_topics(settings: Settings) -> list[str]:
    """The topics the worker group consumes (and commits offsets for)."""
    t = settings.topics
    return [*t.inputs(), t.segment_changes, t.churn_alerts, t.profiles, t.offer_outcomes]


# --------------------------------------------------------------------------- records


def output_id(value: bytes) -> str | None:
    """The ``id`` of an output record, without validating the rest (None: not an output)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


@dataclass(frozen=True)
class Out:
    """One output record: where it was (for records read back), its bytes and its id."""

    topic: str
    key: bytes | None
    value: bytes
    id: str
    partition: int | None = None
    offset: int | None = None

    @property
    def content(self) -> tuple[str, bytes | None, bytes]:
        """What must be identical across copies and with the reference (see _CLOCK_TEXT)."""
        value = self.value
        if b"ahead of the worker clock" in value:
            value = _CLOCK_TEXT.sub(b"is ... ahead of the worker clock (...)", value)
        if b"before this partition's closed" in value:
            value = _LATE_TEXT.sub(b"event time is ... s before this partition's closed", value)
        return (self.topic, self.key, value)

    @property
    def event(self) -> OutputEvent:
        return parse_output(self.value)

    @classmethod
    def of(
        cls,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Out:
        """A record; one that is not an output event gets an id naming where it was."""
        raw = value or b""
        found = output_id(raw)
        return cls(topic, key, raw, found or f"?{topic}:{partition}:{offset}", partition, offset)


def outs_of(records: Iterable[OutRecord], topics: Iterable[str]) -> list[Out]:
    """The reference's records of ``topics`` as :class:`Out`."""
    wanted = set(topics)
    return [Out.of(r.topic, r.key, r.value) for r in records if r.topic in wanted]


def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )


class TopicReader:
    """Reads topics from their beginning, incrementally; ``on_record`` sees every record."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        on_record: Callable[[Any], None],
        *,
        missing_ok: bool | Sequence[str] = False,
    ) -> None:
        """``missing_ok``: True, or the topics that may not exist (read as empty)."""
        self._on_record = on_record
        self._consumer = _consumer(settings)
        tps: list[TopicPartition] = []
        for topic in topics:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                if missing_ok is True or (not isinstance(missing_ok, bool) and topic in missing_ok):
                    continue
                self._consumer.close()
                raise LookupError(f"topic {topic} does not exist")
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        self._tps = tps
        if tps:
            self._consumer.assign(tps)
            self._consumer.seek_to_beginning(*tps)

    def poll(self, timeout_ms: int = 200) -> int:
        """Read what is there now; returns the number of records read."""
        if not self._tps:
            time.sleep(timeout_ms / 1000)
            return 0
        n = 0
        for batch in self._consumer.poll(timeout_ms=timeout_ms).values():
            for r in batch:
                self._on_record(r)
                n += 1
        return n

    def end_offsets(self) -> dict[TopicPartition, int]:
        return dict(self._consumer.end_offsets(self._tps)) if self._tps else {}

    def read_to_end(self, timeout: float = 60.0) -> int:
        """Everything up to the end offsets as of now; returns the number of records read."""
        end = self.end_offsets()
        deadline = time.monotonic() + timeout
        n = 0
        while any(self._consumer.position(tp) < end[tp] for tp in self._tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading to the end offsets took more than {timeout:.0f} s")
            n += self.poll()
        return n

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OutputReader(TopicReader):
    """Output records (:class:`Out`) of ``topics``, from the beginning."""

    def __init__(
        self, settings: Settings, topics: Sequence[str], *, missing_ok: Sequence[str] = ()
    ) -> None:
        self.records: list[Out] = []
        super().__init__(settings, topics, self._add, missing_ok=missing_ok)

    def _add(self, r: Any) -> None:
        self.records.append(Out.of(r.topic, r.key, r.value, r.partition, r.offset))

    def __enter__(self) -> OutputReader:
        return self


class LatestReader(TopicReader):
    """The latest value per key of a compacted topic (None: deleted)."""

    def __init__(self, settings: Settings, topic: str, decode_key: Callable[[bytes], str]) -> None:
        self.latest: dict[str, bytes | None] = {}
        self._decode_key = decode_key
        super().__init__(settings, [topic], self._add, missing_ok=True)

    def _add(self, r: Any) -> None:
        if r.key is not None:
            self.latest[self._decode_key(r.key)] = r.value


def read_inputs(settings: Settings, timeout: float = 120.0) -> list[InRecord]:
    """Every record of the input topics as they are now (any producer), in partition order."""
    records: list[InRecord] = []

    def add(r: Any) -> None:
        headers = tuple((k, bytes(v or b"")) for k, v in (r.headers or ()))
        records.append(InRecord(r.topic, r.partition, r.offset, r.key, r.value, headers))

    with TopicReader(settings, settings.topics.inputs(), add) as reader:
        reader.read_to_end(timeout)
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    return records


def _reason_code(value: bytes) -> str:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "?"
    return str(data.get("reason_code", "?")) if isinstance(data, dict) else "?"


def _changelog_key(raw: bytes) -> str:
    key = orjson.loads(raw)
    return key if isinstance(key, str) else str(key)


def states_of(latest: Mapping[str, bytes | None]) -> dict[str, CustomerState]:
    """Customer states among the latest changelog values (clock rows and deletions left out)."""
    return {
        k: CustomerState.from_bytes(v)
        for k, v in latest.items()
        if v is not None and not k.startswith("\x00")
    }


def read_table_states(settings: Settings, timeout: float = 60.0) -> dict[str, CustomerState]:
    """The latest customer state of every key in the worker's table changelog."""
    reader = LatestReader(settings, changelog_topic(settings), _changelog_key)
    with reader:
        if not reader.end_offsets():
            raise LookupError(f"no changelog topic {changelog_topic(settings)}")
        reader.read_to_end(timeout)
    return states_of(reader.latest)


def group_lag(settings: Settings) -> dict[tuple[str, int], int]:
    """Records the worker group has not committed yet, per partition it consumes."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-verify",
        **settings.kafka_client_options(),
    )
    consumer = _consumer(settings)
    try:
        committed = admin.list_group_offsets(settings.app_id).get(settings.app_id, {})
        tps = [
            TopicPartition(topic, p)
            for topic in consumed_topics(settings)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        end = consumer.end_offsets(tps)
    finally:
        consumer.close()
        admin.close()
    lag: dict[tuple[str, int], int] = {}
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[(tp.topic, tp.partition)] = max(0, int(end[tp]) - int(done))
    return lag


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Actual outputs against expected ones, by id."""

    expected: int
    actual: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    different: dict[str, tuple[bytes, list[bytes]]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    # unexpected dead letters: reason code -> (how many, the first one's reason)
    unexpected_reasons: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)

    @property
    def extra_copies(self) -> int:
        """Records beyond the first of each id: what deduplication by id drops."""
        return sum(self.duplicates.values()) - len(self.duplicates)

    def report(self, limit: int = SHOWN) -> str:
        lines = [
            f"expected {self.expected} outputs, read {self.actual} records "
            f"({len(self.duplicates)} ids seen more than once, {self.extra_copies} extra copies)"
        ]
        if self.missing:
            lines.append(f"MISSING {len(self.missing)}: {sorted(self.missing)[:limit]}")
        if self.unexpected:
            lines.append(f"UNEXPECTED {len(self.unexpected)}: {sorted(self.unexpected)[:limit]}")
            for code, (n, reason) in sorted(self.unexpected_reasons.items()):
                lines.append(f"  {n} unexpected dead letters {code}, e.g. {reason[:300]!r}")
        if self.different:
            lines.append(f"SAME ID, DIFFERENT CONTENT {len(self.different)}:")
            for out_id in sorted(self.different)[:limit]:
                want, got = self.different[out_id]
                lines.append(f"  {out_id}\n    expected {want[:400]!r}")
                for g in got:
                    if g != want:
                        lines.append(f"    actual   {g[:400]!r}")
        return "\n".join(lines)


def _render(content: tuple[str, bytes | None, bytes]) -> bytes:
    topic, key, value = content
    return f"{topic} key={key!r} ".encode() + value


def erasure_order_dependent(
    settings: Settings, records: Iterable[InRecord], outputs: Iterable[OutRecord]
) -> set[str]:
    """Dead-letter ids of the interactions of customers the reference erased, left out of the
    comparison: whether such an interaction was read before or after the erasure request (on
    the purchases topic) is arrival order across two topics, which no reference reproduces.
    Their effect on the final state and the clocks is the same either way, and still checked.
    """
    t = settings.topics
    erased = {o.key for o in outputs if o.topic == t.customer_erased}
    if not erased:
        return set()
    return {
        f"dl:{r.topic}:{r.partition}:{r.offset}"
        for r in records
        if r.topic == t.interactions and r.key in erased
    }


def compare(expected: Sequence[Out], actual: Sequence[Out]) -> Comparison:
    """By id: missing, unexpected, repeated (identical copies) and conflicting ids."""
    by_id: dict[str, Out] = {}
    for o in expected:
        if o.id in by_id:
            raise ValueError(f"the reference itself repeats output id {o.id}")
        by_id[o.id] = o
    counts = Counter(o.id for o in actual)
    variants: dict[str, set[tuple[str, bytes | None, bytes]]] = {}
    for o in actual:
        variants.setdefault(o.id, set()).add(o.content)
    result = Comparison(expected=len(expected), actual=len(actual))
    result.missing = [i for i in by_id if i not in counts]
    result.unexpected = [i for i in counts if i not in by_id]
    result.duplicates = {i: n for i, n in counts.items() if n > 1}
    unexpected = set(result.unexpected)
    for o in actual:
        if o.id in unexpected:
            unexpected.discard(o.id)
            try:
                event = o.event
            except ValueError:
                continue
            if isinstance(event, DeadLetter):
                n, reason = result.unexpected_reasons.get(event.reason_code, (0, event.reason))
                result.unexpected_reasons[event.reason_code] = (n + 1, reason)
    for out_id, seen in variants.items():
        want = by_id.get(out_id)
        if want is not None and seen != {want.content}:
            result.different[out_id] = (
                _render(want.content),
                sorted(_render(s) for s in seen),
            )
        elif want is None and len(seen) > 1:
            result.different[out_id] = (b"(not expected at all)", sorted(_render(s) for s in seen))
    return result


# --------------------------------------------------------------------------- offers


@dataclass(frozen=True)
class ExpectedOffer:
    """A trigger the offer policy covers, and the decision it gets with no offer history."""

    id: str
    customer_id: str
    at_ms: int
    trigger: SegmentChange | ChurnAlert
    base: OfferDecision


def expected_offers(outputs: Iterable[Out], rules: OfferRules) -> list[ExpectedOffer]:
    """One per expected segment change or churn alert the policy has a rule for."""
    out = []
    for o in outputs:
        event = o.event
        if not isinstance(event, SegmentChange | ChurnAlert):
            continue
        trigger = trigger_of(event)
        if trigger is None:
            continue
        base = decide(trigger, OfferHistory(), rules)
        if base is not None:
            out.append(ExpectedOffer(base.id, base.customer_id, base.at_ms, event, base))
    return out


def offer_bytes(decision: OfferDecision, trigger: SegmentChange | ChurnAlert) -> bytes:
    """The retention-offers record value the offers agent publishes for a decision."""
    return to_json_bytes(retention_offer(decision, trigger))


@dataclass
class OfferCheck:
    """Retention offers read back against the triggers of the reference."""

    expected: int = 0
    read: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    conflicting: dict[str, str] = field(default_factory=dict)  # id -> what is wrong
    unjustified: dict[str, str] = field(default_factory=dict)  # id -> why
    duplicates: int = 0
    decisions: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.conflicting or self.unjustified)


def check_offers(
    expected: Sequence[ExpectedOffer], actual: Sequence[Out], rules: OfferRules
) -> OfferCheck:
    """Offers by id; the decision rule is in the module doc."""
    result = OfferCheck(expected=len(expected), read=len(actual))
    variants: dict[str, set[bytes]] = {}
    for o in actual:
        variants.setdefault(o.id, set()).add(o.value)
    result.duplicates = len(actual) - len(variants)
    wanted = {e.id: e for e in expected}
    result.missing = [i for i in wanted if i not in variants]
    result.unexpected = [i for i in variants if i not in wanted]
    chosen: dict[str, RetentionOffer] = {}
    for offer_id, values in variants.items():
        want = wanted.get(offer_id)
        if len(values) > 1:
            result.conflicting[offer_id] = f"{len(values)} different contents"
            continue
        if want is None:
            continue
        value = next(iter(values))
        try:
            got = parse_output(value)
        except ValueError as exc:
            result.conflicting[offer_id] = f"not a retention offer: {exc}"
            continue
        if not isinstance(got, RetentionOffer):
            result.conflicting[offer_id] = f"a {got.type} on the offers topic"
            continue
        result.decisions[got.decision] += 1
        if value == offer_bytes(want.base, want.trigger):
            chosen[offer_id] = got
            continue
        if got.decision in HISTORY_DEPENDENT and want.base.decision in RECORDED:
            limited = OfferDecision(
                id=want.base.id,
                customer_id=want.base.customer_id,
                trigger_id=want.base.trigger_id,
                at_ms=want.base.at_ms,
                decision=got.decision,
                offer_code=None,
                channel=None,
                reason=got.reason,
                quadrant=want.base.quadrant,
                expires_at_ms=None,
            )
            if value == offer_bytes(limited, want.trigger):
                chosen[offer_id] = got
                continue
        result.conflicting[offer_id] = (
            f"expected {offer_bytes(want.base, want.trigger)[:300]!r}, got {value[:300]!r}"
        )
    # cooldown and capped must be justified by offers actually recorded (published)
    recorded: dict[str, list[int]] = {}
    for offer_id, got in chosen.items():
        if got.decision in RECORDED:
            recorded.setdefault(got.customer_id, []).append(wanted[offer_id].at_ms)
    cooldown_ms = rules.cooldown_days * MS_PER_DAY
    window_ms = rules.cap_days * MS_PER_DAY
    for offer_id, got in chosen.items():
        if got.decision not in HISTORY_DEPENDENT:
            continue
        at = wanted[offer_id].at_ms
        earlier = [t for t in recorded.get(got.customer_id, ()) if t <= at]
        if got.decision == "cooldown" and not any(at - t < cooldown_ms for t in earlier):
            result.unjustified[offer_id] = "cooldown without a recorded offer within it"
        if got.decision == "capped" and sum(at - t < window_ms for t in earlier) < rules.cap_count:
            result.unjustified[offer_id] = f"capped with fewer than {rules.cap_count} offers"
    return result


# --------------------------------------------------------------------------- final state


@dataclass
class StateCheck:
    """The table changelog and the profiles topic against the reference's final state."""

    customers: int = 0
    in_table: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    clocks_differing: list[str] = field(default_factory=list)
    profiles: int = 0
    profiles_read: int = 0
    profiles_missing: list[str] = field(default_factory=list)
    profiles_differing: list[str] = field(default_factory=list)
    first_difference: str = ""

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.unexpected
            or self.differing
            or self.clocks_differing
            or self.profiles_missing
            or self.profiles_differing
        )


def _profile_view(raw: bytes) -> dict[str, Any]:
    data = orjson.loads(raw)
    profile = data["profile"]
    return {k: profile.get(k) for k in PROFILE_FINAL} | {
        "segment_since_ms": data.get("segment_since_ms"),
        "quadrant_since_ms": data.get("quadrant_since_ms"),
    }


def check_state(
    ref: ReferenceRun,
    settings: Settings,
    table: Mapping[str, bytes | None],
    profiles: Mapping[str, bytes | None],
) -> StateCheck:
    want_states = {
        cid: state for store in ref.stores.values() for cid, state in store.by_customer.items()
    }
    got_states = states_of(table)
    result = StateCheck(customers=len(want_states), in_table=len(got_states))
    result.missing = sorted(set(want_states) - set(got_states))
    result.unexpected = sorted(set(got_states) - set(want_states))
    for cid, state in want_states.items():
        got = got_states.get(cid)
        if got is not None and got.to_list() != state.to_list():
            result.differing.append(cid)
            if not result.first_difference:
                result.first_difference = (
                    f"state of {cid}: expected {state.to_list()}, table has {got.to_list()}"
                )
    for partition, store in ref.stores.items():
        key = f"\x00clock/{partition}"
        raw = table.get(key)
        got_clock = orjson.loads(raw) if raw is not None else None
        if store.clock() != (None, None) and got_clock != list(store.clock()):
            result.clocks_differing.append(f"partition {partition}: {got_clock} != {store.clock()}")
    want_profiles: dict[str, bytes] = {}
    erased: set[str] = set()
    for r in ref.outputs:
        if r.topic == settings.topics.profiles:
            if r.tombstone:  # an erasure's tombstone: no profile is expected
                want_profiles.pop(r.key.decode(), None)
                erased.add(r.key.decode())
            else:
                want_profiles[r.key.decode()] = r.value
                erased.discard(r.key.decode())
    for cid in sorted(erased):
        if profiles.get(cid) is not None:
            result.profiles_differing.append(cid)
            if not result.first_difference:
                result.first_difference = f"profile of erased customer {cid} is still published"
    result.profiles = len(want_profiles)
    result.profiles_read = sum(1 for v in profiles.values() if v is not None)
    for cid, value in want_profiles.items():
        got_value = profiles.get(cid)
        if got_value is None:
            result.profiles_missing.append(cid)
        elif _profile_view(got_value) != _profile_view(value):
            result.profiles_differing.append(cid)
            if not result.first_difference:
                result.first_difference = (
                    f"profile of {cid}: expected {_profile_view(value)}, "
                    f"topic has {_profile_view(got_value)}"
                )
    return result


# --------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    """Everything the verifier found, with the counts the soak and the CLI print."""

    events_in: int = 0
    ticks: int = 0
    input_duplicates: int = 0  # repeated input events the reference applied as no-ops
    outputs: Comparison = field(default_factory=lambda: Comparison(0, 0))
    dead_letters: Counter[str] = field(default_factory=Counter)
    offers: OfferCheck | None = None
    state: StateCheck | None = None
    lag: int | None = None
    elapsed_s: float = 0.0

    @property
    def missing(self) -> int:
        return len(self.outputs.missing) + (len(self.offers.missing) if self.offers else 0)

    @property
    def unexpected(self) -> int:
        return len(self.outputs.unexpected) + (len(self.offers.unexpected) if self.offers else 0)

    @property
    def conflicting(self) -> int:
        return len(self.outputs.different) + (len(self.offers.conflicting) if self.offers else 0)

    @property
    def duplicates_dropped(self) -> int:
        return self.outputs.extra_copies + (self.offers.duplicates if self.offers else 0)

    @property
    def state_ok(self) -> bool:
        return self.state is None or self.state.ok

    @property
    def ok(self) -> bool:
        offers_ok = self.offers is None or not self.offers.unjustified
        return (
            self.missing == 0
            and self.unexpected == 0
            and self.conflicting == 0
            and offers_ok
            and self.state_ok
        )

    def counts(self) -> dict[str, int | None]:
        """The figures as a flat mapping (the soak's summary, --json)."""
        o = self.outputs
        return {
            "events_in": self.events_in,
            "ticks": self.ticks,
            "input_duplicates": self.input_duplicates,
            "expected_outputs": o.expected,
            "outputs_read": o.actual,
            "dead_letters": sum(self.dead_letters.values()),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "conflicting": self.conflicting,
            "duplicates_dropped": self.duplicates_dropped,
            "offers_expected": self.offers.expected if self.offers else None,
            "offers_read": self.offers.read if self.offers else None,
            "offers_unjustified": len(self.offers.unjustified) if self.offers else None,
            "customers": self.state.customers if self.state else None,
            "states_differing": (
                len(self.state.differing) + len(self.state.missing) + len(self.state.unexpected)
                if self.state
                else None
            ),
            "profiles_differing": (
                len(self.state.profiles_differing) + len(self.state.profiles_missing)
                if self.state
                else None
            ),
            "lag": self.lag,
        }

    def report(self, limit: int = SHOWN) -> str:
        o = self.outputs
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items())) or "none"
        lines = [
            f"events in: {self.events_in:,} (+ {self.ticks:,} clock ticks); "
            f"repeated input events (no-ops): {self.input_duplicates:,}",
            f"outputs: expected {o.expected:,}, read {o.actual:,} records; "
            f"missing {len(o.missing):,}, unexpected {len(o.unexpected):,}, "
            f"conflicting {len(o.different):,}, duplicates dropped {o.extra_copies:,}",
            f"dead letters: {sum(self.dead_letters.values()):,} ({reasons})",
        ]
        if self.offers is not None:
            f = self.offers
            decided = ", ".join(f"{k} {v}" for k, v in sorted(f.decisions.items())) or "none"
            lines.append(
                f"retention offers: expected {f.expected:,}, read {f.read:,} records; "
                f"missing {len(f.missing):,}, unexpected {len(f.unexpected):,}, "
                f"conflicting {len(f.conflicting):,}, unjustified {len(f.unjustified):,}, "
                f"duplicates dropped {f.duplicates:,} ({decided})"
            )
        if self.state is not None:
            s = self.state
            lines.append(
                f"final state: {s.customers:,} customers expected, {s.in_table:,} in the table; "
                f"missing {len(s.missing)}, unexpected {len(s.unexpected)}, "
                f"differing {len(s.differing)}, clocks differing {len(s.clocks_differing)}; "
                f"profiles {s.profiles_read:,}/{s.profiles:,}, missing "
                f"{len(s.profiles_missing)}, differing {len(s.profiles_differing)}"
            )
        if self.lag is not None:
            lines.append(f"worker group lag (records not yet committed): {self.lag:,}")
        lines.append(f"verified in {self.elapsed_s:.1f} s")
        if self.ok:
            lines.append(DELIVERED)
            return "\n".join(lines)
        if not o.ok:
            lines.append(o.report(limit))
        if self.offers is not None and not self.offers.ok:
            f = self.offers
            for name, ids in (
                ("MISSING OFFERS", f.missing),
                ("UNEXPECTED OFFERS", f.unexpected),
                ("CONFLICTING OFFERS", list(f.conflicting)),
                ("UNJUSTIFIED OFFERS", list(f.unjustified)),
            ):
                if ids:
                    lines.append(f"{name} {len(ids)}: {sorted(ids)[:limit]}")
            for offer_id in sorted(f.conflicting)[:3]:
                lines.append(f"  {offer_id}: {f.conflicting[offer_id]}")
            for offer_id in sorted(f.unjustified)[:3]:
                lines.append(f"  {offer_id}: {f.unjustified[offer_id]}")
        if self.state is not None and not self.state.ok:
            s = self.state
            for name, ids in (
                ("STATES MISSING", s.missing),
                ("STATES UNEXPECTED", s.unexpected),
                ("STATES DIFFERING", s.differing),
                ("CLOCKS DIFFERING", s.clocks_differing),
                ("PROFILES MISSING", s.profiles_missing),
                ("PROFILES DIFFERING", s.profiles_differing),
            ):
                if ids:
                    lines.append(f"{name} {len(ids)}: {ids[:limit]}")
            if s.first_difference:
                lines.append(f"  first: {s.first_difference[:1500]}")
        lines.append(NOT_DELIVERED)
        return "\n".join(lines)


def verify(
    settings: Settings,
    rules: Rules,
    model: Model,
    *,
    records: Sequence[InRecord] | None = None,
    wait: float = 0.0,
    settle: float = 5.0,
    read_timeout: float = 300.0,
    offers: bool = True,
    state: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Verdict:
    """Verify the topics of ``settings`` (see the module doc). Never raises on a mismatch.

    ``records``: the input records (default: read from the input topics now; a plan given
    instead must carry the offsets the topics gave them). ``wait``: at most this many seconds
    of reading while the workers catch up (module doc); 0 checks what is there now.
    ``progress`` is called with a line of text at every step (and may raise to give up).
    ``offers`` / ``state``: also check retention offers / the final state.
    """
    say = progress or (lambda _: None)
    started = time.monotonic()
    if records is None:
        say("reading the input topics")
        records = read_inputs(settings)
    say(f"running the reference over {len(records):,} input records")
    ref = run_reference(settings, rules, model, list(records))
    assert ref.processor is not None
    topics = compared_topics(settings)
    expected = outs_of(ref.outputs, topics)
    order_dependent = erasure_order_dependent(settings, records, ref.outputs)
    offers_wanted = expected_offers(expected, rules.offers) if offers else []
    ticks = sum(1 for r in records if any(k == TICK_HEADER for k, _ in r.headers))
    verdict = Verdict(
        events_in=len(records) - ticks,
        ticks=ticks,
        input_duplicates=ref.processor.counters.duplicates,
    )

    say("reading the output topics")
    # created by workers since erasure exists: a deployment's older topics may lack it
    out_reader = OutputReader(settings, topics, missing_ok=[settings.topics.customer_erased])
    offer_reader = OutputReader(settings, [settings.topics.retention_offers])
    table = LatestReader(settings, changelog_topic(settings), _changelog_key)
    profiles = LatestReader(settings, settings.topics.profiles, lambda k: k.decode())
    readers: list[TopicReader] = [out_reader, offer_reader, table, profiles]
    try:
        deadline = started + wait
        quiet_since = time.monotonic()
        first = True
        while True:
            fresh = sum(r.read_to_end(read_timeout) for r in readers)
            if fresh or first:
                quiet_since = time.monotonic()
                verdict.outputs = compare(
                    [o for o in expected if o.id not in order_dependent],
                    [o for o in out_reader.records if o.id not in order_dependent],
                )
                if offers:
                    verdict.offers = check_offers(offers_wanted, offer_reader.records, rules.offers)
                if state:
                    verdict.state = check_state(ref, settings, table.latest, profiles.latest)
            first = False
            if time.monotonic() >= deadline:
                break
            lag = sum(group_lag(settings).values())
            if lag == 0 and (verdict.ok or time.monotonic() - quiet_since >= settle):
                # the workers are done: one last read, then the verdict stands
                if sum(r.read_to_end(read_timeout) for r in readers) == 0:
                    break
                first = True  # something came after all: evaluate again
                continue
            say(
                f"waiting: {verdict.missing:,} outputs missing, worker group lag {lag:,}"
                + (" (all delivered so far)" if verdict.ok else "")
            )
            time.sleep(1.0)
    finally:
        for r in readers:
            r.close()
    letters = {o.id: o for o in out_reader.records if o.topic == settings.topics.dead_letters}
    verdict.dead_letters = Counter(_reason_code(o.value) for o in letters.values())
    try:
        verdict.lag = sum(group_lag(settings).values())
    except Exception as exc:  # the lag is informative only
        log.warning("could not read the worker group's lag: %s", exc)
    verdict.elapsed_s = time.monotonic() - started
    return verdict


def records_from_log(
    path: Path, settings: Settings, rules: Rules, *, order: Order = "event_time"
) -> list[InRecord]:
    """The input records a replay of ``path`` into fresh topics gives (offsets from 0)."""
    planned = plan(
        read_lines(path),
        settings,
        detect_format(path),
        lateness_ms=rules.allowed_lateness_ms,
        order=order,
    )
    return as_consumed(planned)
