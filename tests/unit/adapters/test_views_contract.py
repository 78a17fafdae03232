"""The profile view's contract: key names, flat string fields, times and severities."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.adapters.offer_store import OfferKeys
from streams.adapters.redis_views import (
    ProfileUpdate,
    ViewKeys,
    drift_severity,
    iso_ms,
    profile_fields,
)
from tests.unit.adapters.support import MS_PER_DAY, T, profile, update

CONTRACT_FIELDS = [
    "customer_id",
    "at_ms",
    "updated_at",
    "model_version",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "rfm_segment",
    "segment_since",
    "quadrant",
    "quadrant_since",
    "loyal",
    "profitable",
    "p_alive",
    "churn_risk",
    "churn_risk_band",
    "drift_level",
    "drift_severity",
    "first_purchase_at",
    "last_purchase_at",
    "days_since_last_purchase",
    "avg_days_between_purchases",
    "gap_std_days",
    "expected_next_purchase_at",
    "tenure_days",
    "purchase_count",
    "repeat_days",
    "frequency_window",
    "monetary_window_cents",
    "mean_order_value_cents",
    "long_frequency",
    "long_monetary_cents",
    "engagement",
    "last_interaction_at",
]


def test_keys_carry_the_prefix() -> None:
    views = ViewKeys("run1:")
    assert views.profile("c:42") == "run1:profile:c:42"
    assert views.history("c42") == "run1:history:c42"
    assert views.history_ids("c42") == "run1:history:ids:c42"
    assert views.audience("quadrant", "true_friend") == "run1:audience:quadrant:true_friend"
    assert views.audience_index == "run1:audiences"
    offers = OfferKeys("run1:")
    assert offers.decision("offer:c42:7") == "run1:offer:decision:offer:c42:7"
    assert offers.offers("c42") == "run1:offers:c42"


def test_profile_hash_has_every_contract_field_as_text() -> None:
    fields = profile_fields(update("c1", T))
    assert list(fields) == CONTRACT_FIELDS
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["customer_id"] == "c1"
    assert fields["at_ms"] == str(T)
    assert (fields["recency_score"], fields["frequency_score"], fields["monetary_score"]) == (
        "3",
        "3",
        "3",
    )
    assert (fields["rfm_segment"], fields["quadrant"]) == ("need_attention", "true_friend")
    assert (fields["loyal"], fields["profitable"]) == ("1", "1")
    assert float(fields["p_alive"]) == 0.4
    assert (fields["drift_level"], fields["drift_severity"]) == ("2", "warning")
    assert fields["monetary_window_cents"] == "30000"
    assert fields["days_since_last_purchase"] == "40.0"
    expected = datetime.fromisoformat(fields["expected_next_purchase_at"])
    assert int(expected.timestamp() * 1000) == T - 21 * MS_PER_DAY
    since = datetime.fromisoformat(fields["segment_since"])
    assert int(since.timestamp() * 1000) == T - MS_PER_DAY


def test_unknown_values_are_empty_strings() -> None:
    unknown = ProfileUpdate(
        profile=profile(
            rfm_segment=None,
            quadrant=None,
            scores=None,
            p_alive=None,
            churn_risk=None,
            churn_risk_band=None,
            drift_level=0,
            expected_next_purchase_ms=None,
            engagement=None,
        )
    )
    fields = profile_fields(unknown)
    assert list(fields) == CONTRACT_FIELDS
    for name in (
        "rfm_segment",
        "quadrant",
        "segment_since",
        "recency_score",
        "p_alive",
        "churn_risk",
        "churn_risk_band",
        "expected_next_purchase_at",
        "engagement",
        "last_interaction_at",
    ):
        assert fields[name] == "", name
    assert fields["drift_severity"] == "none"


def test_iso_times_are_utc_with_milliseconds() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_719_381_600_123) == "2024-06-26T06:00:00.123Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(None) == ""


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_iso_times_equal_the_standard_library(ms: int) -> None:
    """The arithmetic formatting equals ``isoformat`` for every instant of years 1–9999."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert iso_ms(ms) == at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_drift_severity_names() -> None:
    assert [drift_severity(level) for level in range(4)] == [
        "none",
        "watch",
        "warning",
        "critical",
    ]


def test_history_entries_must_be_json_objects() -> None:
    base = update()
    with pytest.raises(ValueError, match="not a JSON object"):
        dataclasses.replace(base, history=(("c1:1", "[1, 2]"),))
    with pytest.raises(ValueError, match="must not be empty"):
        dataclasses.replace(base, history=(("", "{}"),))
    with pytest.raises(ValueError, match="not valid JSON"):
        dataclasses.replace(base, history=(("c1:1", b"{not json"),))
    assert dataclasses.replace(base, history=(("c1:1", b'{"id": "c1:1"}'),)).history
