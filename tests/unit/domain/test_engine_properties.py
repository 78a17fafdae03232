"""Order, duplicates, redelivery, split-and-resume, refunds and time passing, as properties."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import DuplicateEvent, LateEvent
from streams.domain.facts import (
    MS_PER_DAY,
    InteractionFact,
    PurchaseFact,
    PurchaseKind,
    day_of,
)
from streams.domain.model import default_model
from streams.domain.state import CustomerState
from tests.unit.domain.logs import (
    LATENESS_MS,
    T0,
    Fact,
    Run,
    by_customer,
    collect,
    customer_logs,
    essence,
    feed,
    rules_with_lateness,
    run_log,
)

END = T0 + 900 * MS_PER_DAY
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False))
def test_shuffling_within_lateness_changes_nothing(facts: list[Fact], rnd: random.Random) -> None:
    """Arrival order within the allowed lateness does not change states or outputs."""
    reference = run_log(facts, end_ms=END)
    # each event may arrive up to the allowed lateness behind the newest one seen
    jittered = sorted(facts, key=lambda f: f.at_ms + rnd.randint(0, LATENESS_MS))
    shuffled = run_log(jittered, end_ms=END)
    assert not [e for e in shuffled.other if isinstance(e, LateEvent)]
    assert essence(shuffled) == essence(reference)
    assert by_customer(shuffled.outputs) == by_customer(reference.outputs)


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False))
def test_duplicates_are_no_ops(facts: list[Fact], rnd: random.Random) -> None:
    """A repeated event id (a producer retry, a resent message) changes nothing."""
    reference = run_log(facts, end_ms=END)
    doubled: list[Fact] = []
    for f in facts:
        doubled.append(f)
        if rnd.random() < 0.5:
            doubled.append(f)
    run = run_log(doubled, end_ms=END)
    assert essence(run) == essence(reference)
    assert run.outputs == reference.outputs
    duplicates = [e for e in run.other if isinstance(e, DuplicateEvent)]
    assert len(duplicates) == len(doubled) - len(facts)
    assert all(d.why == "duplicate_id" for d in duplicates)


@PROPERTY
@given(customer_logs(), st.data())
def test_split_resume_and_redelivery(facts: list[Fact], data: st.DataObject) -> None:
    """Stop anywhere, restore from serialized state, re-read from an older offset: same result."""
    rules = rules_with_lateness()
    reference = run_log(facts, rules=rules, end_ms=END)

    split = data.draw(st.integers(0, len(facts)), label="split")
    first = run_log(facts[:split], rules=rules)
    assert first.engine is not None
    saved = {cid: s.to_bytes() for cid, s in first.store.states.items()}
    clock, touch_clock = first.engine.clock_ms, first.engine.touch_clock_ms

    store = DictStore()
    for raw in saved.values():
        restored = CustomerState.from_bytes(raw)
        store.put(restored)
    engine = PartitionEngine(
        rules, default_model(), store, clock_ms=clock, touch_clock_ms=touch_clock
    )
    # as a restarted worker does: the due index from the serialized rows, no state decoded
    index = [CustomerState.index_entry(raw) for raw in saved.values()]
    for customer_id, partition, due in index:
        state = store.states[customer_id]
        assert due == state.next_due_ms
        assert partition == (int(min(state.offsets).rsplit("/", 1)[1]) if state.offsets else None)
    # the index head of each row says the same without parsing it
    assert [CustomerState.index_head(raw) for raw in saved.values()] == [
        (partition, due) for _customer_id, partition, due in index
    ]
    engine.rebuild((due, customer_id) for customer_id, _partition, due in index)
    resumed = Run(outputs=list(first.outputs), engine=engine)
    # a crash before the offset commit: the consumer re-reads from an earlier offset
    rewind = data.draw(st.integers(0, split), label="rewind")
    redelivered = Run()
    feed(engine, facts[rewind:split], redelivered, done=facts[:rewind])
    assert redelivered.outputs == []
    assert all(isinstance(e, DuplicateEvent) and e.why == "redelivered" for e in redelivered.other)

    rest = Run()
    feed(engine, facts[split:], rest, done=facts[:split])
    collect(engine.tick(END), rest)
    resumed.outputs.extend(rest.outputs)
    assert {c: s.to_list() for c, s in store.states.items()} == {
        c: s.to_list() for c, s in reference.store.states.items()
    }
    assert resumed.outputs == reference.outputs


def _snapshot(run: Run) -> tuple[dict[str, bytes], int | None, int | None]:
    assert run.engine is not None
    states = {cid: s.to_bytes() for cid, s in run.store.states.items()}
    return states, run.engine.clock_ms, run.engine.touch_clock_ms


@PROPERTY
@given(customer_logs(), st.randoms(use_true_random=False), st.data())
def test_a_torn_save_then_redelivery_gives_the_reference(
    facts: list[Fact], rnd: random.Random, data: st.DataObject
) -> None:
    """A crash half-way through saving a batch: some states saved, the clock (saved last) not.

    Reading again from the last commit must give the states and outputs of one clean pass,
    late events included: the clock moves over redelivered events as it did the first time.
    """
    rules = rules_with_lateness()
    # arrivals up to two months behind (events are days apart): many are late, folded in as
    # corrections within the 30-day horizon or reported beyond it, and must stay so
    arrived = sorted(facts, key=lambda f: f.at_ms + rnd.randint(0, 60 * MS_PER_DAY))
    reference = run_log(arrived, rules=rules, end_ms=END)

    split = data.draw(st.integers(0, len(arrived)), label="split")
    rewind = data.draw(st.integers(0, split), label="rewind")  # the last commit
    before, clock, touch_clock = _snapshot(run_log(arrived[:rewind], rules=rules))
    first = run_log(arrived[:split], rules=rules)
    after, _, _ = _snapshot(first)
    landed = data.draw(st.sets(st.sampled_from(sorted(after))) if after else st.just(set()))

    store = DictStore()
    for cid in set(before) | set(after):
        raw = after[cid] if cid in landed else before.get(cid)
        if raw is not None:
            store.put(CustomerState.from_bytes(raw))
    engine = PartitionEngine(
        rules, default_model(), store, clock_ms=clock, touch_clock_ms=touch_clock
    )
    engine.rebuild((s.next_due_ms, cid) for cid, s in store.states.items())
    resumed = Run(engine=engine)
    feed(engine, arrived[rewind:], resumed, done=arrived[:rewind])
    collect(engine.tick(END), resumed)

    assert {c: s.to_list() for c, s in store.states.items()} == {
        c: s.to_list() for c, s in reference.store.states.items()
    }
    delivered = {e.id: e for e in first.outputs} | {e.id: e for e in resumed.outputs}
    assert delivered == {e.id: e for e in reference.outputs}
    late = [e.fact.event_id for e in resumed.other if isinstance(e, LateEvent)]
    late_first = {e.fact.event_id for e in reference.other if isinstance(e, LateEvent)}
    assert set(late) <= late_first


@PROPERTY
@given(customer_logs(max_customers=3, max_events=60))
def test_aggregates_match_brute_force(facts: list[Fact]) -> None:
    """x, t_x, orders, refunds, window sums and mean repeat spend, recomputed from scratch."""
    rules = rules_with_lateness()
    run = run_log(facts, rules=rules, end_ms=END)
    w = rules.windows
    for cid, state in run.store.states.items():
        mine = [f for f in facts if isinstance(f, PurchaseFact) and f.customer_id == cid]
        buys = [f for f in mine if f.kind is PurchaseKind.PURCHASE]
        refunds = [f for f in mine if f.kind is PurchaseKind.REFUND]
        assert state.orders == len(buys)
        assert state.refunds == len(refunds)
        assert state.refunded_cents == sum(f.amount_cents for f in refunds)
        touches = [f for f in facts if isinstance(f, InteractionFact) and f.customer_id == cid]
        assert state.interactions == len(touches)
        if not buys:
            assert state.first_ms is None
            continue
        days = sorted({day_of(f.at_ms) for f in buys})
        assert state.repeat_days == len(days) - 1
        assert state.t_x_days == days[-1] - days[0]
        assert state.gap_sq_days == sum((b - a) ** 2 for a, b in itertools.pairwise(days))
        assert state.first_day_cents == sum(
            f.amount_cents for f in buys if day_of(f.at_ms) == days[0]
        )
        assert state.repeat_cents == sum(f.amount_cents for f in buys if day_of(f.at_ms) != days[0])
        # windows as of the last purchase: buckets are pruned only beyond the long window
        now = max(f.at_ms for f in mine)
        bucket_ms = w.bucket_days * MS_PER_DAY
        newest = now // bucket_ms
        in_short = [f for f in mine if newest - w.short_buckets < f.at_ms // bucket_ms <= newest]
        orders, cents = state.window_totals(now, w.bucket_days, w.short_buckets)
        assert orders == sum(f.kind is PurchaseKind.PURCHASE for f in in_short)
        assert cents == sum(
            f.amount_cents if f.kind is PurchaseKind.PURCHASE else -f.amount_cents for f in in_short
        )
        assert len(state.buckets) <= w.long_buckets + 1


@PROPERTY
@given(customer_logs(max_customers=2, max_events=30), st.integers(1, 600))
def test_time_alone_only_moves_customers_toward_churn(facts: list[Fact], days: int) -> None:
    """With no new purchase, recency only falls and the drift level only rises."""
    run = run_log(facts, end_ms=None)
    engine = run.engine
    assert engine is not None
    last = max(f.at_ms for f in facts)
    collect(engine.tick(last + 3 * LATENESS_MS), run)
    before = {c: (s.scores, s.drift_level) for c, s in run.store.states.items()}
    later = Run()
    collect(engine.tick(last + days * MS_PER_DAY), later)
    for e in later.outputs:
        assert e.cause == "time"
    for cid, state in run.store.states.items():
        scores, level = before[cid]
        if scores is None or state.scores is None:
            continue
        assert state.scores[0] <= scores[0]
        assert state.drift_level >= level


def test_events_beyond_the_late_horizon_are_reported_not_applied() -> None:
    facts: list[Fact] = [
        PurchaseFact("e1", "alice", T0 + 40 * MS_PER_DAY, "o1", 1000),
        PurchaseFact("e2", "bob", T0, "o2", 1000),  # forty days behind the partition's clock
    ]
    run = run_log(facts, end_ms=END)
    late = [e for e in run.other if isinstance(e, LateEvent)]
    assert [e.fact.event_id for e in late] == ["e2"]
    assert late[0].closed_ms == T0 + 40 * MS_PER_DAY - LATENESS_MS
    assert "bob" not in run.store.states


def test_a_silent_true_friend_drifts_by_time_alone() -> None:
    """Fortnightly buyer for a year, then nothing: the alerts come from the clock alone."""
    facts: list[Fact] = [
        PurchaseFact(f"e{k}", "tf", T0 + k * 14 * MS_PER_DAY, f"o{k}", 12_000) for k in range(26)
    ]
    run = run_log(facts, end_ms=T0 + 26 * 14 * MS_PER_DAY + 90 * MS_PER_DAY)
    quadrant_changes = [e for e in run.outputs if getattr(e, "dimension", None) == "quadrant"]
    assert any(e.to_value == "true_friend" for e in quadrant_changes)  # type: ignore[union-attr]
    alerts = [e for e in run.outputs if hasattr(e, "severity")]
    drifting = [a for a in alerts if a.cause == "time" and a.true_friend_drifting]  # type: ignore[union-attr]
    assert drifting, "a true friend who stops buying must raise a drifting alert"
    first = drifting[0]
    last_purchase = T0 + 25 * 14 * MS_PER_DAY
    # A clockwork 14-day rhythm: a silence of two gaps is still possible for an alive
    # customer, three gaps hardly (the gap spread is shrunk toward Poisson-like, so not
    # before 2 gaps); the warning comes in between, from time alone.
    assert first.severity == "warning"
    assert last_purchase + 28 * MS_PER_DAY < first.at_ms < last_purchase + 42 * MS_PER_DAY
    # critical ends loyalty: the quadrant leaves true friend in the same evaluation, and the
    # alert still says a true friend drifted
    critical = [a for a in drifting if a.severity == "critical"]
    assert critical and critical[0].profile.quadrant != "true_friend"
    assert any(
        e.at_ms == critical[0].at_ms and e.from_value == "true_friend"  # type: ignore[union-attr]
        for e in quadrant_changes
    )


def test_output_ids_are_per_customer_sequences() -> None:
    facts: list[Fact] = [
        PurchaseFact(f"e{k}", f"c{k % 3}", T0 + k * 3 * MS_PER_DAY, f"o{k}", 5_000)
        for k in range(30)
    ]
    run = run_log(facts, end_ms=END)
    for cid, events in by_customer(run.outputs).items():
        assert [e.id for e in events] == [f"{cid}:{n}" for n in range(1, len(events) + 1)]


def test_refund_reduces_monetary_but_not_frequency() -> None:
    rules = rules_with_lateness()
    facts: list[Fact] = [
        PurchaseFact("e1", "c", T0, "o1", 10_000),
        PurchaseFact("e2", "c", T0 + MS_PER_DAY, "o1", 4_000, kind=PurchaseKind.REFUND),
    ]
    run = run_log(facts, rules=rules, end_ms=T0 + 2 * MS_PER_DAY)
    state = run.store.states["c"]
    w = rules.windows
    assert state.window_totals(T0 + 2 * MS_PER_DAY, w.bucket_days, w.short_buckets) == (1, 6_000)
    assert state.orders == 1
    assert state.refunds == 1


def test_zero_lateness_evaluates_immediately() -> None:
    rules = rules_with_lateness(0)
    engine = PartitionEngine(rules, default_model(), DictStore())
    run = Run(engine=engine)
    feed(engine, [PurchaseFact("e1", "c", T0, "o1", 10_000)], run)
    assert [getattr(e, "dimension", None) for e in run.outputs] == ["rfm_segment", "quadrant"]


def _compacting_run() -> tuple[PartitionEngine, Run, Callable[[str], int | None]]:
    """An engine over a dict store, and the compaction's lookup of a customer's due time."""
    engine = PartitionEngine(rules_with_lateness(), default_model(), DictStore())
    run = Run(engine=engine)
    store = run.store

    def due_of(customer_id: str) -> int | None:
        state = store.get(customer_id)
        return None if state is None else state.next_due_ms

    return engine, run, due_of


def _assert_same_end(engine: PartitionEngine, run: Run, reference: Run) -> None:
    """Tick to the end; states, outputs and outcomes are the reference run's."""
    collect(engine.tick(END), run)
    assert essence(run) == essence(reference)
    assert by_customer(run.outputs) == by_customer(reference.outputs)
    assert run.outcomes == reference.outcomes


@PROPERTY
@given(customer_logs(), st.integers(1, 5))
def test_compacting_the_due_index_changes_nothing(facts: list[Fact], every: int) -> None:
    """Dropping superseded due entries (at any point) leaves outputs and states as they were,
    and leaves one entry per customer with a next due time."""
    reference = run_log(facts, end_ms=END)
    engine, run, due_of = _compacting_run()
    store = run.store
    for i, fact in enumerate(facts):
        feed(engine, [fact], run, facts[:i])
        if i % every == 0:
            engine.compact_due(due_of)
            current = {(s.next_due_ms, c) for c, s in store.states.items() if s.next_due_ms}
            assert sorted(engine._due) == sorted(current)
    _assert_same_end(engine, run, reference)


def test_the_due_index_is_compacted_only_once_it_doubled() -> None:
    """``due_bloated`` waits for twice the entries left by the last compaction (and a floor)."""
    from streams.domain.engine import DUE_COMPACT_MIN

    engine = PartitionEngine(rules_with_lateness(), default_model(), DictStore())
    engine.rebuild((T0 + i, f"c{i}") for i in range(DUE_COMPACT_MIN))
    assert not engine.due_bloated()
    for i in range(DUE_COMPACT_MIN):  # everyone re-scheduled once: old entries superseded
        engine._due.append((T0 + 10 * MS_PER_DAY + i, f"c{i}"))
    assert not engine.due_bloated()  # exactly doubled
    engine._due.append((T0 + 20 * MS_PER_DAY, "c0"))
    assert engine.due_bloated()
    current = {f"c{i}": T0 + 10 * MS_PER_DAY + i for i in range(DUE_COMPACT_MIN)}
    current["c0"] = T0 + 20 * MS_PER_DAY
    assert engine.compact_due(current.get) == DUE_COMPACT_MIN + 1
    assert engine.due_count() == DUE_COMPACT_MIN
    assert not engine.due_bloated()


@PROPERTY
@given(customer_logs(), st.lists(st.integers(0, 4), min_size=1, max_size=20))
def test_compacting_in_steps_while_events_arrive_changes_nothing(
    facts: list[Fact], budgets: list[int]
) -> None:
    """A compaction spread over many steps, with events applied (and due customers evaluated)
    between the steps, leaves outputs and states as a run that never compacts; once it
    finished, every customer's current due entry is in the index."""
    reference = run_log(facts, end_ms=END)
    engine, run, due_of = _compacting_run()
    store = run.store
    for i, fact in enumerate(facts):
        feed(engine, [fact], run, facts[:i])
        budget = budgets[i % len(budgets)]
        if budget:  # a step of at most `budget` entries (0 here: no step this time)
            engine.compact_due(due_of, budget)
    while engine.compact_due(due_of, 1) is None:
        pass
    current = {(s.next_due_ms, c) for c, s in store.states.items() if s.next_due_ms}
    assert current <= set(engine._due)
    _assert_same_end(engine, run, reference)


def test_an_erased_customer_does_not_come_back_with_a_compaction() -> None:
    """``drop`` during a compaction removes the customer from what the compaction will keep."""
    engine = PartitionEngine(rules_with_lateness(), default_model(), DictStore())
    engine.rebuild([(T0 + 1, "a"), (T0 + 2, "b"), (T0 + 3, "c"), (T0 + 4, "a")])
    current = {"a": T0 + 4, "b": T0 + 2, "c": T0 + 3}
    assert engine.compact_due(current.get, 2) is None  # (T0+1, a) and (T0+2, b) checked
    engine.drop("b")
    engine.drop("a")
    assert engine.compact_due(current.get, 10) is not None
    assert sorted(engine._due) == [(T0 + 3, "c")]
    assert not engine.due_bloated()
