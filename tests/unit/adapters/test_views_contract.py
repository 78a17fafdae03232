"""The profile view's contract: key names, flat string fields, times and severities."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import orjson
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


def test_a_topic_record_history_is_checked_the_processor_own_is_taken_as_is() -> None:
    """Records read from the profiles topic are parsed and refused when bad; the import's own
    updates (``own_history``) skip that parse, and their entries are kept unchanged."""
    from streams.adapters.redis_views import profile_update, profile_update_of

    record = {"profile": dataclasses.asdict(profile()), "history": [["c1:1", "[1]"]]}
    with pytest.raises(ValueError, match="not a JSON object"):
        profile_update(orjson.dumps(record))
    own = {"profile": profile(), "history": [("c1:1", '{"id": "c1:1"}')]}
    assert profile_update_of(own, own_history=True).history == (("c1:1", '{"id": "c1:1"}'),)


def _generic_fields(u: ProfileUpdate) -> dict[str, str]:
    """The hash as one generic conversion of every value would write it (the reference)."""
    p = u.profile
    r, f, m = p.scores if p.scores is not None else (None, None, None)
    times = {
        "updated_at": p.at_ms,
        "segment_since": u.segment_since_ms,
        "quadrant_since": u.quadrant_since_ms,
        "first_purchase_at": p.first_purchase_ms,
        "last_purchase_at": p.last_purchase_ms,
        "expected_next_purchase_at": p.expected_next_purchase_ms,
        "last_interaction_at": p.last_interaction_ms,
    }
    raw = dataclasses.asdict(p) | {"recency_score": r, "frequency_score": f, "monetary_score": m}
    raw["drift_severity"] = drift_severity(p.drift_level)
    out = {}
    for name in CONTRACT_FIELDS:
        if name in times:
            out[name] = iso_ms(times[name])
            continue
        value = raw[name]
        out[name] = (
            ""
            if value is None
            else ("1" if value else "0")
            if isinstance(value, bool)
            else repr(value)
            if isinstance(value, float)
            else str(value)
        )
    return out


_maybe_float = st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 10**6)
_maybe_ms = st.none() | st.integers(0, 4 * 10**12)


@given(
    scores=st.none() | st.tuples(*[st.integers(1, 5)] * 3),
    p_alive=_maybe_float,
    churn_risk=_maybe_float,
    days=_maybe_float,
    gap=_maybe_float,
    tenure=_maybe_float,
    mean=st.none() | st.integers(0, 10**9),
    engagement=st.none() | st.integers(0, 10**4),
    band=st.none() | st.sampled_from(["low", "high"]),
    drift=st.integers(0, 5),
    loyal=st.booleans(),
    times=st.tuples(*[_maybe_ms] * 5),
)
def test_typed_conversion_writes_what_the_generic_one_writes(
    scores: tuple[int, int, int] | None,
    p_alive: float | None,
    churn_risk: float | None,
    days: float | None,
    gap: float | None,
    tenure: float | None,
    mean: int | None,
    engagement: int | None,
    band: str | None,
    drift: int,
    loyal: bool,
    times: tuple[int | None, ...],
) -> None:
    """``profile_field_list`` converts each field by its type, for speed; the hash it gives
    is what converting every value generically (None empty, bools 1/0, floats by repr)
    gives, for any mix of known and unknown values."""
    from streams.adapters.redis_views import profile_field_list

    u = ProfileUpdate(
        profile=profile(
            scores=scores,
            p_alive=p_alive,
            churn_risk=churn_risk,
            days_since_last_purchase=days,
            gap_std_days=gap,
            tenure_days=tenure,
            mean_order_value_cents=mean,
            engagement=engagement,
            churn_risk_band=band,
            drift_level=drift,
            loyal=loyal,
            profitable=not loyal,
            first_purchase_ms=times[0],
            last_purchase_ms=times[1],
            expected_next_purchase_ms=times[2],
        ),
        segment_since_ms=times[3],
        quadrant_since_ms=times[4],
    )
    flat = profile_field_list(u)
    assert flat[::2] == CONTRACT_FIELDS
    assert dict(zip(flat[::2], flat[1::2], strict=True)) == _generic_fields(u)
