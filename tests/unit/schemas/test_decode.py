"""Decoders: every limit gives its reason code, dead letters are lossless and deterministic."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from schemas import (
    EXAMPLES,
    DeadLetter,
    DeadLetterReason,
    Interaction,
    Limits,
    Purchase,
    SourceRef,
    dead_letter,
    decode_interaction,
    decode_purchase,
    parse_output,
    to_json_bytes,
)
from schemas.examples import UNSUPPORTED_PAYLOAD, UNSUPPORTED_SOURCE
from tests.unit.schemas.support import ISOURCE, NOW, SOURCE

R = DeadLetterReason


def purchase(**changes: Any) -> bytes:
    return orjson.dumps({**EXAMPLES["purchase"], **changes})


def interaction(**changes: Any) -> bytes:
    return orjson.dumps({**EXAMPLES["interaction"], **changes})


def rejected(raw: bytes | None, limits: Limits | None = None) -> DeadLetter:
    result = decode_purchase(raw, SOURCE, now=NOW, limits=limits or Limits())
    assert isinstance(result, DeadLetter), result
    assert parse_output(to_json_bytes(result)) == result
    return result


def rejected_interaction(raw: bytes, limits: Limits | None = None) -> DeadLetter:
    result = decode_interaction(raw, ISOURCE, now=NOW, limits=limits or Limits())
    assert isinstance(result, DeadLetter), result
    return result


def test_dead_letter_example_is_what_the_decoder_produces() -> None:
    topic, partition, offset, key = UNSUPPORTED_SOURCE
    result = decode_purchase(UNSUPPORTED_PAYLOAD, SourceRef(topic, partition, offset, key), now=NOW)
    assert result == parse_output(orjson.dumps(EXAMPLES["dead_letter"]))


def test_unsupported_schema_version() -> None:
    letter = rejected(purchase(schema_version=2))
    assert letter.reason_code is R.UNSUPPORTED_SCHEMA_VERSION
    assert "schema_version 2 is newer than this worker understands (max 1)" in letter.reason
    assert letter.event_schema_version == 2
    assert (letter.customer_id, letter.event_id) == ("c-1042", "evt-7f3a9c21")


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None, 2**40])
def test_malformed_schema_version_is_invalid(version: object) -> None:
    letter = rejected(purchase(schema_version=version))
    assert letter.reason_code is R.INVALID_EVENT
    assert "schema_version" in letter.reason


def test_payload_too_large() -> None:
    raw = purchase(note="x" * 70_000)
    letter = rejected(raw)
    assert letter.reason_code is R.PAYLOAD_TOO_LARGE
    assert str(len(raw)) in letter.reason
    assert base64.b64decode(letter.payload_b64) == raw
    assert not letter.payload_truncated


def test_huge_payload_is_truncated_but_identifiable() -> None:
    raw = b"{" + b" " * 5_000 + b"}"
    letter = rejected(raw, Limits(max_payload_bytes=1_000, max_dead_letter_payload_bytes=100))
    assert letter.reason_code is R.PAYLOAD_TOO_LARGE
    assert letter.payload_truncated
    assert base64.b64decode(letter.payload_b64) == raw[:100]
    assert letter.payload_size == len(raw)
    assert letter.payload_sha256 == hashlib.sha256(raw).hexdigest()


def test_non_utf8_payload_is_kept_losslessly() -> None:
    raw = b'{"event_id": "e\xff\xfe", "amount": 1}\x80'
    letter = rejected(raw)
    assert letter.reason_code is R.NOT_UTF8
    assert "byte 0xff at offset 15" in letter.reason
    assert base64.b64decode(letter.payload_b64) == raw
    assert letter.payload_text is None
    assert letter.source_key_b64 is not None
    assert base64.b64decode(letter.source_key_b64) == SOURCE.key


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"   \n", "empty"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
        (b'{"a": "\\ud800"}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
    ],
)
def test_invalid_json(raw: bytes | None, words: str) -> None:
    letter = rejected(raw)
    assert letter.reason_code is R.INVALID_JSON
    assert words in letter.reason


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"purchase"', "got a string"),
        (purchase(event_id=None), "event_id"),
        (purchase(customer_id=""), "customer_id"),
        (purchase(customer_id="c" * 129), "customer_id"),
        (purchase(customer_id="c-1042 "), "leading/trailing spaces"),
        (purchase(order_id="o\x00"), "control characters"),
        (purchase(currency="eur"), "ISO 4217"),
        (purchase(type="return"), "type"),
        (purchase(amount="12.34567"), "decimal places"),
        (purchase(line_items=[{"sku": "a", "quantity": 0}]), "line_items.0.quantity"),
    ],
)
def test_invalid_event(raw: bytes, words: str) -> None:
    letter = rejected(raw)
    assert letter.reason_code is R.INVALID_EVENT
    assert words in letter.reason
    assert "schemas/json/purchase.schema.json" in letter.reason
    assert letter.errors


def test_missing_fields_are_listed_and_bounded() -> None:
    letter = rejected(b"{}")
    assert letter.reason_code is R.INVALID_EVENT
    assert "event_id: is required" in letter.reason
    assert "(and 3 more)" in letter.reason
    assert [e.field for e in letter.errors] == [
        "event_id",
        "customer_id",
        "occurred_at",
        "order_id",
        "amount",
        "currency",
    ]


def test_naive_timestamp_is_rejected() -> None:
    letter = rejected(purchase(occurred_at="2024-05-14T18:32:07"))
    assert letter.reason_code is R.INVALID_EVENT
    assert "occurred_at: has no timezone offset" in letter.reason
    assert letter.event_time is None
    assert letter.customer_id == "c-1042"


def test_epoch_number_timestamp_is_rejected() -> None:
    letter = rejected(purchase(occurred_at=1_715_704_327))
    assert letter.reason_code is R.INVALID_EVENT
    assert "epoch numbers are not accepted" in letter.reason


def test_timestamp_before_earliest() -> None:
    letter = rejected(purchase(occurred_at="1989-12-31T23:59:59Z"))
    assert letter.reason_code is R.TIMESTAMP_OUT_OF_RANGE
    assert "before the earliest accepted time 1990-01-01" in letter.reason
    assert letter.event_time == datetime(1989, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_earliest_is_configurable() -> None:
    old = purchase(occurred_at="1985-03-01T00:00:00Z")
    limits = Limits(earliest=datetime(1980, 1, 1, tzinfo=UTC))
    assert isinstance(decode_purchase(old, SOURCE, now=NOW, limits=limits), Purchase)


def test_timestamp_in_the_far_future() -> None:
    late_ok = (NOW + timedelta(hours=23)).isoformat()
    assert isinstance(decode_purchase(purchase(occurred_at=late_ok), SOURCE, now=NOW), Purchase)
    letter = rejected(purchase(occurred_at=(NOW + timedelta(days=3)).isoformat()))
    assert letter.reason_code is R.TIMESTAMP_OUT_OF_RANGE
    assert "3 days ahead of the worker clock" in letter.reason
    assert "allowed 1 day" in letter.reason


def test_future_check_uses_the_now_argument() -> None:
    raw = purchase(occurred_at="2030-01-01T00:00:00Z")
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert isinstance(decode_purchase(raw, SOURCE, now=later), Purchase)
    assert isinstance(decode_purchase(raw, SOURCE, now=NOW), DeadLetter)


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_extreme_timestamps(stamp: str) -> None:
    letter = rejected(purchase(occurred_at=stamp))
    assert letter.reason_code is R.TIMESTAMP_OUT_OF_RANGE


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": 1_000_000.01}, "amount"),
        ({"amount": "1e7"}, "amount"),
        ({"margin": "-2000000"}, "margin"),
        ({"cost": 5_000_000}, "cost"),
        ({"line_items": [{"sku": "a", "unit_price": 2e6}]}, "line_items.0.unit_price"),
    ],
)
def test_amount_above_limit(changes: dict[str, Any], field: str) -> None:
    letter = rejected(purchase(**changes))
    assert letter.reason_code is R.AMOUNT_OUT_OF_RANGE
    assert letter.reason.startswith(field)
    assert letter.customer_id == "c-1042"


def test_amount_limit_is_configurable() -> None:
    raw = purchase(amount=50, margin=None, line_items=None)
    assert isinstance(rejected(raw, Limits(max_amount=Decimal(10))), DeadLetter)


@pytest.mark.parametrize(
    "token", [b"-1", b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"NaN"', b"1e16"]
)
def test_amount_out_of_range_or_not_a_number(token: bytes) -> None:
    raw = purchase(amount="@@").replace(b'"@@"', token)
    letter = rejected(raw)
    assert letter.reason_code is R.AMOUNT_OUT_OF_RANGE, letter.reason
    assert letter.reason.startswith("amount out of range: amount")


def test_negative_amount_points_at_refunds() -> None:
    letter = rejected(purchase(amount=-5))
    assert 'refunds are type "refund"' in letter.reason


def test_amount_and_other_errors_are_an_invalid_event() -> None:
    letter = rejected(purchase(amount=-5, currency="x"))
    assert letter.reason_code is R.INVALID_EVENT


def test_properties_size_limit() -> None:
    letter = rejected_interaction(interaction(properties={"blob": "x" * 5_000}))
    assert letter.reason_code is R.INVALID_EVENT
    assert "over the limit of 4096" in letter.reason
    limits = Limits(max_properties_bytes=10_000)
    raw = interaction(properties={"blob": "x" * 5_000})
    assert isinstance(decode_interaction(raw, ISOURCE, now=NOW, limits=limits), Interaction)


def test_properties_key_count_limit() -> None:
    letter = rejected_interaction(interaction(properties={f"k{i}": i for i in range(65)}))
    assert letter.reason_code is R.INVALID_EVENT
    assert "properties" in letter.reason


@pytest.mark.parametrize(
    ("properties", "words"),
    [
        (b'{"a": {"b": [{"c": [1]}]}}', "nested deeper than 4"),
        (b'{"a": [1, NaN]}', "NaN and Infinity"),
        (b'{"a": 123456789012345678901234567890}', "64-bit"),
    ],
)
def test_property_values(properties: bytes, words: str) -> None:
    raw = interaction(properties="@@").replace(b'"@@"', properties)
    letter = rejected_interaction(raw)
    assert letter.reason_code is R.INVALID_EVENT
    assert words in letter.reason
    assert letter.errors[0].field.startswith("properties.a")


def test_interaction_type_must_be_snake_case() -> None:
    letter = rejected_interaction(interaction(type="Page View"))
    assert letter.reason_code is R.INVALID_EVENT
    assert "lower_snake_case" in letter.reason


def test_decoding_is_deterministic() -> None:
    raw = purchase(amount=-1, currency="x", occurred_at="yesterday")
    assert rejected(raw) == rejected(raw)
    assert to_json_bytes(rejected(raw)) == to_json_bytes(rejected(raw))


def test_accepts_bytearray_and_memoryview() -> None:
    raw = purchase()
    assert isinstance(decode_purchase(bytearray(raw), SOURCE, now=NOW), Purchase)
    assert isinstance(decode_purchase(memoryview(raw), SOURCE, now=NOW), Purchase)


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        decode_purchase(purchase(), SOURCE, now=datetime(2024, 6, 1))


def test_unexpected_exception_becomes_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(data: bytes) -> Purchase:
        raise RuntimeError("boom")

    monkeypatch.setattr(Purchase, "model_validate_json", explode)
    letter = rejected(purchase())
    assert letter.reason_code is R.INTERNAL_ERROR
    assert "RuntimeError: boom" in letter.reason
    assert letter.customer_id == "c-1042"


def test_dead_letter_helper_for_late_events() -> None:
    raw = purchase()
    event = decode_purchase(raw, SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    letter = dead_letter(
        SOURCE,
        raw,
        R.LATE_EVENT,
        "older than the allowed lateness",
        event=event,
        model_version="m-7",
    )
    assert letter.id == "dl:rfm.purchases:3:1234"
    assert letter.reason_code is R.LATE_EVENT
    assert letter.event_time == event.occurred_at
    assert (letter.customer_id, letter.event_id, letter.model_version) == (
        "c-1042",
        "evt-7f3a9c21",
        "m-7",
    )


def test_dead_letter_helper_extracts_from_raw_and_never_raises() -> None:
    letter = dead_letter(ISOURCE, interaction(), R.PROCESSING_ERROR, "core failed: \ud800 x" * 500)
    assert letter.customer_id == "c-1042"
    assert len(letter.reason) <= 2048
    assert parse_output(to_json_bytes(letter)) == letter
    odd = dead_letter(ISOURCE, "not bytes", R.PROCESSING_ERROR, "")  # type: ignore[arg-type]
    assert odd.reason and odd.payload_size == 0
    assert parse_output(to_json_bytes(odd)) == odd


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="aware"):
        Limits(earliest=datetime(1990, 1, 1))
    with pytest.raises(ValueError, match="max_amount"):
        Limits(max_amount=Decimal(10) ** 16)


@pytest.mark.parametrize(
    ("field", "meant"),
    [("kind", "type"), ("is_refund", "type"), ("schemaVersion", "schema_version")],
)
def test_lookalikes_of_defaulted_fields_are_refused(field: str, meant: str) -> None:
    letter = rejected(purchase(**{field: "refund"}))
    assert letter.reason_code is R.INVALID_EVENT
    assert f"unknown field {field!r} looks like {meant!r}" in letter.reason


def test_lookalike_of_a_required_field_is_harmless() -> None:
    result = decode_interaction(interaction(kind="mobile"), ISOURCE, now=NOW)
    assert isinstance(result, Interaction)
    assert result.model_extra == {"kind": "mobile"}


def test_float_artefacts_are_refused() -> None:
    letter = rejected(purchase(amount=0.1 + 0.2))
    assert letter.reason_code is R.INVALID_EVENT
    assert "amount: must have at most 4 decimal places" in letter.reason
