"""Stored offer decisions read back exactly as written, and refuse to read back garbage."""

from __future__ import annotations

import dataclasses
from typing import get_args

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.adapters.offer_store import decision_from_json, decision_to_json, keep_ms_for
from streams.domain.facts import MS_PER_DAY
from streams.domain.offers import Decision, OfferDecision
from streams.domain.rules import load_rules

# orjson refuses lone surrogates (not UTF-8), which no id or reason can contain anyway
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
EPOCH_MS = st.integers(min_value=-(2**53), max_value=2**53)

DECISIONS = st.builds(
    OfferDecision,
    id=TEXT,
    customer_id=TEXT,
    trigger_id=TEXT,
    at_ms=EPOCH_MS,
    decision=st.sampled_from(get_args(Decision)),
    offer_code=st.none() | TEXT,
    channel=st.none() | TEXT,
    reason=TEXT,
    quadrant=TEXT,
    expires_at_ms=st.none() | EPOCH_MS,
)


@given(DECISIONS)
def test_round_trip(decision: OfferDecision) -> None:
    assert decision_from_json(decision_to_json(decision)) == decision
    assert decision_from_json(decision_to_json(decision).decode()) == decision


def _sample() -> OfferDecision:
    return OfferDecision(
        id="offer:c1:7",
        customer_id="c1",
        trigger_id="c1:7",
        at_ms=1_700_000_000_000,
        decision="offer",
        offer_code="TF-WINBACK-VIP",
        channel="email",
        reason="r",
        quadrant="true_friend",
        expires_at_ms=1_700_000_000_000 + 30 * MS_PER_DAY,
    )


def test_unknown_fields_are_ignored() -> None:
    raw = orjson.loads(decision_to_json(_sample()))
    raw["added_later"] = 1
    assert decision_from_json(orjson.dumps(raw)) == _sample()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decision", "maybe"),
        ("at_ms", "1700000000000"),
        ("at_ms", True),
        ("id", None),
        ("offer_code", 3),
        ("expires_at_ms", 1.5),
    ],
)
def test_wrong_types_are_refused(field: str, value: object) -> None:
    raw = dataclasses.asdict(_sample()) | {field: value}
    with pytest.raises(ValueError, match=field if field != "decision" else "maybe"):
        decision_from_json(orjson.dumps(raw))


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        decision_from_json(b"[]")


def test_history_kept_covers_cooldown_and_cap_window() -> None:
    offers = load_rules().offers
    kept = keep_ms_for(offers, slack_days=0)
    assert kept == max(offers.cooldown_days, offers.cap_days) * MS_PER_DAY
    assert keep_ms_for(offers) > kept
