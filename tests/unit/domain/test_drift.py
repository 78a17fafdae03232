"""The drift rule: expected purchases over the horizon, with the own rhythm in P(alive).

Properties: the expectation only falls in silence (so time alone only raises the level), the
crossing age is where the level really changes, and the worker's due time is the first
millisecond at which an evaluation raises the alert.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.churn import BgNbdParams, expected_purchases, p_alive
from streams.domain.drift import (
    alive_with_rhythm,
    drift_crossing_age,
    drift_expected,
    drift_level,
    gap_cv,
    rhythm_survival,
)
from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import ChurnRiskRaised
from streams.domain.facts import MS_PER_DAY, PurchaseFact, SourcePosition
from streams.domain.model import default_model
from streams.domain.rules import DriftRules, load_rules
from tests.unit.domain.logs import rules_with_lateness

RULES = load_rules().drift
CDNOW_DAYS = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426).rescale_time(7.0)

params_st = st.builds(
    BgNbdParams,
    r=st.floats(0.1, 3.0),
    alpha=st.floats(1.0, 200.0),
    a=st.floats(0.2, 3.0),
    b=st.floats(0.5, 10.0),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, int, int]:
    """(x, t_x, sum of squared gaps) of a real sequence of gaps."""
    gaps = draw(st.lists(st.integers(1, 120), min_size=2, max_size=40))
    return len(gaps), sum(gaps), sum(g * g for g in gaps)


@settings(max_examples=200, deadline=None)
@given(params_st, histories(), st.floats(0.0, 400.0), st.floats(0.1, 200.0))
def test_expected_purchases_only_fall_in_silence(
    params: BgNbdParams, history: tuple[int, int, int], silence: float, more: float
) -> None:
    x, t_x, gap_sq = history
    now = drift_expected(params, x, t_x, t_x + silence, gap_sq, RULES)
    later = drift_expected(params, x, t_x, t_x + silence + more, gap_sq, RULES)
    assert now is not None and later is not None
    assert later <= now * (1 + 1e-9) + 1e-12


@settings(max_examples=200, deadline=None)
@given(params_st, histories(), st.integers(0, 2))
def test_crossing_age_is_where_the_level_rises(
    params: BgNbdParams, history: tuple[int, int, int], level: int
) -> None:
    x, t_x, gap_sq = history

    def level_at(age: float) -> int:
        return drift_level(drift_expected(params, x, t_x, age, gap_sq, RULES), x, t_x, RULES)

    crossing = drift_crossing_age(params, x, t_x, gap_sq, level, RULES)
    if crossing is None:
        assert level_at(t_x + 36_000.0) <= level
        return
    assert level_at(crossing) > level
    if crossing > t_x:
        assert level_at(crossing - 1e-5 * max(1.0, crossing)) <= level


def test_no_rate_no_drift() -> None:
    assert drift_expected(CDNOW_DAYS, 0, 0.0, 400.0, 0, RULES) is None
    assert drift_level(None, 0, 0.0, RULES) == 0
    assert drift_crossing_age(CDNOW_DAYS, 0, 0, 0, 0, RULES) is None
    two_gaps = DriftRules(min_repeat_days_for_rhythm=2)
    assert drift_expected(CDNOW_DAYS, 1, 30.0, 400.0, 900, two_gaps) is None
    assert drift_crossing_age(CDNOW_DAYS, 1, 30, 900, 0, two_gaps) is None


def test_a_slow_buyer_is_not_drifting_at_their_own_pace() -> None:
    # own rate 2 purchases in 360 days: 0.5 per 90 days; an expectation of 0.2 is not "well
    # below" it when the share is 0.3
    strict = DriftRules(max_share_of_own_rate=0.3)
    assert drift_level(0.2, 2, 360.0, strict) == 0
    assert drift_level(0.2, 20, 360.0, strict) == 2


def test_without_a_regular_rhythm_it_is_the_bgnbd_expectation() -> None:
    # gaps 1 and 59 days: CV far above rhythm_max_cv, so BG/NBD alone
    x, t_x, gap_sq, age = 2, 60, 1 + 59 * 59, 150.0
    assert gap_cv(x, t_x, gap_sq, RULES.prior_gaps) > RULES.rhythm_max_cv
    ours = drift_expected(CDNOW_DAYS, x, t_x, age, gap_sq, RULES)
    theirs = expected_purchases(CDNOW_DAYS, RULES.horizon_days, x, t_x, age)
    assert ours is not None and math.isclose(ours, theirs, rel_tol=1e-12)


def test_a_regular_rhythm_makes_a_long_silence_telling() -> None:
    # 20 purchases exactly 14 days apart, silent for 5 gaps: BG/NBD still gives P(alive) ~0.5,
    # the own rhythm says this silence does not happen to an alive customer
    x, t_x, gap_sq = 20, 280, 20 * 14 * 14
    age = t_x + 70.0
    assert p_alive(CDNOW_DAYS, x, t_x, age) > 0.1
    assert alive_with_rhythm(CDNOW_DAYS, x, t_x, age, gap_sq, RULES) < 0.01
    assert rhythm_survival(70.0, 14.0, gap_cv(x, t_x, gap_sq, RULES.prior_gaps)) < 1e-3


def test_time_alone_raises_the_alert_at_the_due_millisecond() -> None:
    """A silent regular buyer: every due time is exact (nothing happens a millisecond
    before), and the alerts come from time alone at those due times."""
    rules = rules_with_lateness(0)
    store = DictStore()
    engine = PartitionEngine(rules, default_model(), store)
    t0 = 1_700_000_000_000
    for i in range(12):
        at = t0 + i * 14 * MS_PER_DAY + (i % 3) * 3_600_000
        fact = PurchaseFact(f"e{i}", "c", at, f"o{i}", 15_000)
        engine.on_purchase(fact, SourcePosition("purchases", 0, i))
    state = store.states["c"]
    alerts: list[ChurnRiskRaised] = []
    for _ in range(200):
        due = state.next_due_ms
        if due is None:
            break
        level = state.drift_level
        assert engine.tick(due - 1) == []
        assert state.drift_level == level
        for event in engine.tick(due):
            if isinstance(event, ChurnRiskRaised):
                assert event.at_ms == due and event.cause == "time"
                alerts.append(event)
    assert [a.severity for a in alerts] == ["watch", "warning", "critical"]
    assert all(a.true_friend_drifting for a in alerts[1:])
    assert state.last_ms is not None
    # the regular rhythm makes the critical alert come within a few own gaps of silence
    assert (alerts[-1].at_ms - state.last_ms) / MS_PER_DAY < 6 * 14
