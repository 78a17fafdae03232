"""Outputs written without validation are the validated outputs, byte for byte.

The Processor writes segment changes and churn alerts straight to JSON
(``streams.convert.segment_change_json`` / ``churn_alert_json``) instead of building and
validating the pydantic models first. These tests run many logs through the core and check,
for every output, that the bytes equal the validated path's and that they parse back as the
contract's models (the models schemas/json is exported from) to the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings

from bench.bench_core import synthetic_log
from schemas import ChurnAlert, SegmentChange, parse_output, to_json_bytes
from streams.convert import churn_alert, churn_alert_json, segment_change, segment_change_json
from streams.domain.events import ChurnRiskRaised, OutputEvent, SegmentChanged
from streams.domain.rules import Rules, load_rules
from tests.unit.domain.logs import Fact, customer_logs, rules_with_lateness, run_log

RULES = load_rules()


def assert_identical(outputs: list[OutputEvent], rules: Rules) -> tuple[int, int]:
    changes = alerts = 0
    for e in outputs:
        model: SegmentChange | ChurnAlert
        if isinstance(e, SegmentChanged):
            fast, model = segment_change_json(e, rules), segment_change(e, rules)
            changes += 1
        else:
            assert isinstance(e, ChurnRiskRaised)
            fast, model = churn_alert_json(e, rules), churn_alert(e, rules)
            alerts += 1
        assert fast == to_json_bytes(model), e
        parsed = parse_output(fast)
        assert parsed == model
        assert to_json_bytes(parsed) == fast
    return changes, alerts


@settings(max_examples=150, deadline=None)
@given(customer_logs(max_customers=5, max_events=60))
def test_hand_written_json_is_the_validated_json(facts: list[Fact]) -> None:
    for rules in (RULES, rules_with_lateness()):
        run = run_log(facts, rules=rules, end_ms=facts[-1].at_ms + 400 * 86_400_000)
        assert_identical(run.outputs, rules)


def test_a_year_of_a_thousand_customers_gives_identical_bytes() -> None:
    """Every kind of output, causes and severities, None and non-None profile fields."""
    log = synthetic_log(20_000, 1_000, 0.3, seed=11)
    run = run_log(list(log), rules=RULES, end_ms=log[-1].at_ms + 200 * 86_400_000)
    changes, alerts = assert_identical(run.outputs, RULES)
    assert changes > 1_000
    assert alerts > 500
    causes = {(type(e).__name__, e.cause) for e in run.outputs}
    assert {("SegmentChanged", "time"), ("SegmentChanged", "purchase")} <= causes
    assert {e.severity for e in run.outputs if isinstance(e, ChurnRiskRaised)} == {
        "watch",
        "warning",
        "critical",
    }


def test_a_non_finite_float_is_refused_as_before() -> None:
    """The models refuse NaN; the direct path must not quietly write null instead."""
    log = synthetic_log(3_000, 100, 0.5, seed=3)
    run = run_log(list(log), rules=RULES, end_ms=log[-1].at_ms + 200 * 86_400_000)
    change = next(e for e in run.outputs if isinstance(e, SegmentChanged))
    alert = next(e for e in run.outputs if isinstance(e, ChurnRiskRaised))
    broken_profile = replace(change.profile, tenure_days=math.nan)
    with pytest.raises(ValueError, match="finite"):
        segment_change_json(replace(change, profile=broken_profile), RULES)
    with pytest.raises(ValueError, match="finite"):
        churn_alert_json(replace(alert, p_alive=math.nan), RULES)
    assert isinstance(parse_output(segment_change_json(change, RULES)), SegmentChange)
    assert isinstance(parse_output(churn_alert_json(alert, RULES)), ChurnAlert)
