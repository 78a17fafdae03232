"""What the core reports: segment changes, churn alerts, and facts it would not apply.

Output events carry a deterministic id, ``customer_id:seq``, where ``seq`` is the customer's
own output counter kept in state: a replay of the same log gives the same ids, so every
consumer can drop duplicates by id.

The records built per evaluation (profiles, outputs) are dataclasses that are hashable and
compared by value but not ``frozen``: a frozen dataclass's ``__init__`` sets every field
through ``object.__setattr__``, which costs more than the rest of building a profile on the
per-event path. Nothing mutates them once built; treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streams.domain.facts import Fact, SourcePosition

Cause = Literal["purchase", "refund", "time", "late_purchase", "import"]
Dimension = Literal["rfm_segment", "quadrant"]


@dataclass(slots=True, unsafe_hash=True)
class Profile:
    """A customer as classified at ``at_ms`` (event time); what views and outputs show."""

    customer_id: str
    at_ms: int
    model_version: str
    scores: tuple[int, int, int] | None
    rfm_segment: str | None
    quadrant: str | None
    loyal: bool
    profitable: bool
    p_alive: float | None
    churn_risk: float | None  # P(no purchase within the drift horizon)
    churn_risk_band: str | None
    drift_level: int
    first_purchase_ms: int | None
    last_purchase_ms: int | None
    purchase_count: int
    repeat_days: int
    frequency_window: int
    monetary_window_cents: int
    long_frequency: int
    long_monetary_cents: int
    mean_order_value_cents: int | None
    days_since_last_purchase: float | None
    avg_days_between_purchases: float | None
    gap_std_days: float | None
    expected_next_purchase_ms: int | None
    tenure_days: float | None
    engagement: int | None  # None in output events (see Classifier.assess)
    last_interaction_ms: int | None


@dataclass(slots=True, unsafe_hash=True)
class SegmentChanged:
    """The customer moved to another RFM segment or quadrant (``from_value`` None: first)."""

    id: str
    customer_id: str
    at_ms: int
    dimension: Dimension
    from_value: str | None
    to_value: str
    cause: Cause
    profile: Profile


@dataclass(slots=True, unsafe_hash=True)
class ChurnRiskRaised:
    """The customer's drift toward churn reached a higher severity."""

    id: str
    customer_id: str
    at_ms: int
    severity: Literal["watch", "warning", "critical"]
    previous_level: int
    p_alive: float
    elapsed_days: float
    typical_gap_days: float | None
    true_friend_drifting: bool
    cause: Cause
    profile: Profile


@dataclass(frozen=True, slots=True)
class LateEvent:
    """A fact too old to apply: reported (dead-lettered), never mixed in.

    An interaction older than closed event time; a purchase or refund older than closed time
    minus the late horizon (``horizon_ms``; purchases closer than that are folded in as
    corrections), or before the purchase days its customer's state still holds.
    """

    fact: Fact
    position: SourcePosition
    closed_ms: int
    horizon_ms: int | None = None  # None: an interaction (no horizon)


@dataclass(frozen=True, slots=True)
class DuplicateEvent:
    """A fact already applied: redelivered at or below the applied offset, or a repeated id."""

    fact: Fact
    position: SourcePosition
    why: Literal["redelivered", "duplicate_id"]


@dataclass(frozen=True, slots=True)
class OfferOutcome:
    """What followed one offer decision (sent or held out), final once its window closed.

    ``id`` is ``outcome:<trigger id>``: deterministic, one per decision. Counted in event
    time over ``(decided_ms, closes_ms]``; ``net_cents`` is purchases minus refunds.
    """

    id: str
    offer_id: str
    trigger_id: str
    customer_id: str
    at_ms: int  # when the window closed: the event time of this output
    decided_ms: int
    window_days: int
    arm: Literal["treated", "holdout"]
    offer_code: str
    quadrant: str
    trigger: Literal["entered", "drifting"]
    purchases: int
    refunds: int
    net_cents: int
    first_purchase_ms: int | None

    @property
    def converted(self) -> bool:
        return self.purchases > 0

    @property
    def days_to_first_purchase(self) -> float | None:
        if self.first_purchase_ms is None:
            return None
        return (self.first_purchase_ms - self.decided_ms) / 86_400_000


OutputEvent = SegmentChanged | ChurnRiskRaised
DomainEvent = SegmentChanged | ChurnRiskRaised | LateEvent | DuplicateEvent | OfferOutcome
