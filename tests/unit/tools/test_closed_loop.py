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
    """The same intervals, asked whether they hold 0.25 when nothing was planted: they must
    not (else the coverage above would pass whatever the measurement). With ~125 outcomes
    per arm the interval is about ±0.11 wide, so 0.15 itself is too close to 0 to reject."""
    wrong = sum(
        1
        for r in without_effect.runs
        if r.overall.low is not None
        and r.overall.high is not None
        and r.overall.low <= 0.25 <= r.overall.high
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


def test_each_outcome_is_what_the_customer_did(with_effect: Coverage) -> None:
    """Per outcome, not only on average: every answer converts its outcome, and an outcome
    converts without one only when the customer's own purchase fell within the allowed
    lateness (5 s) after the decision, before the simulation could see it."""
    outcomes = leaks = 0
    for run in with_effect.runs:
        assert run.outcomes
        for o in run.outcomes:
            outcomes += 1
            answered = run.answers[str(o["trigger_id"])]
            if answered:
                assert o["converted"], o
            elif o["converted"]:
                leaks += 1
                days = o["days_to_first_purchase"]
                assert isinstance(days, float) and days * 86_400 <= 10, o
    assert leaks <= outcomes // 100
