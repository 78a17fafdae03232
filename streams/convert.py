"""Wire contract ↔ core: the only place that knows both ``schemas`` and ``streams.domain``.

Inputs become facts in the core's units (epoch ms, integer cents); core outputs become the
published events. Kept free of Kafka and Faust so that the worker, replay references and
benchmarks convert identically.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import (
    ChurnAlert,
    Interaction,
    ProfileSnapshot,
    Purchase,
    RetentionOffer,
    RfmScores,
    SegmentChange,
    amount_cents,
    epoch_ms,
    occurred_at_ms,
    to_json_bytes,
)
from streams.domain.events import ChurnRiskRaised, Profile, SegmentChanged
from streams.domain.facts import InteractionFact, PurchaseFact, PurchaseKind
from streams.domain.offers import OfferDecision, Trigger
from streams.domain.rules import Rules


def utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def purchase_fact(event: Purchase) -> PurchaseFact:
    return PurchaseFact(
        event_id=event.event_id,
        customer_id=event.customer_id,
        at_ms=occurred_at_ms(event),
        order_id=event.order_id,
        amount_cents=amount_cents(event),
        kind=PurchaseKind.REFUND if event.type == "refund" else PurchaseKind.PURCHASE,
    )


def interaction_fact(event: Interaction) -> InteractionFact:
    return InteractionFact(
        event_id=event.event_id,
        customer_id=event.customer_id,
        at_ms=occurred_at_ms(event),
        kind=str(event.type),
    )


def snapshot(profile: Profile, rules: Rules) -> ProfileSnapshot:
    """The profile part of an output, in the vocabulary of marketing tools."""
    return ProfileSnapshot(
        first_purchase_at=utc(profile.first_purchase_ms),
        last_purchase_at=utc(profile.last_purchase_ms),
        purchase_count=profile.purchase_count,
        repeat_days=profile.repeat_days,
        monetary_window_cents=profile.monetary_window_cents,
        frequency_window=profile.frequency_window,
        window_days=rules.windows.short_days,
        mean_order_value_cents=profile.mean_order_value_cents,
        avg_days_between_purchases=profile.avg_days_between_purchases,
        expected_next_purchase_at=utc(profile.expected_next_purchase_ms),
        p_alive=profile.p_alive,
        churn_risk_band=profile.churn_risk_band,
        days_since_last_purchase=profile.days_since_last_purchase,
        engagement=profile.engagement,
        last_interaction_at=utc(profile.last_interaction_ms),
        tenure_days=profile.tenure_days,
    )


def _scores(profile: Profile) -> RfmScores:
    assert profile.scores is not None
    r, f, m = profile.scores
    return RfmScores(recency=r, frequency=f, monetary=m)


def segment_change(event: SegmentChanged, rules: Rules) -> SegmentChange:
    p = event.profile
    assert p.rfm_segment is not None
    assert p.quadrant is not None
    return SegmentChange(
        id=event.id,
        customer_id=event.customer_id,
        event_time=_utc(event.at_ms),
        model_version=p.model_version,
        cause=event.cause,
        dimension=event.dimension,
        from_value=event.from_value,
        to_value=event.to_value,
        scores=_scores(p),
        quadrant=p.quadrant,
        rfm_segment=p.rfm_segment,
        profile=snapshot(p, rules),
    )


def churn_alert(event: ChurnRiskRaised, rules: Rules) -> ChurnAlert:
    p = event.profile
    assert p.rfm_segment is not None
    assert p.quadrant is not None
    return ChurnAlert(
        id=event.id,
        customer_id=event.customer_id,
        event_time=_utc(event.at_ms),
        model_version=p.model_version,
        cause=event.cause,
        severity=event.severity,
        p_alive=event.p_alive,
        elapsed_days=event.elapsed_days,
        typical_gap_days=event.typical_gap_days,
        quadrant=p.quadrant,
        rfm_segment=p.rfm_segment,
        true_friend_drifting=event.true_friend_drifting,
        profile=snapshot(p, rules),
    )


# --- outputs as bytes, without validating them again --------------------------------------
#
# The core's values already satisfy the output contract (the property tests check every
# output it makes against the models), so on the hot path the JSON is written directly: the
# same keys in the models' field order, datetimes and floats in the same notation as
# pydantic's serializer (orjson's UTC "Z" form and shortest round-trip floats). The result is
# byte-identical to ``to_json_bytes(segment_change(...))``, which tests assert over many
# logs, at a fraction of the cost. A non-finite float, which the models refuse, takes the
# validated path so it fails exactly as before.

_DUMPS = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


def _snapshot_dict(p: Profile, window_days: int) -> dict[str, Any]:
    return {
        "first_purchase_at": utc(p.first_purchase_ms),
        "last_purchase_at": utc(p.last_purchase_ms),
        "purchase_count": p.purchase_count,
        "repeat_days": p.repeat_days,
        "monetary_window_cents": p.monetary_window_cents,
        "frequency_window": p.frequency_window,
        "window_days": window_days,
        "mean_order_value_cents": p.mean_order_value_cents,
        "avg_days_between_purchases": p.avg_days_between_purchases,
        "expected_next_purchase_at": utc(p.expected_next_purchase_ms),
        "p_alive": p.p_alive,
        "churn_risk_band": p.churn_risk_band,
        "days_since_last_purchase": p.days_since_last_purchase,
        "engagement": p.engagement,
        "last_interaction_at": utc(p.last_interaction_ms),
        "tenure_days": p.tenure_days,
    }


def _finite(*values: float | None) -> bool:
    return math.isfinite(sum(v for v in values if v is not None))


def segment_change_json(event: SegmentChanged, rules: Rules) -> bytes:
    """``to_json_bytes(segment_change(event, rules))``, byte for byte, without validation."""
    p = event.profile
    if (
        p.scores is None
        or p.rfm_segment is None
        or p.quadrant is None
        or not _finite(
            p.avg_days_between_purchases, p.p_alive, p.days_since_last_purchase, p.tenure_days
        )
    ):
        return to_json_bytes(segment_change(event, rules))
    r, f, m = p.scores
    return _DUMPS(
        {
            "type": "segment_change",
            "schema_version": 1,
            "id": event.id,
            "customer_id": event.customer_id,
            "event_time": _utc(event.at_ms),
            "model_version": p.model_version,
            "cause": event.cause,
            "dimension": event.dimension,
            "from_value": event.from_value,
            "to_value": event.to_value,
            "scores": {"recency": r, "frequency": f, "monetary": m},
            "quadrant": p.quadrant,
            "rfm_segment": p.rfm_segment,
            "profile": _snapshot_dict(p, rules.windows.short_days),
        },
        option=_UTC_Z,
    )


def churn_alert_json(event: ChurnRiskRaised, rules: Rules) -> bytes:
    """``to_json_bytes(churn_alert(event, rules))``, byte for byte, without validation."""
    p = event.profile
    if (
        p.rfm_segment is None
        or p.quadrant is None
        or not _finite(
            event.p_alive,
            event.elapsed_days,
            event.typical_gap_days,
            p.avg_days_between_purchases,
            p.p_alive,
            p.days_since_last_purchase,
            p.tenure_days,
        )
    ):
        return to_json_bytes(churn_alert(event, rules))
    return _DUMPS(
        {
            "type": "churn_alert",
            "schema_version": 1,
            "id": event.id,
            "customer_id": event.customer_id,
            "event_time": _utc(event.at_ms),
            "model_version": p.model_version,
            "cause": event.cause,
            "severity": event.severity,
            "p_alive": event.p_alive,
            "elapsed_days": event.elapsed_days,
            "typical_gap_days": event.typical_gap_days,
            "quadrant": p.quadrant,
            "rfm_segment": p.rfm_segment,
            "true_friend_drifting": event.true_friend_drifting,
            "profile": _snapshot_dict(p, rules.windows.short_days),
        },
        option=_UTC_Z,
    )


def trigger_of(event: SegmentChange | ChurnAlert) -> Trigger | None:
    """The offer-policy trigger a published output amounts to (read back by the offers agent)."""
    at = epoch_ms(event.event_time)
    if isinstance(event, SegmentChange):
        # an import states where a customer is (from_value None); it is not a move to act on
        if event.dimension != "quadrant" or event.cause == "import":
            return None
        return Trigger(event.id, event.customer_id, at, "entered", event.to_value)
    return Trigger(event.id, event.customer_id, at, "drifting", event.quadrant, event.severity)


def retention_offer(decision: OfferDecision, trigger: SegmentChange | ChurnAlert) -> RetentionOffer:
    return RetentionOffer(
        id=decision.id,
        customer_id=decision.customer_id,
        event_time=_utc(decision.at_ms),
        model_version=trigger.model_version,
        cause=trigger.cause,
        offer_code=decision.offer_code,
        decision=decision.decision,
        reason=decision.reason,
        quadrant=decision.quadrant,
        trigger_id=decision.trigger_id,
        expires_at=utc(decision.expires_at_ms),
        channel=decision.channel,
        profile=trigger.profile,
    )
