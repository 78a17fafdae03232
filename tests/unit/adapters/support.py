"""Domain objects for adapter tests, built on the offer tests' profile."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import orjson

from streams.adapters.redis_views import ProfileUpdate
from streams.domain.events import ChurnRiskRaised, Profile, SegmentChanged
from streams.domain.facts import MS_PER_DAY
from tests.unit.domain.test_offers import T, _profile

__all__ = ["MS_PER_DAY", "T", "alert", "entered", "profile", "update"]


def profile(
    customer_id: str = "c1",
    at_ms: int = T,
    *,
    rfm_segment: str | None = "need_attention",
    quadrant: str | None = "true_friend",
    **changes: Any,
) -> Profile:
    """A classified customer at ``at_ms``; any other Profile field can be overridden."""
    return dataclasses.replace(
        _profile(quadrant or "stranger"),
        customer_id=customer_id,
        at_ms=at_ms,
        rfm_segment=rfm_segment,
        quadrant=quadrant,
        **changes,
    )


def entered(
    customer_id: str, seq: int, at_ms: int, quadrant: str, previous: str | None = None
) -> SegmentChanged:
    """The customer moved into ``quadrant`` (output id ``customer_id:seq``)."""
    return SegmentChanged(
        id=f"{customer_id}:{seq}",
        customer_id=customer_id,
        at_ms=at_ms,
        dimension="quadrant",
        from_value=previous,
        to_value=quadrant,
        cause="purchase",
        profile=profile(customer_id, at_ms, quadrant=quadrant),
    )


def alert(
    customer_id: str,
    seq: int,
    at_ms: int,
    quadrant: str = "true_friend",
    severity: Literal["watch", "warning", "critical"] = "warning",
) -> ChurnRiskRaised:
    """A churn alert for a customer of ``quadrant`` (output id ``customer_id:seq``)."""
    return ChurnRiskRaised(
        id=f"{customer_id}:{seq}",
        customer_id=customer_id,
        at_ms=at_ms,
        severity=severity,
        previous_level=1,
        p_alive=0.4,
        elapsed_days=40.0,
        typical_gap_days=19.0,
        true_friend_drifting=quadrant == "true_friend",
        cause="time",
        profile=profile(customer_id, at_ms, quadrant=quadrant),
    )


def update(
    customer_id: str = "c1",
    at_ms: int = T,
    *,
    rfm_segment: str | None = "need_attention",
    quadrant: str | None = "true_friend",
    previous_segment: str | None = None,
    previous_quadrant: str | None = None,
    history: tuple[str, ...] = (),
) -> ProfileUpdate:
    """A view update; ``history`` lists output ids, each logged as a small JSON object."""
    return ProfileUpdate(
        profile=profile(customer_id, at_ms, rfm_segment=rfm_segment, quadrant=quadrant),
        previous_segment=previous_segment,
        previous_quadrant=previous_quadrant,
        segment_since_ms=at_ms - MS_PER_DAY,
        quadrant_since_ms=at_ms - 2 * MS_PER_DAY,
        history=tuple(
            (entry_id, orjson.dumps({"id": entry_id, "at_ms": at_ms}).decode())
            for entry_id in history
        ),
    )
