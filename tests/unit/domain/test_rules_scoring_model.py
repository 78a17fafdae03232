"""Rules validation, score hysteresis, segments, and the versioned model."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.domain.model import Model, calibrate, default_model
from streams.domain.rules import Rules, load_rules
from streams.domain.scoring import (
    ascending_score,
    hysteresis_cuts,
    recency_cuts,
    recency_drop_after_days,
    recency_score,
)
from streams.domain.segments import quadrant_of, rfm_segment
from tests.unit.domain.logs import T0, customer_logs, run_log

CUTS = (10.0, 20.0, 30.0, 40.0)


def _default_rules_data() -> dict[str, object]:
    text = resources.files("streams.domain").joinpath("rules.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_default_rules_load() -> None:
    rules = load_rules()
    assert rules.segments[0].name == "champions"
    assert rules.windows.short_buckets == 13


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"windows": {"short_days": 90}}, "multiple of bucket_days"),
        ({"drift": {"expected_watch": 0.05}}, "must fall"),
        ({"segments": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"segments": [{"name": "Bad Name"}]}, "pattern"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_say_what_is_wrong(patch: dict[str, object], message: str) -> None:
    data = _default_rules_data()
    data.update(patch)
    with pytest.raises(ValidationError, match=message):
        Rules.model_validate(data)


@given(st.floats(0, 100, allow_nan=False))
def test_scores_without_hysteresis_count_cut_points(value: float) -> None:
    assert ascending_score(value, hysteresis_cuts(CUTS, None, 0.1)) == 1 + sum(
        value > c for c in CUTS
    )
    assert recency_score(value, recency_cuts(CUTS, None, 0.1, 1.0)) == 5 - sum(
        value > c for c in CUTS
    )


@given(st.integers(1, 5), st.floats(0, 100, allow_nan=False))
def test_hysteresis_keeps_the_score_near_a_boundary(current: int, value: float) -> None:
    """Inside the margin of its own boundaries the current score is kept; far outside it moves."""
    raw = ascending_score(value, hysteresis_cuts(CUTS, None, 0.1))
    held = ascending_score(value, hysteresis_cuts(CUTS, current, 0.1))
    assert min(raw, current) <= held <= max(raw, current)
    if all(abs(value - c) > 0.1 * c for c in CUTS):
        assert held == raw


def test_recency_drop_is_the_raised_boundary() -> None:
    cuts = recency_cuts(CUTS, 5, 0.1, 1.0)
    after = recency_drop_after_days(cuts, 5)
    assert after is not None
    assert after == pytest.approx(11.0)  # 10 days + max(10 %, 1 day)
    assert recency_score(after, cuts) == 5
    assert recency_score(after + 1e-9, cuts) == 4
    assert recency_drop_after_days(cuts, 1) is None


def test_segment_map_and_quadrants() -> None:
    rules = load_rules()
    assert rfm_segment((5, 5, 1), rules) == "champions"
    assert rfm_segment((1, 1, 5), rules) == "lost"
    assert rfm_segment((2, 5, 3), rules) == "cant_lose_them"
    assert quadrant_of(loyal=True, profitable=True) == "true_friend"
    assert quadrant_of(loyal=False, profitable=True) == "butterfly"
    assert quadrant_of(loyal=True, profitable=False) == "barnacle"
    assert quadrant_of(loyal=False, profitable=False) == "stranger"


def test_every_score_triple_has_a_segment_in_the_default_map() -> None:
    rules = load_rules()
    names = {s.name for s in rules.segments}
    for r in range(1, 6):
        for f in range(1, 6):
            assert rfm_segment((r, f, 3), rules) in names


def test_model_round_trips_and_is_versioned_by_content() -> None:
    model = default_model()
    again = Model.from_json(model.to_json())
    assert again == model
    assert again.version == model.version
    tampered = model.to_dict()
    tampered["profit_split_cents"] = 1.0
    with pytest.raises(ValueError, match="does not match its content"):
        Model.from_dict(tampered)


@given(customer_logs(max_customers=6, max_events=60))
def test_calibration_gives_ordered_cut_points(facts: list[object]) -> None:
    run = run_log(facts, end_ms=None)  # type: ignore[arg-type]
    states = list(run.store.states.values())
    if not any(s.first_ms is not None for s in states):
        with pytest.raises(ValueError, match="no customer has purchased"):
            calibrate(states, T0 + 500 * 86_400_000, load_rules())
        return
    model = calibrate(states, T0 + 500 * 86_400_000, load_rules())
    assert model.population == sum(s.first_ms is not None for s in states)
    assert list(model.recency_cuts_days) == sorted(model.recency_cuts_days)
    assert model.version.startswith("m-")
