"""Lift: the Newcombe interval against published values, the table's groups, idempotent folds."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.lift import (
    ALL,
    ArmCounts,
    aggregates_from_outcomes,
    lift_of,
    lift_table,
    newcombe,
    wilson,
)


def test_wilson_matches_newcombe_1998_table() -> None:
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", 81/263
    low, high = wilson(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-5) and high == pytest.approx(0.3662, abs=5e-5)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        # Newcombe (1998), "Interval estimation for the difference between independent
        # proportions", Table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
    ],
)
def test_newcombe_matches_the_published_intervals(
    x1: int, n1: int, x2: int, n2: int, low: float, high: float
) -> None:
    d, lo, hi = newcombe(x1, n1, x2, n2)
    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


@given(st.integers(1, 300), st.integers(1, 300), st.data())
def test_the_interval_holds_the_estimate_and_stays_in_range(
    n1: int, n2: int, data: st.DataObject
) -> None:
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    d, lo, hi = newcombe(x1, n1, x2, n2)
    assert -1 - 1e-12 <= lo <= d <= hi <= 1 + 1e-12


def test_newcombe_covers_about_95_percent() -> None:
    """Monte Carlo coverage at p_t = 0.45, p_h = 0.30 with a small holdout (40): within
    a few points of 95 % (the Wald interval is known to fall short here)."""
    rng = random.Random(7)
    covered = 0
    trials = 2_000
    for _ in range(trials):
        x1 = sum(rng.random() < 0.45 for _ in range(360))
        x2 = sum(rng.random() < 0.30 for _ in range(40))
        _, lo, hi = newcombe(x1, 360, x2, 40)
        covered += lo <= 0.15 <= hi
    assert 0.93 <= covered / trials <= 0.975


def test_lift_table_groups_by_strategy_quadrant_and_overall() -> None:
    aggregates = {
        ("TF-RECOGNITION", "true_friend", "treated"): ArmCounts(100, 40, 400_000, 0, 0.0),
        ("TF-RECOGNITION", "true_friend", "holdout"): ArmCounts(20, 5, 50_000, 0, 0.0),
        ("BN-CROSS-SELL", "barnacle", "treated"): ArmCounts(50, 10, 20_000, 0, 0.0),
    }
    rows = {(r.offer_code, r.quadrant): r for r in lift_table(aggregates)}
    assert set(rows) == {
        ("TF-RECOGNITION", ALL),
        ("BN-CROSS-SELL", ALL),
        (ALL, "true_friend"),
        (ALL, "barnacle"),
        (ALL, ALL),
    }
    tf = rows[("TF-RECOGNITION", ALL)]
    assert tf.lift == pytest.approx(0.40 - 0.25)
    assert tf.incremental_revenue_cents == pytest.approx(4_000 - 2_500)
    assert rows[("BN-CROSS-SELL", ALL)].lift is None  # no holdout yet
    assert rows[("BN-CROSS-SELL", ALL)].verdict == "not enough data"
    overall = rows[(ALL, ALL)]
    assert overall.treated.n == 150 and overall.holdout.n == 20
    assert list(lift_table(aggregates))[-1] is not None
    assert lift_table(aggregates)[-1].offer_code == lift_table(aggregates)[-1].quadrant == ALL


def test_revenue_interval_from_sums_of_squares() -> None:
    values_t = [0, 0, 5_000, 12_000, 0, 3_000]
    values_h = [0, 4_000, 0, 0]

    def counts(values: list[int]) -> ArmCounts:
        return ArmCounts(
            len(values),
            sum(v > 0 for v in values),
            sum(values),
            sum(v * v for v in values),
            0.0,
        )

    row = lift_of("X", "q", counts(values_t), counts(values_h))
    mean_t, mean_h = sum(values_t) / 6, sum(values_h) / 4
    var_t = sum((v - mean_t) ** 2 for v in values_t) / 5
    var_h = sum((v - mean_h) ** 2 for v in values_h) / 3
    se = math.sqrt(var_t / 6 + var_h / 4)
    assert row.incremental_revenue_cents == pytest.approx(mean_t - mean_h)
    assert row.revenue_low_cents == pytest.approx(mean_t - mean_h - 1.959963984540054 * se)


def test_folding_outcomes_counts_each_id_once() -> None:
    def outcome(i: int, arm: str, converted: bool) -> dict[str, object]:
        return {
            "id": f"outcome:c{i}:1",
            "offer_code": "TF-RECOGNITION",
            "quadrant": "true_friend",
            "arm": arm,
            "converted": converted,
            "net_revenue_cents": 1_000 if converted else 0,
            "days_to_first_purchase": 2.5 if converted else None,
        }

    records = [
        outcome(1, "treated", True),
        outcome(2, "holdout", False),
        outcome(3, "treated", False),
    ]
    once = aggregates_from_outcomes(records)
    twice = aggregates_from_outcomes(records + records[:2])
    assert once == twice
    treated = once[("TF-RECOGNITION", "true_friend", "treated")]
    assert (treated.n, treated.converted, treated.net_cents) == (2, 1, 1_000)
    assert treated.mean_days_to_first == pytest.approx(2.5)
