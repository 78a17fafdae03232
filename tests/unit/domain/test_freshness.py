"""Time-dependent figures computed for any moment equal what an evaluation then shows, and a
churn band moved by time alone republishes the profile."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.classify import Classifier
from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.facts import MS_PER_DAY, PurchaseFact, SourcePosition
from streams.domain.freshness import band_at, time_figures
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from tests.unit.domain.logs import T0

RULES = load_rules()
MODEL = default_model()


@st.composite
def buyers(draw: st.DrawFn) -> list[PurchaseFact]:
    """One customer's purchases on distinct days, in event-time order."""
    days = sorted(draw(st.sets(st.integers(0, 300), min_size=1, max_size=25)))
    return [
        PurchaseFact(f"e{d}", "c", T0 + d * MS_PER_DAY + 3_600_000, f"o{d}", 5_000 + 100 * d)
        for d in days
    ]


def engine_after(facts: list[PurchaseFact]) -> PartitionEngine:
    engine = PartitionEngine(RULES, MODEL, DictStore())
    for offset, fact in enumerate(facts):
        engine.on_purchase(fact, SourcePosition("purchases", 0, offset))
    engine.tick(facts[-1].at_ms + MS_PER_DAY)
    return engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buyers(), st.integers(0, 400))
def test_figures_at_a_moment_equal_the_profile_then(facts: list[PurchaseFact], later: int) -> None:
    state = engine_after(facts).store.get("c")
    assert state is not None and state.first_ms is not None and state.last_ms is not None
    assert state.evaluated_ms is not None
    at = state.evaluated_ms + later * MS_PER_DAY
    profile = Classifier(RULES, MODEL).assess(state, at)
    figures = time_figures(
        MODEL,
        RULES,
        repeat_days=state.repeat_days,
        first_purchase_ms=state.first_ms,
        last_purchase_ms=state.last_ms,
        at_ms=at,
    )
    assert figures.days_since_last_purchase == profile.days_since_last_purchase
    assert figures.tenure_days == profile.tenure_days
    assert figures.p_alive == profile.p_alive
    assert figures.churn_risk == profile.churn_risk
    assert figures.churn_risk_band == profile.churn_risk_band == band_at(MODEL, RULES, state, at)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buyers(), st.lists(st.integers(1, 60), min_size=1, max_size=8))
def test_a_band_moved_by_time_alone_republishes(
    facts: list[PurchaseFact], steps: list[int]
) -> None:
    engine = engine_after(facts)
    store: DictStore = engine.store  # type: ignore[assignment]
    clock = engine.clock_ms
    assert clock is not None
    for step in steps:
        engine.changed.clear()
        state = store.states["c"]
        before = state.evaluated_ms
        band_before = band_at(MODEL, RULES, state, before) if before is not None else None
        clock += step * MS_PER_DAY
        outputs = engine.tick(clock)
        state = store.states["c"]
        if state.evaluated_ms is not None and state.evaluated_ms != before and not outputs:
            moved = band_at(MODEL, RULES, state, state.evaluated_ms) != band_before
            assert ("c" in engine.changed) == moved
        if outputs:
            assert "c" in engine.changed
