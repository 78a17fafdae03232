"""Wire contract ↔ core: the only place that knows both ``schemas`` and ``streams.domain``.

Inputs become facts in the core's units (epoch ms, integer cents); core outputs become the
published events. Kept free of Kafka and Faust so that the worker, replay references and
benchmarks convert identically.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
