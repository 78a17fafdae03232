"""Retention offer policy: from a segment change or churn alert to an offer, or a deliberate no.

The quadrant strategies (``rules.toml``, ``[[offers.rules]]``):

* **true friends** — recognise on arrival; defend hard when they drift;
* **butterflies** — one short transactional offer as they go quiet, then stop investing;
* **barnacles** — test share of wallet with a cross-sell; no paid retention;
* **strangers** — no investment.

Per customer, in this order: a rule's deliberate *no offer*; a **cooldown** since the last
offer; a **frequency cap** over a rolling period; a stable **holdout** group (a hash of the
customer id) that gets nothing, so lift can be measured against it. Holdout decisions are
recorded like offers, so control customers keep the same cadence as treated ones.

The policy is pure: the customer's offer history comes in, a decision goes out. The offers
agent keeps that history, and idempotency by decision id, in Redis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from streams.domain.events import OutputEvent, SegmentChanged
from streams.domain.facts import MS_PER_DAY
from streams.domain.rules import SEVERITIES, OfferRule, OfferRules, Severity

Decision = Literal["offer", "no_offer", "holdout", "capped", "cooldown"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """What the policy needs to know about a segment change or churn alert."""

    id: str
    customer_id: str
    at_ms: int
    kind: Literal["entered", "drifting"]
    quadrant: str | None
    severity: Severity | None = None

    @classmethod
    def from_event(cls, event: OutputEvent) -> Trigger | None:
        """The trigger a core output amounts to (None: an RFM-segment change, not a trigger)."""
        if isinstance(event, SegmentChanged):
            if event.dimension != "quadrant":
                return None
            return cls(event.id, event.customer_id, event.at_ms, "entered", event.to_value)
        return cls(
            event.id,
            event.customer_id,
            event.at_ms,
            "drifting",
            event.profile.quadrant,
            event.severity,
        )


@dataclass(frozen=True, slots=True)
class OfferHistory:
    """Event times of the customer's earlier recorded decisions (offers and holdouts)."""

    recorded_ms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OfferDecision:
    """What to do about one trigger. ``records`` says whether it counts toward caps."""

    id: str
    customer_id: str
    trigger_id: str
    at_ms: int
    decision: Decision
    offer_code: str | None
    channel: str | None
    reason: str
    quadrant: str
    expires_at_ms: int | None

    @property
    def records(self) -> bool:
        return self.decision in ("offer", "holdout")


def in_holdout(customer_id: str, rules: OfferRules) -> bool:
    """Stable control-group membership: the same customers for every worker and every run."""
    digest = hashlib.blake2b(
        f"{rules.holdout_salt}\x00{customer_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % 10_000 < round(rules.holdout_percent * 100)


def matching_rule(trigger: Trigger, rules: OfferRules) -> OfferRule | None:
    """The rule a trigger falls under, or None when the policy has nothing to say."""
    same = [r for r in rules.rules if r.trigger == trigger.kind and r.quadrant == trigger.quadrant]
    if trigger.kind == "entered":
        return same[0] if same else None
    rank = SEVERITIES.index(trigger.severity or "watch")
    reached = [r for r in same if SEVERITIES.index(r.min_severity) <= rank]
    # the most specific rule: the highest severity floor the alert reaches
    return max(reached, key=lambda r: SEVERITIES.index(r.min_severity), default=None)


def decide(trigger: Trigger, history: OfferHistory, rules: OfferRules) -> OfferDecision | None:
    """Apply the policy to one trigger; None when no rule covers it (nothing to record)."""
    rule = matching_rule(trigger, rules)
    if rule is None:
        return None
    at = trigger.at_ms
    quadrant = trigger.quadrant or "unclassified"

    def made(decision: Decision, reason: str) -> OfferDecision:
        offer = decision == "offer"
        return OfferDecision(
            id=f"offer:{trigger.id}",
            customer_id=trigger.customer_id,
            trigger_id=trigger.id,
            at_ms=at,
            decision=decision,
            offer_code=rule.offer_code if offer else None,
            channel=rule.channel if offer else None,
            reason=reason,
            quadrant=quadrant,
            expires_at_ms=at + rule.valid_days * MS_PER_DAY if offer else None,
        )

    if not rule.offer_code:
        return made("no_offer", rule.reason)
    earlier = [t for t in history.recorded_ms if t <= at]
    cooldown_ms = rules.cooldown_days * MS_PER_DAY
    if earlier and at - max(earlier) < cooldown_ms:
        return made(
            "cooldown",
            f"last offer {(at - max(earlier)) / MS_PER_DAY:.1f} days ago; "
            f"cooldown is {rules.cooldown_days:g} days",
        )
    window_ms = rules.cap_days * MS_PER_DAY
    recent = sum(1 for t in earlier if at - t < window_ms)
    if recent >= rules.cap_count:
        return made(
            "capped", f"{recent} offers in the last {rules.cap_days:g} days (cap {rules.cap_count})"
        )
    if in_holdout(trigger.customer_id, rules):
        return made("holdout", f"control group ({rules.holdout_percent:g} %): {rule.reason}")
    return made("offer", rule.reason)
