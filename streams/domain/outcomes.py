"""Offer outcomes: did the customer come back after an offer, or after its holdout twin?

Every trigger the offer policy decides ``offer`` or ``holdout`` opens a **pending outcome** in
the customer's state: the decision time, the window's end (``outcome_window_days`` of the
policy rule), and what the customer did since — purchases, refunds, net cents, the first
purchase's time. Purchases count in **event time** over ``(decided, decided + window]``,
whenever they are folded (in time or late, as a correction), so the count depends on the set of
purchases, not on their arrival order. The outcome is final when the window closes: its end is
a due time of the customer (the engine's due index), so a silent customer's outcome closes by
time alone, with no new event, and an :class:`OfferOutcome` is output.

The decision itself is the pure policy (:func:`streams.domain.offers.decide`) applied in the
core to the core's own triggers, in their deterministic order, with the customer's own record of
earlier decisions (``state.offer_ms``) as the cooldown and cap history: outcomes are a
deterministic function of the log, like every other output. The offers agent applies the same
policy with its history in Redis; the two agree whenever the customer's triggers reach the agent
in event-time order (see docs/domain.md, known limitations).

Bounded: decisions that record (offers and holdouts) are at least ``cooldown_days`` apart and
at most ``cap_count`` per ``cap_days``, so pending outcomes are few; :data:`MAX_PENDING` is a
hard bound beyond which the oldest outcome closes early (flagged by its ``at_ms`` before its
window end). ``offer_ms`` keeps only what the cooldown and the cap can still see.

No work per event unless the customer has a pending outcome (or a trigger was just output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from streams.domain.events import OfferOutcome, OutputEvent
from streams.domain.facts import MS_PER_DAY
from streams.domain.offers import OfferHistory, Trigger, decide, matching_rule
from streams.domain.rules import OfferRules

MAX_PENDING: Final = 16
"""Hard bound on a customer's pending outcomes (the policy's cooldown and cap keep far below)."""

TREATED: Final = 1
HOLDOUT: Final = 0


class PendingOutcome:
    """One open outcome window; serialized as a list inside the customer's state."""

    __slots__ = (
        "arm",
        "closes_ms",
        "decided_ms",
        "first_purchase_ms",
        "kind",
        "net_cents",
        "offer_code",
        "purchases",
        "quadrant",
        "refunds",
        "trigger_id",
        "window_days",
    )

    def __init__(
        self,
        trigger_id: str,
        decided_ms: int,
        window_days: int,
        arm: int,
        offer_code: str,
        quadrant: str,
        kind: str,
    ) -> None:
        self.trigger_id = trigger_id
        self.decided_ms = decided_ms
        self.window_days = window_days
        self.closes_ms = decided_ms + window_days * MS_PER_DAY
        self.arm = arm
        self.offer_code = offer_code
        self.quadrant = quadrant
        self.kind = kind
        self.purchases = 0
        self.refunds = 0
        self.net_cents = 0
        self.first_purchase_ms: int | None = None

    def to_list(self) -> list[Any]:
        return [
            self.trigger_id,
            self.decided_ms,
            self.window_days,
            self.arm,
            self.offer_code,
            self.quadrant,
            self.kind,
            self.purchases,
            self.refunds,
            self.net_cents,
            self.first_purchase_ms,
        ]

    @classmethod
    def from_list(cls, row: list[Any]) -> PendingOutcome:
        o = cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
        o.purchases, o.refunds, o.net_cents, o.first_purchase_ms = row[7], row[8], row[9], row[10]
        return o


def count_purchase(outcomes: list[PendingOutcome], at_ms: int, sign: int, cents: int) -> None:
    """Add one folded purchase (sign 1) or refund (sign -1) to every window it falls in."""
    for o in outcomes:
        if o.decided_ms < at_ms <= o.closes_ms:
            if sign > 0:
                o.purchases += 1
                o.net_cents += cents
                if o.first_purchase_ms is None or at_ms < o.first_purchase_ms:
                    o.first_purchase_ms = at_ms
            else:
                o.refunds += 1
                o.net_cents -= cents


def _closed(customer_id: str, o: PendingOutcome, at_ms: int) -> OfferOutcome:
    return OfferOutcome(
        id=f"outcome:{o.trigger_id}",
        offer_id=f"offer:{o.trigger_id}",
        trigger_id=o.trigger_id,
        customer_id=customer_id,
        at_ms=at_ms,
        decided_ms=o.decided_ms,
        window_days=o.window_days,
        arm="treated" if o.arm == TREATED else "holdout",
        offer_code=o.offer_code,
        quadrant=o.quadrant,
        trigger="entered" if o.kind == "entered" else "drifting",
        purchases=o.purchases,
        refunds=o.refunds,
        net_cents=o.net_cents,
        first_purchase_ms=o.first_purchase_ms,
    )


def close_due(customer_id: str, outcomes: list[PendingOutcome], now_ms: int) -> list[OfferOutcome]:
    """Close (remove and report) every outcome whose window ended at or before ``now_ms``."""
    done = [o for o in outcomes if o.closes_ms <= now_ms]
    if not done:
        return []
    outcomes[:] = [o for o in outcomes if o.closes_ms > now_ms]
    done.sort(key=lambda o: (o.closes_ms, o.trigger_id))
    return [_closed(customer_id, o, o.closes_ms) for o in done]


def next_close_ms(outcomes: list[PendingOutcome]) -> int | None:
    return min((o.closes_ms for o in outcomes), default=None)


def open_for(
    customer_id: str,
    outcomes: list[PendingOutcome],
    offer_ms: list[int],
    events: Iterable[OutputEvent],
    rules: OfferRules,
) -> list[OfferOutcome]:
    """Apply the offer policy to the triggers among ``events``; open an outcome per offer or
    holdout. Returns outcomes closed early by :data:`MAX_PENDING` (normally none)."""
    forced: list[OfferOutcome] = []
    for event in events:
        if event.cause == "import":
            continue
        trigger = Trigger.from_event(event)
        if trigger is None:
            continue
        decision = decide(trigger, OfferHistory(tuple(offer_ms)), rules)
        if decision is None or not decision.records:
            continue
        offer_ms.append(trigger.at_ms)
        keep_ms = max(rules.cooldown_days, rules.cap_days) * MS_PER_DAY
        if offer_ms[0] < trigger.at_ms - keep_ms:
            offer_ms[:] = [t for t in offer_ms if t >= trigger.at_ms - keep_ms]
        rule = matching_rule(trigger, rules)
        assert rule is not None  # decide() found one
        if len(outcomes) >= MAX_PENDING:
            oldest = min(outcomes, key=lambda o: (o.closes_ms, o.trigger_id))
            outcomes.remove(oldest)
            forced.append(_closed(customer_id, oldest, trigger.at_ms))
        outcomes.append(
            PendingOutcome(
                trigger.id,
                trigger.at_ms,
                rules.window_days(rule),
                TREATED if decision.decision == "offer" else HOLDOUT,
                rule.offer_code,
                decision.quadrant,
                trigger.kind,
            )
        )
    return forced
