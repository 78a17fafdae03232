"""One input partition's worth of the product, pure: clock, lateness, redelivery, due index.

The stream glue feeds each partition's records to one :class:`PartitionEngine`, in offset
order; the replay reference and the benchmarks do the same with a dict as the store. Its
outputs are a deterministic function of that sequence (and the model), whichever worker runs
it and however often it is restarted from saved state.

Time
    ``clock_ms`` is the partition's watermark: the largest purchase event time (or tick) seen.
    Event time is *closed* below ``clock_ms - allowed_lateness``. A customer is evaluated at a
    due time ``D`` only once time is closed past ``D``, so every purchase at or before ``D`` has
    arrived (or is late). With zero lateness evaluation is immediate.

Late purchases
    A purchase or refund older than closed time is late. Within the late horizon (closed time
    minus ``late_horizon``) it is folded into the customer's aggregates at once, as if it had
    come in order (the fold is order-independent, see :mod:`streams.domain.state`), and the
    customer is re-evaluated at the current closed time: what changes is output with cause
    ``late_purchase``, a correction. Older ones are reported, not applied. Late interactions
    (engagement only) are reported.

Due index
    Each state stores the next event time it must be re-evaluated (``next_due_ms``); the engine
    keeps a heap of those, so advancing time touches only customers who are due. The heap is
    derived data: :meth:`PartitionEngine.rebuild` recreates it from the stored states.
    Re-scheduling a customer pushes a new entry and leaves the old one (skipped when it comes
    up): :meth:`PartitionEngine.compact_due` drops those once they outnumber the rest.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable
from typing import Protocol

from streams.domain.classify import Classifier, Verdict
from streams.domain.events import DomainEvent, DuplicateEvent, LateEvent, OutputEvent
from streams.domain.facts import (
    MS_PER_DAY,
    InteractionFact,
    PurchaseFact,
    PurchaseKind,
    SourcePosition,
    day_of,
)
from streams.domain.freshness import band_moved
from streams.domain.model import Model
from streams.domain.outcomes import close_due, count_purchase, next_close_ms, open_for
from streams.domain.rules import Rules
from streams.domain.state import (
    PURCHASE,
    REFUND,
    CustomerState,
    can_fold,
    fold_purchase,
    prune_buckets,
)

_MAX_EVALUATIONS_PER_WAKE = 64  # next due strictly increases; this only bounds a pathology
DUE_COMPACT_MIN = 4_096
"""The due index is never compacted below this many entries (see ``due_bloated``)."""


class StateStore(Protocol):
    """Where customer states live: a dict in tests and replay, a Faust table in the worker."""

    def get(self, customer_id: str) -> CustomerState | None: ...

    def put(self, state: CustomerState) -> None: ...


class DictStore:
    """The in-memory store used by replay references, tests and benchmarks."""

    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}

    def get(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state


class PartitionEngine:
    """Applies one partition's facts and ticks to customer states."""

    def __init__(
        self,
        rules: Rules,
        model: Model,
        store: StateStore,
        *,
        clock_ms: int | None = None,
        touch_clock_ms: int | None = None,
    ) -> None:
        self.rules = rules
        self.classifier = Classifier(rules, model)
        self.store = store
        self.clock_ms = clock_ms
        self.touch_clock_ms = touch_clock_ms
        self._lateness = rules.allowed_lateness_ms
        self._horizon = rules.late_horizon_ms
        self._offers = rules.offers
        self._due: list[tuple[int, str]] = []
        self._due_compacted = 0  # entries after the last rebuild or compaction
        # a compaction under way (see compact_due): the index when it began, how much of it
        # is checked, the entries kept, their customers, and the entries pushed since
        self._snapshot: list[tuple[int, str]] | None = None
        self._checked = 0
        self._kept: list[tuple[int, str]] = []
        self._kept_ids: set[str] = set()
        self._pushed: list[tuple[int, str]] = []
        # customers whose profile changed (purchases folded or outputs made), for the views
        self.changed: set[str] = set()
        # their latest verdicts (event time, verdict), reused for their profiles
        self.verdicts: dict[str, tuple[int, Verdict]] = {}
        # late purchases and refunds folded in as corrections (for metrics)
        self.corrections = 0

    # ------------------------------------------------------------------ time
    @property
    def closed_ms(self) -> int | None:
        """Event time below which this partition's purchases are final."""
        return None if self.clock_ms is None else self.clock_ms - self._lateness

    def _closed_edge(self, closed: int) -> int:
        """The latest event time a due evaluation may have run at (see :meth:`_ready`)."""
        return closed if self._lateness == 0 else closed - 1

    def _ready(self, due_ms: int) -> bool:
        closed = self.closed_ms
        if closed is None:
            return False
        return due_ms <= closed if self._lateness == 0 else due_ms < closed

    def rebuild(self, due: Iterable[tuple[int | None, str]]) -> None:
        """Recreate the due index from (next due, customer id) of the stored states."""
        self._due = [(at, customer_id) for at, customer_id in due if at is not None]
        heapq.heapify(self._due)
        self._due_compacted = len(self._due)
        self._end_compaction()

    def due_count(self) -> int:
        return len(self._due)

    def due_bloated(self) -> bool:
        """Whether the index doubled since it was last rebuilt or compacted, or a compaction
        is under way (call :meth:`compact_due` until it finishes).

        Why: each re-scheduling leaves the customer's previous entry behind until its time
        comes (a tuple, an int and an id string, ~150 B); after 600,000 events of 76,129
        customers the index held 109,691 entries, 56,417 of them current. Compacting at each
        doubling costs O(1) per push, amortized.
        """
        return self._snapshot is not None or len(self._due) > max(
            2 * self._due_compacted, DUE_COMPACT_MIN
        )

    def compact_due(self, due_of: Callable[[str], int | None], budget: int = 0) -> int | None:
        """Check at most ``budget`` entries (0: all) of a compaction that keeps one entry per
        customer, the one ``due_of`` (the stored state's next due time) names. Returns the
        entries dropped once it finished, None while it has more to check.

        In steps, so a large index is never a pause (~2 µs an entry): the entries as they were
        when it began are checked a step at a time while the index stays in use, then the
        ones kept and every entry pushed meanwhile become the index. Outputs do not change:
        any entry that is not current is skipped when it comes up (its customer's due time
        moved on), so a stale entry kept, or one popped meanwhile and kept, does nothing.
        """
        if self._snapshot is None:
            self._snapshot = list(self._due)
            self._checked = 0
        snapshot = self._snapshot
        end = len(snapshot) if budget <= 0 else min(len(snapshot), self._checked + budget)
        kept = self._kept
        kept_ids = self._kept_ids
        for i in range(self._checked, end):
            entry = snapshot[i]
            at, customer_id = entry
            if customer_id not in kept_ids and due_of(customer_id) == at:
                kept_ids.add(customer_id)
                kept.append(entry)
        self._checked = end
        if end < len(snapshot):
            return None
        merged = kept + self._pushed
        dropped = len(self._due) - len(merged)
        heapq.heapify(merged)
        self._due = merged
        self._due_compacted = len(merged)
        self._end_compaction()
        return dropped

    def _end_compaction(self) -> None:
        self._snapshot = None
        self._checked = 0
        self._kept = []
        self._kept_ids = set()
        self._pushed = []

    def drop(self, customer_id: str) -> None:
        """Forget a customer (erasure): its due entries and what the views were to be told."""
        due = [entry for entry in self._due if entry[1] != customer_id]
        if len(due) != len(self._due):
            heapq.heapify(due)
            self._due = due
        if self._snapshot is not None:  # the compaction under way must not bring them back
            checked = [e for e in self._snapshot[: self._checked] if e[1] != customer_id]
            rest = [e for e in self._snapshot[self._checked :] if e[1] != customer_id]
            self._snapshot = checked + rest
            self._checked = len(checked)
            self._kept = [entry for entry in self._kept if entry[1] != customer_id]
            self._kept_ids.discard(customer_id)
            self._pushed = [entry for entry in self._pushed if entry[1] != customer_id]
        self.changed.discard(customer_id)
        self.verdicts.pop(customer_id, None)

    def _schedule(self, state: CustomerState) -> None:
        if state.next_due_ms is not None:
            entry = (state.next_due_ms, state.customer_id)
            heapq.heappush(self._due, entry)
            if self._snapshot is not None:
                self._pushed.append(entry)

    def tick(self, at_ms: int) -> list[DomainEvent]:
        """Move the partition clock (wall clock in live mode, end of log in replay)."""
        return self._advance(at_ms)

    def _advance(self, at_ms: int) -> list[DomainEvent]:
        if self.clock_ms is not None and at_ms <= self.clock_ms:
            return []
        self.clock_ms = at_ms
        out: list[DomainEvent] = []
        while self._due and self._ready(self._due[0][0]):
            due_ms, customer_id = heapq.heappop(self._due)
            state = self.store.get(customer_id)
            if state is None or state.next_due_ms != due_ms:
                continue  # superseded: the customer was re-scheduled since
            out.extend(self._run_due(state))
            self.store.put(state)
        return out

    def _run_due(self, state: CustomerState) -> list[DomainEvent]:
        out: list[DomainEvent] = []
        folded = state.folded_ms
        before = state.evaluated_ms
        for _ in range(_MAX_EVALUATIONS_PER_WAKE):
            due = state.next_due_ms
            if due is None or not self._ready(due):
                break
            events = self.classifier.evaluate(state, due)
            if events or state.outcomes:
                out.extend(self._outcomes(state, events, due))
            else:
                out.extend(events)
        # a churn band moved by time alone republishes the profile too (a drift level that
        # rose by time alone already did: it made a churn alert)
        if (
            out
            or state.folded_ms != folded
            or band_moved(self.model, self.rules, state, before, state.evaluated_ms)
        ):
            self.changed.add(state.customer_id)
            if self.classifier.last_verdict is not None:
                self.verdicts[state.customer_id] = self.classifier.last_verdict
        self._schedule(state)
        return out

    def _outcomes(
        self, state: CustomerState, events: list[OutputEvent], now_ms: int
    ) -> list[DomainEvent]:
        """After an evaluation: close the offer outcomes whose window ended, open one per
        offer or holdout the policy decides on the new triggers, and make the next window's
        end a due time (so a silent customer's outcome closes by time alone)."""
        out: list[DomainEvent] = []
        if state.outcomes:
            out.extend(close_due(state.customer_id, state.outcomes, now_ms))
        out.extend(events)
        if events:
            out.extend(
                open_for(state.customer_id, state.outcomes, state.offer_ms, events, self._offers)
            )
        close = next_close_ms(state.outcomes)
        if close is not None and (state.next_due_ms is None or close < state.next_due_ms):
            state.next_due_ms = close
        return out

    # ------------------------------------------------------------------ facts
    def on_purchase(self, fact: PurchaseFact, position: SourcePosition) -> list[DomainEvent]:
        """A purchase or refund read from ``position``."""
        key = f"{position.stream}/{position.partition}"
        state = self.store.get(fact.customer_id)
        if state is not None and position.offset <= state.offsets.get(key, -1):
            # Applied before a restart. Time still moves as it did then: the clock is saved
            # after the states, so a crash between the two leaves it behind them.
            out = self._advance(fact.at_ms)
            out.append(DuplicateEvent(fact, position, "redelivered"))
            return out
        closed = self.closed_ms
        if closed is not None and fact.at_ms < closed:
            return self._on_late(fact, position, key, state, closed)
        out = self._advance(fact.at_ms)
        state = self.store.get(fact.customer_id) or CustomerState(fact.customer_id)
        state.offsets[key] = position.offset
        if fact.event_id in state.folded_ids or any(p[1] == fact.event_id for p in state.pending):
            self.store.put(state)
            out.append(DuplicateEvent(fact, position, "duplicate_id"))
            return out
        sign = REFUND if fact.kind is PurchaseKind.REFUND else PURCHASE
        bisect.insort(
            state.pending, (fact.at_ms, fact.event_id, sign, fact.amount_cents, fact.order_id)
        )
        if state.next_due_ms is None or fact.at_ms < state.next_due_ms:
            state.next_due_ms = fact.at_ms
            if self._ready(fact.at_ms):
                out.extend(self._run_due(state))
            else:
                self._schedule(state)
        self.store.put(state)
        return out

    def _on_late(
        self,
        fact: PurchaseFact,
        position: SourcePosition,
        key: str,
        state: CustomerState | None,
        closed: int,
    ) -> list[DomainEvent]:
        """A purchase or refund behind closed time: a correction within the horizon.

        It moves no clock. Its verdict depends only on the clock and the customer's state, both
        of which only move forward, so a record judged beyond the horizon (which changes no
        state) is judged so again when it is read again after a crash.
        """
        if fact.at_ms < closed - self._horizon or (
            state is not None and not can_fold(state, fact.at_ms)
        ):
            return [LateEvent(fact, position, closed, self._horizon)]
        state = state or CustomerState(fact.customer_id)
        state.offsets[key] = position.offset
        if fact.event_id in state.folded_ids or any(p[1] == fact.event_id for p in state.pending):
            self.store.put(state)
            return [DuplicateEvent(fact, position, "duplicate_id")]
        out: list[DomainEvent] = []
        if state.next_due_ms is not None and self._ready(state.next_due_ms):
            out.extend(self._run_due(state))  # catch up first (only after a long pause)
        sign = REFUND if fact.kind is PurchaseKind.REFUND else PURCHASE
        fold_purchase(
            state,
            (fact.at_ms, fact.event_id, sign, fact.amount_cents, fact.order_id),
            self.rules.windows.bucket_days,
        )
        state.folded_ids[fact.event_id] = day_of(fact.at_ms)
        self.corrections += 1
        if state.folded_ms is None or fact.at_ms > state.folded_ms:
            state.folded_ms = fact.at_ms
        now = self._closed_edge(closed)
        if state.evaluated_ms is not None and state.evaluated_ms > now:
            now = state.evaluated_ms  # never evaluate back in time
        w = self.rules.windows
        prune_buckets(state, now, w.bucket_days, w.long_buckets)
        if state.outcomes:
            count_purchase(state.outcomes, fact.at_ms, sign, fact.amount_cents)
        events = self.classifier.evaluate(state, now, late=sign)
        out.extend(self._outcomes(state, events, now) if events or state.outcomes else events)
        self.changed.add(state.customer_id)
        if self.classifier.last_verdict is not None:
            self.verdicts[state.customer_id] = self.classifier.last_verdict
        self._schedule(state)
        self.store.put(state)
        return out

    def on_interaction(self, fact: InteractionFact, position: SourcePosition) -> list[DomainEvent]:
        """An interaction: engagement only, so it never re-classifies (see docs/domain.md)."""
        key = f"{position.stream}/{position.partition}"
        state = self.store.get(fact.customer_id)
        if state is not None and position.offset <= state.offsets.get(key, -1):
            # applied before a restart: the touch clock moves as it did then (see on_purchase)
            if self.touch_clock_ms is None or fact.at_ms > self.touch_clock_ms:
                self.touch_clock_ms = fact.at_ms
            return [DuplicateEvent(fact, position, "redelivered")]
        if self.touch_clock_ms is not None and fact.at_ms < self.touch_clock_ms - self._lateness:
            return [LateEvent(fact, position, self.touch_clock_ms - self._lateness)]
        if self.touch_clock_ms is None or fact.at_ms > self.touch_clock_ms:
            self.touch_clock_ms = fact.at_ms
        state = state or CustomerState(fact.customer_id)
        state.offsets[key] = position.offset
        if fact.event_id in state.touch_ids:
            self.store.put(state)
            return [DuplicateEvent(fact, position, "duplicate_id")]
        w = self.rules.windows
        bucket = fact.at_ms // (w.bucket_days * MS_PER_DAY)
        state.touches[bucket] = state.touches.get(bucket, 0) + 1
        state.interactions += 1
        if state.last_touch_ms is None or fact.at_ms > state.last_touch_ms:
            state.last_touch_ms = fact.at_ms
        state.touch_ids[fact.event_id] = fact.at_ms
        horizon = state.last_touch_ms - self._lateness
        if len(state.touch_ids) > 1:
            state.touch_ids = {i: t for i, t in state.touch_ids.items() if t >= horizon}
        oldest = state.last_touch_ms // (w.bucket_days * MS_PER_DAY) - w.engagement_buckets
        if len(state.touches) > w.engagement_buckets:
            state.touches = {b: n for b, n in state.touches.items() if b > oldest}
        self.store.put(state)
        return []

    @property
    def model(self) -> Model:
        return self.classifier.model

    def set_model(self, model: Model, states: Iterable[CustomerState]) -> None:
        """Adopt a new model: due times depend on it, so every customer is re-scheduled now."""
        self.classifier = Classifier(self.rules, model)
        self.verdicts.clear()
        now = self.clock_ms
        due: list[tuple[int, str]] = []
        for s in states:
            if s.first_ms is None and not s.pending:
                continue
            if now is not None:
                s.next_due_ms = now if s.next_due_ms is None else min(s.next_due_ms, now)
            if s.next_due_ms is not None:
                due.append((s.next_due_ms, s.customer_id))
            self.store.put(s)
        heapq.heapify(due)
        self._due = due
