"""Property tests: whatever arrives on an input topic, the decoders answer and never raise."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Interaction, Purchase, decode_interaction, decode_purchase, to_json_bytes
from tests.unit.schemas.support import (
    ISOURCE,
    NOW,
    SOURCE,
    any_json,
    check_outcome,
    interaction_dicts,
    purchase_dicts,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SPECIAL_TOKENS = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"-0.0", b"1e-999", b"-1",
    b"123456789012345678901234567890.123456789", b"99999999999999999999999999999999999",
    b"true", b"null", b"[]", b"{}", b'"\\u0000"', b'"\\ud800"', b'"2024-05-01T00:00:00"',
    b'"2024-05-01"', b"1714521600", b'"+275760-09-13T00:00:00Z"', b'"\xff"', b'""',
]  # fmt: skip


def both(raw: bytes) -> None:
    check_outcome(decode_purchase(raw, SOURCE, now=NOW), raw, Purchase, SOURCE)
    check_outcome(decode_interaction(raw, ISOURCE, now=NOW), raw, Interaction, ISOURCE)


@FUZZ
@given(st.binary(max_size=2_000))
def test_random_bytes(raw: bytes) -> None:
    both(raw)


@FUZZ
@given(any_json)
def test_random_json(value: Any) -> None:
    both(json.dumps(value).encode())  # the stdlib writes NaN, Infinity and lone surrogates


EVENT_KEYS = [
    "schema_version", "type", "event_id", "customer_id", "occurred_at", "order_id", "amount",
    "currency", "margin", "cost", "line_items", "channel", "properties",
]  # fmt: skip


@FUZZ
@given(st.dictionaries(st.sampled_from(EVENT_KEYS), any_json))
def test_random_json_with_the_right_keys(value: dict[str, Any]) -> None:
    both(json.dumps(value).encode())


@FUZZ
@given(purchase_dicts())
def test_valid_purchases_are_accepted(data: dict[str, Any]) -> None:
    raw = orjson.dumps(data)
    result = decode_purchase(raw, SOURCE, now=NOW)
    assert isinstance(result, Purchase), result
    check_outcome(result, raw, Purchase, SOURCE)


@FUZZ
@given(interaction_dicts())
def test_valid_interactions_are_accepted(data: dict[str, Any]) -> None:
    raw = orjson.dumps(data)
    result = decode_interaction(raw, ISOURCE, now=NOW)
    assert isinstance(result, Interaction), result
    check_outcome(result, raw, Interaction, ISOURCE)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event with one thing broken, the way real producers break them."""
    data = dict(draw(purchase_dicts() | interaction_dicts()))
    key = draw(st.sampled_from(sorted(data)))
    how = draw(st.integers(0, 9))
    if how == 0:
        del data[key]
    elif how == 1:
        data[key] = draw(any_json)
    elif how == 2:
        data[key] = "x" * draw(st.integers(100, 70_000))
    elif how == 3:
        data[key] = "@@"
        token = draw(st.sampled_from(_SPECIAL_TOKENS))
        return json.dumps(data).encode().replace(b'"@@"', token, 1)
    elif how == 4:
        data[draw(st.text(max_size=20))] = draw(any_json)
    elif how == 5:
        data["schema_version"] = draw(st.integers() | st.floats() | st.booleans())
    elif how == 6:
        data["occurred_at"] = draw(
            st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
        )
    elif how == 7:
        raw = orjson.dumps(data)
        return raw[: draw(st.integers(0, len(raw)))]
    elif how == 8:
        raw = orjson.dumps(data)
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    else:
        return orjson.dumps(draw(st.sampled_from([[data], {"event": data}, [], "x"])))
    return json.dumps(data).encode()


@FUZZ
@given(mutated())
def test_mutations_of_valid_events(raw: bytes) -> None:
    both(raw)


@FUZZ
@given(mutated())
def test_mutations_are_deterministic(raw: bytes) -> None:
    first = decode_purchase(raw, SOURCE, now=NOW)
    second = decode_purchase(raw, SOURCE, now=NOW)
    assert to_json_bytes(first) == to_json_bytes(second)  # not ==: unknown fields may hold NaN
