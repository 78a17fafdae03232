"""Shared fixtures and hypothesis strategies for the wire-contract tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas import (
    DEFAULT_LIMITS,
    ChurnAlert,
    DeadLetter,
    DeadLetterReason,
    FieldError,
    Interaction,
    InteractionType,
    ProfileSnapshot,
    Purchase,
    RetentionOffer,
    RfmScores,
    SegmentChange,
    SourceRef,
    decode_interaction,
    decode_purchase,
    parse_output,
    to_json_bytes,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SOURCE = SourceRef("rfm.purchases", 3, 1_234, b"c-1")
ISOURCE = SourceRef("rfm.interactions", 0, 7, None)

# --- building blocks ----------------------------------------------------------------------

offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def identifiers(max_size: int = 24) -> st.SearchStrategy[str]:
    """Valid ids: printable, no control characters, no whitespace at the ends."""
    printable = st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Z")),
        min_size=1,
        max_size=max_size,
    )
    spaced = st.from_regex(r"[A-Za-z0-9]{1,8}( [A-Za-z0-9._-]{1,8}){1,2}", fullmatch=True)
    return st.one_of(printable, spaced)


def event_times() -> st.SearchStrategy[datetime]:
    """Aware times comfortably inside the default window around ``NOW``."""
    return st.datetimes(
        min_value=datetime(1990, 1, 2), max_value=datetime(2024, 5, 31), timezones=offsets
    )


amounts = st.decimals(
    min_value=0, max_value=1_000_000, places=4, allow_nan=False, allow_infinity=False
)


def wire_amount(value: Decimal) -> st.SearchStrategy[Any]:
    """A decimal as producers send it: a JSON number or a numeric string."""
    return st.sampled_from([str(value), float(value)])


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
)

any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
"""Any JSON value, including NaN/Infinity and integers of any size."""


# --- valid input events in wire form (dicts) ----------------------------------------------


@st.composite
def purchase_dicts(draw: st.DrawFn) -> dict[str, Any]:
    amount = draw(amounts)
    data: dict[str, Any] = {
        "event_id": draw(identifiers()),
        "customer_id": draw(identifiers()),
        "occurred_at": draw(event_times()).isoformat(),
        "order_id": draw(identifiers()),
        "amount": draw(wire_amount(amount)),
        "currency": draw(st.from_regex(r"[A-Z]{3}", fullmatch=True)),
    }
    if draw(st.booleans()):
        data["schema_version"] = 1
    if draw(st.booleans()):
        data["type"] = draw(st.sampled_from(["purchase", "refund"]))
    if draw(st.booleans()):
        margin = draw(st.decimals(min_value=-amount, max_value=amount, places=2))
        data["margin"] = str(margin)
    if draw(st.booleans()):
        data["cost"] = draw(wire_amount(draw(st.decimals(min_value=0, max_value=amount, places=2))))
    if draw(st.booleans()):
        data["line_items"] = [
            {
                "sku": draw(identifiers()),
                "quantity": draw(st.integers(1, 50)),
                "unit_price": str(draw(amounts)),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
    if draw(st.booleans()):
        data["x_producer_note"] = draw(json_scalars)
    return data


@st.composite
def interaction_dicts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from([t.value for t in InteractionType])
        | st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
    )
    data: dict[str, Any] = {
        "event_id": draw(identifiers()),
        "customer_id": draw(identifiers()),
        "occurred_at": draw(event_times()).isoformat(),
        "type": kind,
    }
    if draw(st.booleans()):
        data["channel"] = draw(st.sampled_from(["web", "ios", "android", "email", "store"]))
    if draw(st.booleans()):
        value = st.one_of(
            json_scalars,
            st.lists(json_scalars, max_size=3),
            st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
        )
        data["properties"] = draw(st.dictionaries(identifiers(16), value, max_size=5))
    return data


# --- output events --------------------------------------------------------------------------

times = st.datetimes(
    min_value=datetime(1990, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
labels = identifiers(max_size=20)
non_negative = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
probabilities = st.floats(min_value=0, max_value=1)
causes = st.sampled_from(["purchase", "refund", "interaction", "time", "late_purchase"])

profiles = st.builds(
    ProfileSnapshot,
    first_purchase_at=st.none() | times,
    last_purchase_at=st.none() | times,
    purchase_count=st.integers(0, 10**6),
    repeat_days=st.integers(0, 10**5),
    monetary_window_cents=st.integers(-(10**12), 10**12),
    frequency_window=st.integers(0, 10**5),
    window_days=st.integers(1, 3650),
    mean_order_value_cents=st.none() | st.integers(-(10**9), 10**9),
    avg_days_between_purchases=st.none() | non_negative,
    expected_next_purchase_at=st.none() | times,
    p_alive=st.none() | probabilities,
    churn_risk_band=st.none() | st.sampled_from(["low", "medium", "high"]),
    days_since_last_purchase=st.none() | non_negative,
    engagement=st.none() | st.integers(0, 10**6),
    last_interaction_at=st.none() | times,
    tenure_days=st.none() | non_negative,
)

_common = {
    "id": identifiers(60),
    "customer_id": identifiers(),
    "event_time": times,
    "model_version": labels,
    "cause": causes,
    "profile": profiles,
}

segment_changes = st.builds(
    SegmentChange,
    dimension=st.sampled_from(["rfm_segment", "quadrant"]),
    from_value=st.none() | labels,
    to_value=labels,
    scores=st.builds(
        RfmScores,
        recency=st.integers(1, 5),
        frequency=st.integers(1, 5),
        monetary=st.integers(1, 5),
    ),
    quadrant=labels,
    rfm_segment=labels,
    **_common,
)

churn_alerts = st.builds(
    ChurnAlert,
    severity=st.sampled_from(["watch", "warning", "critical"]),
    p_alive=probabilities,
    elapsed_days=non_negative,
    typical_gap_days=st.none() | non_negative,
    quadrant=labels,
    rfm_segment=labels,
    true_friend_drifting=st.booleans(),
    **_common,
)


@st.composite
def retention_offers(draw: st.DrawFn) -> RetentionOffer:
    decision = draw(st.sampled_from(["offer", "no_offer", "holdout", "capped", "cooldown"]))
    return RetentionOffer(
        offer_code=draw(labels) if decision == "offer" else None,
        decision=decision,
        reason=draw(identifiers(80)),
        quadrant=draw(labels),
        trigger_id=draw(identifiers(60)),
        expires_at=draw(st.none() | times),
        channel=draw(st.none() | labels),
        **{name: draw(strategy) for name, strategy in _common.items()},
    )


dead_letters = st.builds(
    DeadLetter,
    id=identifiers(60),
    reason_code=st.sampled_from(list(DeadLetterReason)),
    reason=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200),
    errors=st.lists(
        st.builds(
            FieldError,
            field=st.text(max_size=30),
            code=st.text(max_size=20),
            message=st.text(max_size=60),
        ),
        max_size=3,
    ).map(tuple),
    source_topic=st.from_regex(r"[a-z.\-]{1,30}", fullmatch=True),
    source_partition=st.integers(0, 1023),
    source_offset=st.integers(0, 2**62),
    source_key_b64=st.none() | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
    payload_b64=st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
    payload_size=st.integers(0, 10**7),
    payload_truncated=st.booleans(),
    payload_sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    payload_text=st.none() | st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    customer_id=st.none() | identifiers(),
    event_id=st.none() | identifiers(),
    event_time=st.none() | times,
    event_schema_version=st.none() | st.integers(-5, 10),
    model_version=st.none() | labels,
)

outputs = st.one_of(segment_changes, churn_alerts, retention_offers(), dead_letters)


# --- the property every decoded message must satisfy -----------------------------------------


def check_outcome(
    result: object, raw: bytes, kind: type[Purchase] | type[Interaction], source: SourceRef
) -> None:
    """Either a valid event within the limits, or a complete, publishable dead letter."""
    if isinstance(result, DeadLetter):
        assert result.reason.strip()
        assert result.reason_code in set(DeadLetterReason)
        assert result.reason_code is not DeadLetterReason.INTERNAL_ERROR, result.reason
        assert result.id == source.dead_letter_id
        assert result.payload_size == len(raw)
        if not result.payload_truncated:
            assert base64.b64decode(result.payload_b64) == raw
        assert parse_output(to_json_bytes(result)) == result
        return
    assert isinstance(result, kind)
    limits = DEFAULT_LIMITS
    assert limits.earliest <= result.occurred_at <= NOW + limits.max_future
    # Re-encoding gives the same event. Unknown fields are compared loosely: they are kept
    # as parsed (NaN, huge integers) but are not part of the contract.
    again = decode_purchase if kind is Purchase else decode_interaction
    copy = again(to_json_bytes(result), source, now=NOW)
    assert isinstance(copy, kind)
    assert all(getattr(copy, name) == getattr(result, name) for name in kind.model_fields)
    if isinstance(result, Purchase):
        assert result.amount <= limits.max_amount
