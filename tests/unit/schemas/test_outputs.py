"""Output events: examples are valid and every output survives a JSON round trip unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from schemas import (
    EXAMPLES,
    ChurnAlert,
    CustomerErased,
    DeadLetter,
    OutputEvent,
    RetentionOffer,
    SegmentChange,
    parse_output,
    to_json_bytes,
)
from tests.unit.schemas.support import outputs

KINDS = {
    "segment_change": SegmentChange,
    "churn_alert": ChurnAlert,
    "retention_offer": RetentionOffer,
    "dead_letter": DeadLetter,
    "customer_erased": CustomerErased,
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_output_examples_parse(name: str) -> None:
    event = parse_output(orjson.dumps(EXAMPLES[name]))
    assert type(event) is KINDS[name]
    assert parse_output(to_json_bytes(event)) == event


@settings(max_examples=300, deadline=None)
@given(outputs)
def test_round_trip(event: OutputEvent) -> None:
    raw = to_json_bytes(event)
    assert parse_output(raw) == event
    assert parse_output(raw.decode()) == event
    assert to_json_bytes(parse_output(raw)) == raw


def test_type_comes_first_and_times_are_utc() -> None:
    data = dict(EXAMPLES["churn_alert"], event_time="2024-07-25T01:00:00+02:00")
    event = parse_output(orjson.dumps(data))
    assert isinstance(event, ChurnAlert)
    assert event.event_time == datetime(2024, 7, 24, 23, tzinfo=UTC)
    assert event.event_time.utcoffset() == timedelta(0)
    assert to_json_bytes(event).startswith(b'{"type":"churn_alert","schema_version":1,')


def test_python_built_times_are_normalised() -> None:
    base = parse_output(orjson.dumps(EXAMPLES["segment_change"]))
    paris = datetime(2024, 7, 25, 1, tzinfo=timezone(timedelta(hours=2)))
    moved = SegmentChange.model_validate({**base.model_dump(), "event_time": paris})
    assert to_json_bytes(moved) == to_json_bytes(base)


def test_offer_code_matches_decision() -> None:
    data = EXAMPLES["retention_offer"]
    with pytest.raises(ValidationError, match="offer_code"):
        parse_output(orjson.dumps({**data, "offer_code": None}))
    with pytest.raises(ValidationError, match="offer_code"):
        parse_output(orjson.dumps({**data, "decision": "capped"}))
    no_offer = parse_output(orjson.dumps({**data, "decision": "holdout", "offer_code": None}))
    assert isinstance(no_offer, RetentionOffer)


def test_outputs_refuse_nan_and_bad_probabilities() -> None:
    data = EXAMPLES["churn_alert"]
    for bad in (1.5, -0.1):
        with pytest.raises(ValidationError):
            parse_output(orjson.dumps({**data, "p_alive": bad}))
    base = parse_output(orjson.dumps(data))
    with pytest.raises(ValidationError):
        ChurnAlert.model_validate({**base.model_dump(), "elapsed_days": float("nan")})


def test_unknown_output_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_output(orjson.dumps({**EXAMPLES["churn_alert"], "type": "coupon"}))


def test_consumers_ignore_added_fields() -> None:
    event = parse_output(orjson.dumps({**EXAMPLES["segment_change"], "new_field": 1}))
    assert isinstance(event, SegmentChange)
