"""Late purchases and refunds: folded in as corrections within the horizon, whatever the order."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import DuplicateEvent, LateEvent, SegmentChanged
from streams.domain.facts import MS_PER_DAY, PurchaseFact, PurchaseKind, SourcePosition, day_of
from streams.domain.model import default_model
from streams.domain.state import PURCHASE, REFUND, CustomerState, fold_purchase
from tests.unit.domain.logs import (
    LATENESS_MS,
    T0,
    Fact,
    Run,
    collect,
    customer_logs,
    feed,
    format_3_row,
    rules_with_lateness,
    run_log,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES = rules_with_lateness()
HORIZON_MS = RULES.late_horizon_ms
W = RULES.windows


def aggregates(state: CustomerState, now_ms: int) -> tuple[object, ...]:
    """What the issue names: x, t_x, T, spend, windows and gap statistics (and the counts)."""
    return (
        state.first_ms,
        state.last_ms,
        state.repeat_days,
        state.t_x_days,
        state.age_days(now_ms),
        state.orders,
        state.refunds,
        state.first_day_cents,
        state.repeat_cents,
        state.refunded_cents,
        state.gap_sq_days,
        state.gap_std_days,
        state.window_totals(now_ms, W.bucket_days, W.short_buckets),
        state.window_totals(now_ms, W.bucket_days, W.long_buckets),
    )


purchases = st.lists(
    st.tuples(
        st.integers(0, 200 * MS_PER_DAY // 60_000),  # minutes after T0
        st.sampled_from([PURCHASE, PURCHASE, PURCHASE, REFUND]),
        st.integers(0, 50_000),
    ),
    min_size=1,
    max_size=30,
)


@PROPERTY
@given(purchases, st.randoms(use_true_random=False))
def test_fold_purchase_is_order_independent(
    rows: list[tuple[int, int, int]], rnd: random.Random
) -> None:
    """Folding the same purchases sorted or shuffled gives the same aggregates, exactly."""
    folded = [
        (T0 + m * 60_000, f"e{i}", sign, cents, f"o{i}") for i, (m, sign, cents) in enumerate(rows)
    ]
    in_order, shuffled = CustomerState("c"), CustomerState("c")
    for p in sorted(folded):
        fold_purchase(in_order, p, W.bucket_days)
    mixed = list(folded)
    rnd.shuffle(mixed)
    for p in mixed:
        fold_purchase(shuffled, p, W.bucket_days)
    now = T0 + 201 * MS_PER_DAY
    assert aggregates(shuffled, now) == aggregates(in_order, now)
    assert shuffled.days == in_order.days
    buys = [p for p in folded if p[2] == PURCHASE]
    if buys:
        days = sorted({day_of(p[0]) for p in buys})
        assert in_order.days == days
        assert in_order.gap_sq_days == sum((b - a) ** 2 for a, b in itertools.pairwise(days))


def _arrivals(facts: list[Fact], rnd: random.Random, behind_ms: int) -> list[Fact]:
    """Each purchase or refund arrives up to ``behind_ms`` after its event time, interactions
    on time (late ones are not corrected, by design); some facts arrive twice."""

    def arrival(f: Fact) -> int:
        return f.at_ms + (rnd.randint(0, behind_ms) if isinstance(f, PurchaseFact) else 0)

    keyed = [(arrival(f), i, f) for i, f in enumerate(facts)]
    keyed += [(arrival(f), len(facts) + i, f) for i, f in enumerate(facts) if rnd.random() < 0.2]
    return [f for _, _, f in sorted(keyed, key=lambda k: (k[0], k[1]))]


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False))
def test_the_state_does_not_depend_on_arrival_order_within_the_horizon(
    facts: list[Fact], rnd: random.Random
) -> None:
    """Purchases and refunds arriving up to the late horizon behind, some twice, in any order:
    the same x, t_x, T, spend, windows and gap statistics as one in-order pass."""
    end = max(f.at_ms for f in facts) + HORIZON_MS + LATENESS_MS + MS_PER_DAY
    reference = run_log(facts, end_ms=end)
    arrived = _arrivals(facts, rnd, HORIZON_MS)
    run = run_log(arrived, end_ms=end)
    # nothing was beyond the horizon: every fact was applied once
    assert not [e for e in run.other if isinstance(e, LateEvent) and e.horizon_ms is not None]
    assert set(run.store.states) == set(reference.store.states)
    for cid, state in reference.store.states.items():
        assert aggregates(run.store.states[cid], end) == aggregates(state, end), cid
    # the corrections are outputs like any other: ids stay per-customer sequences
    for cid, state in run.store.states.items():
        ids = [e.id for e in run.outputs if e.customer_id == cid]
        assert ids == [f"{cid}:{n}" for n in range(1, state.seq + 1)]


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False))
def test_the_state_is_the_fold_of_what_was_applied(facts: list[Fact], rnd: random.Random) -> None:
    """Arrivals up to twice the horizon behind: some purchases are beyond it. The state is then
    exactly the in-order fold of the purchases that were applied (within the horizon)."""
    end = max(f.at_ms for f in facts) + 2 * HORIZON_MS + LATENESS_MS + MS_PER_DAY
    arrived = _arrivals(facts, rnd, 2 * HORIZON_MS)
    run = run_log(arrived, end_ms=end)
    arrivals = Counter(f.event_id for f in arrived if isinstance(f, PurchaseFact))
    refused = Counter(
        e.fact.event_id
        for e in run.other
        if isinstance(e, LateEvent | DuplicateEvent) and isinstance(e.fact, PurchaseFact)
    )
    applied = {i for i, n in arrivals.items() if n > refused[i]}
    assert all(n - refused[i] <= 1 for i, n in arrivals.items()), "a purchase applied twice"
    kept = [f for f in facts if not isinstance(f, PurchaseFact) or f.event_id in applied]
    reference = run_log(kept, end_ms=end)
    for cid, state in run.store.states.items():
        if cid in reference.store.states:
            assert aggregates(state, end) == aggregates(reference.store.states[cid], end), cid
        else:
            assert state.orders == state.refunds == 0


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False))
def test_state_stays_bounded_by_the_horizon(facts: list[Fact], rnd: random.Random) -> None:
    """Purchase days and event ids are kept only inside the horizon (plus one day before)."""
    arrived = _arrivals(facts, rnd, 2 * HORIZON_MS)
    run = run_log(arrived)
    for state in run.store.states.values():
        if state.evaluated_ms is None:
            continue
        oldest = day_of(state.evaluated_ms - HORIZON_MS)
        assert all(d >= oldest for d in state.days[1:])
        assert all(d >= oldest for d in state.folded_ids.values())


def test_a_late_purchase_within_the_horizon_is_a_correction() -> None:
    facts: list[Fact] = [
        PurchaseFact("e1", "alice", T0 + 10 * MS_PER_DAY, "o1", 1000),
        PurchaseFact("e2", "bob", T0, "o2", 1000),  # ten days behind the partition's clock
        PurchaseFact("e2", "bob", T0, "o2", 1000),  # the same event again
    ]
    run = run_log(facts)
    closed = T0 + 10 * MS_PER_DAY - LATENESS_MS
    assert not [e for e in run.other if isinstance(e, LateEvent)]
    assert [e.why for e in run.other if isinstance(e, DuplicateEvent)] == ["duplicate_id"]
    assert run.engine is not None and run.engine.corrections == 1
    bob = run.store.states["bob"]
    assert (bob.orders, bob.first_ms, bob.evaluated_ms) == (1, T0, closed - 1)
    changes = [e for e in run.outputs if e.customer_id == "bob"]
    assert changes and all(e.cause == "late_purchase" for e in changes)
    assert all(e.at_ms == closed - 1 for e in changes)
    first = changes[0]
    assert isinstance(first, SegmentChanged) and first.from_value is None
    assert first.profile.last_purchase_ms == T0


def test_a_purchase_beyond_the_horizon_is_reported_not_applied() -> None:
    facts: list[Fact] = [
        PurchaseFact("e1", "alice", T0 + 40 * MS_PER_DAY, "o1", 1000),
        PurchaseFact("e2", "bob", T0, "o2", 1000),  # forty days behind: beyond 30
    ]
    run = run_log(facts)
    late = [e for e in run.other if isinstance(e, LateEvent)]
    assert [e.fact.event_id for e in late] == ["e2"]
    assert late[0].closed_ms == T0 + 40 * MS_PER_DAY - LATENESS_MS
    assert late[0].horizon_ms == HORIZON_MS
    assert "bob" not in run.store.states


def test_a_late_purchase_yesterday_stops_a_drifting_alert_at_once() -> None:
    """A fortnightly buyer whose latest order is uploaded late: no longer drifting."""
    facts: list[Fact] = [
        PurchaseFact(f"e{k}", "tf", T0 + k * 14 * MS_PER_DAY, f"o{k}", 12_000) for k in range(26)
    ]
    last = T0 + 25 * 14 * MS_PER_DAY
    engine = PartitionEngine(RULES, default_model(), DictStore())
    run = Run(engine=engine)
    feed(engine, facts, run)
    now = last + 40 * MS_PER_DAY
    collect(engine.tick(now), run)
    state = run.store.states["tf"]
    assert state.drift_level >= 2, "drifting after 40 silent days"
    late = PurchaseFact("late", "tf", now - MS_PER_DAY, "o-late", 12_000)
    events = engine.on_purchase(late, SourcePosition("purchases", 0, len(facts)))
    assert state.drift_level == 0
    assert state.last_ms == late.at_ms
    assert all(getattr(e, "cause", None) == "late_purchase" for e in events)


def test_a_horizon_of_zero_applies_nothing_late() -> None:
    rules = RULES.model_copy(update={"late_horizon_days": 0.0})
    facts: list[Fact] = [
        PurchaseFact("e1", "alice", T0 + MS_PER_DAY, "o1", 1000),
        PurchaseFact("e2", "bob", T0, "o2", 1000, kind=PurchaseKind.REFUND),
    ]
    run = run_log(facts, rules=rules)
    assert [type(e) for e in run.other] == [LateEvent]
    assert "bob" not in run.store.states


def test_a_state_saved_before_late_corrections_still_reads() -> None:
    """Format 1 rows (no purchase days) upgrade: late data before their last day is refused."""
    run = run_log(
        [
            PurchaseFact("e1", "c", T0, "o1", 1000),
            PurchaseFact("e2", "c", T0 + 3 * MS_PER_DAY, "o2", 2000),
        ],
        end_ms=T0 + 4 * MS_PER_DAY,
    )
    body = format_3_row(run.store.states["c"])
    old = [1, *body[1:14], ["e2"], *body[15:30]]
    state = CustomerState.from_bytes(orjson.dumps(old))
    assert state.days == [day_of(T0 + 3 * MS_PER_DAY)]
    assert state.folded_ids == {"e2": day_of(T0 + 3 * MS_PER_DAY)}
    assert CustomerState.index_entry(orjson.dumps(old))[0] == "c"
    store = DictStore()
    store.put(state)
    engine = PartitionEngine(RULES, default_model(), store, clock_ms=T0 + 4 * MS_PER_DAY)
    before = engine.on_purchase(
        PurchaseFact("e3", "c", T0 + MS_PER_DAY, "o3", 10), SourcePosition("purchases", 0, 9)
    )
    assert [type(e) for e in before] == [LateEvent]
    after = engine.on_purchase(
        PurchaseFact("e4", "c", T0 + 3 * MS_PER_DAY + 1, "o4", 10),
        SourcePosition("purchases", 0, 10),
    )
    assert not [e for e in after if isinstance(e, LateEvent)]
    assert state.orders == 3 and state.repeat_days == 1
