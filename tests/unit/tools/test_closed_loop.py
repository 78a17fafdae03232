"""Closed loop: the measured lift recovers an effect the simulation planted.

Simulated customers answer each offer decision (a pending outcome in their state) by coming
back within the outcome window with probability baseline + effect when treated, baseline when
held out. The interval must hold the planted effect in most seeds — and must *not* hold a
wrong one, or the check could not fail.
"""

from __future__ import annotations

import statistics

import pytest

from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.closed_loop import Coverage, coverage, loop_rules

SEEDS = range(6)
CUSTOMERS = 400
BASELINE = 0.3

pytestmark = pytest.mark.slow


def _coverage(effect: float) -> Coverage:
    return coverage(
        effect,
        SEEDS,
        baseline=BASELINE,
        customers=CUSTOMERS,
        settings=Settings(),
        rules=loop_rules(load_rules(), holdout_percent=50),
        model=default_model(),
    )


@pytest.fixture(scope="module")
def with_effect() -> Coverage:
    return _coverage(0.15)


@pytest.fixture(scope="module")
def without_effect() -> Coverage:
    return _coverage(0.0)


def test_the_interval_holds_the_planted_effect(with_effect: Coverage) -> None:
    assert with_effect.covered >= 5, with_effect.as_dict()
    lifts = [r.overall.lift for r in with_effect.runs if r.overall.lift is not None]
    assert len(lifts) == len(SEEDS)
    # ~250 outcomes per arm and seed: the mean of six estimates is within ~0.02 of the truth
    assert statistics.mean(lifts) == pytest.approx(0.15, abs=0.05)
    # and the effect is seen at all: the interval excludes 0 in most seeds
    assert with_effect.excluding_zero >= 5


def test_no_effect_is_indistinguishable_from_zero(without_effect: Coverage) -> None:
    assert without_effect.covered >= 5, without_effect.as_dict()


def test_a_wrong_effect_is_rejected(without_effect: Coverage) -> None:
    """The same intervals, asked whether they hold 0.15 when nothing was planted: they must
    not (else the coverage above would pass whatever the measurement)."""
    wrong = sum(
        1
        for r in without_effect.runs
        if r.overall.low is not None
        and r.overall.high is not None
        and r.overall.low <= 0.15 <= r.overall.high
    )
    assert wrong <= 1


def test_the_simulation_answers_every_arm(with_effect: Coverage) -> None:
    run = with_effect.runs[0]
    row = run.overall
    assert row.treated.n > 100 and row.holdout.n > 100
    assert run.decisions >= row.treated.n + row.holdout.n
    assert 0 < run.answered < run.decisions
    # every answer reaches the core: none is taken for a repeat of another event
    assert all(r.duplicates == 0 for r in with_effect.runs)


def test_each_outcome_is_exactly_what_the_customer_did(with_effect: Coverage) -> None:
    """Per outcome, not only on average: converted exactly when the simulated customer
    answered that decision (their own purchases in the window were dropped)."""
    for run in with_effect.runs:
        assert run.outcomes
        for o in run.outcomes:
            assert o["converted"] == run.answers[str(o["trigger_id"])], o
