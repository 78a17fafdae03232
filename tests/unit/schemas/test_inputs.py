"""Input models: the examples, the documented decisions and the money/time helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from schemas import (
    EXAMPLES,
    Interaction,
    Purchase,
    amount_cents,
    decode_interaction,
    decode_purchase,
    example_json,
    margin_cents,
    occurred_at_ms,
    to_cents,
)
from tests.unit.schemas.support import ISOURCE, NOW, SOURCE


def purchase(**changes: object) -> bytes:
    return orjson.dumps({**EXAMPLES["purchase"], **changes})


def test_purchase_examples_decode() -> None:
    for name in ("purchase", "refund"):
        event = decode_purchase(example_json(name), SOURCE, now=NOW)
        assert isinstance(event, Purchase), event
        assert event.type == name


def test_interaction_example_decodes() -> None:
    event = decode_interaction(example_json("interaction"), ISOURCE, now=NOW)
    assert isinstance(event, Interaction), event
    assert event.properties["sku"] == "SNEAKER-WHT-42"


def test_purchase_example_values() -> None:
    event = decode_purchase(example_json("purchase"), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert event.amount == Decimal("129.9")
    assert amount_cents(event) == 12_990
    assert margin_cents(event) == 4_120
    assert event.line_items is not None
    assert [item.quantity for item in event.line_items] == [2, 1]


def test_zero_amount_purchase_is_a_purchase() -> None:
    event = decode_purchase(purchase(amount=0), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert event.type == "purchase"
    assert amount_cents(event) == 0


def test_defaults_when_absent() -> None:
    data = dict(EXAMPLES["purchase"])
    del data["schema_version"], data["type"]
    event = decode_purchase(orjson.dumps(data), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert (event.schema_version, event.type) == (1, "purchase")


def test_unknown_fields_are_ignored() -> None:
    event = decode_purchase(purchase(coupon="SPRING", store={"id": 4}), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert event.model_extra == {"coupon": "SPRING", "store": {"id": 4}}


def test_amount_as_string_is_exact() -> None:
    event = decode_purchase(purchase(amount="0.1", margin=None), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert event.amount == Decimal("0.1")


def test_unknown_interaction_type_is_accepted() -> None:
    raw = orjson.dumps({**EXAMPLES["interaction"], "type": "loyalty_card_scan"})
    event = decode_interaction(raw, ISOURCE, now=NOW)
    assert isinstance(event, Interaction)
    assert event.type == "loyalty_card_scan"


@pytest.mark.parametrize(
    ("value", "cents"),
    [("0.125", 12), ("0.135", 14), ("19.999", 2_000), ("0.0049", 0), ("1000000", 100_000_000)],
)
def test_cents_round_half_even(value: str, cents: int) -> None:
    assert to_cents(Decimal(value)) == cents


def test_margin_from_cost() -> None:
    event = decode_purchase(purchase(margin=None, cost="100.005"), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert margin_cents(event) == 2_990  # 129.90 - 100.005 = 29.895 -> 29.90 (half-even)


def test_margin_wins_over_cost() -> None:
    event = decode_purchase(purchase(margin="-3.50", cost="1"), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert margin_cents(event) == -350


def test_no_margin_no_cost() -> None:
    event = decode_purchase(purchase(margin=None), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert margin_cents(event) is None


def test_occurred_at_ms_is_exact_and_utc() -> None:
    event = decode_purchase(
        purchase(occurred_at="2024-05-14T18:32:07.123999+02:00"), SOURCE, now=NOW
    )
    assert isinstance(event, Purchase)
    expected = datetime(2024, 5, 14, 16, 32, 7, 123_000, tzinfo=UTC)
    assert occurred_at_ms(event) == int(expected.timestamp()) * 1000 + 123
    assert event.occurred_at.utcoffset() == timedelta(hours=2)  # the producer's offset is kept


def test_models_are_immutable() -> None:
    event = decode_purchase(example_json("purchase"), SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    with pytest.raises(ValueError, match="frozen"):
        event.amount = Decimal(1)  # type: ignore[misc]


def test_python_construction_needs_aware_datetime() -> None:
    fields = {"event_id": "e", "customer_id": "c", "type": "visit"}
    Interaction(occurred_at=datetime(2024, 1, 1, tzinfo=UTC), **fields)
    with pytest.raises(ValueError, match="timezone"):
        Interaction(occurred_at=datetime(2024, 1, 1), **fields)


def test_unknown_fields_may_hold_any_json() -> None:
    raw = example_json("purchase").replace(b"{", b'{"x": NaN, "y": 1234567890123456789012, ', 1)
    event = decode_purchase(raw, SOURCE, now=NOW)
    assert isinstance(event, Purchase)
    assert event.model_extra is not None
    assert sorted(event.model_extra) == ["x", "y"]
