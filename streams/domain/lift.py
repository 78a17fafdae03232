"""Lift of retention offers: conversion of the treated against the holdout, with a 95 % interval.

Input: outcome aggregates (:class:`ArmCounts` per strategy × quadrant × arm), folded from
``offer-outcomes`` (:func:`add_outcome`). Output: one :class:`LiftRow` per strategy, per
quadrant and overall:

* conversion ``p_t = converted_t / n_t`` (treated: offer sent) and ``p_h`` (holdout);
* **lift** ``d = p_t − p_h`` with the **Newcombe hybrid score interval** (Newcombe 1998,
  method 10): from the Wilson score intervals ``[l_t, u_t]``, ``[l_h, u_h]`` of each arm,
  ``d − √((p_t − l_t)² + (u_h − p_h)²)`` to ``d + √((u_t − p_t)² + (p_h − l_h)²)``. Unlike the
  Wald interval it stays inside [−1, 1] and keeps close to its nominal coverage with small
  arms or conversions near 0 or 1, which is what a holdout of 10 % gives;
* **incremental revenue per offer sent**: mean net revenue in the window of the treated minus
  that of the holdout (cents), with a Welch normal 95 % interval from the sums of squares.

Pure: no I/O; the same aggregates give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final, Literal

Z95: Final = 1.959963984540054
ALL: Final = "*"

Arm = Literal["treated", "holdout"]
Key = tuple[str, str, str]
"""(offer code, quadrant, arm)"""


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Closed outcomes of one arm: how many, how many converted, net revenue (and its squares)."""

    n: int = 0
    converted: int = 0
    net_cents: int = 0
    net_sq_cents: int = 0
    days_to_first_sum: float = 0.0

    def __add__(self, other: ArmCounts) -> ArmCounts:
        return ArmCounts(
            self.n + other.n,
            self.converted + other.converted,
            self.net_cents + other.net_cents,
            self.net_sq_cents + other.net_sq_cents,
            self.days_to_first_sum + other.days_to_first_sum,
        )

    @property
    def conversion(self) -> float | None:
        return self.converted / self.n if self.n else None

    @property
    def revenue_per_outcome_cents(self) -> float | None:
        return self.net_cents / self.n if self.n else None

    @property
    def mean_days_to_first(self) -> float | None:
        return self.days_to_first_sum / self.converted if self.converted else None

    def revenue_variance(self) -> float | None:
        if self.n < 2:
            return None
        mean = self.net_cents / self.n
        return max(self.net_sq_cents - self.n * mean * mean, 0.0) / (self.n - 1)


def add_outcome(
    aggregates: MutableMapping[Key, ArmCounts],
    offer_code: str,
    quadrant: str,
    arm: Arm,
    *,
    converted: bool,
    net_cents: int,
    days_to_first: float | None,
) -> None:
    """Fold one closed outcome into the aggregates."""
    key = (offer_code, quadrant, arm)
    one = ArmCounts(1, int(converted), net_cents, net_cents * net_cents, days_to_first or 0.0)
    aggregates[key] = aggregates.get(key, ArmCounts()) + one


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n <= 0:
        raise ValueError("the Wilson interval needs n > 0")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x_t: int, n_t: int, x_h: int, n_h: int, z: float = Z95) -> tuple[float, float, float]:
    """(p_t − p_h, low, high): the hybrid score interval of a difference of proportions."""
    p_t, p_h = x_t / n_t, x_h / n_h
    l_t, u_t = wilson(x_t, n_t, z)
    l_h, u_h = wilson(x_h, n_h, z)
    d = p_t - p_h
    low = d - math.sqrt((p_t - l_t) ** 2 + (u_h - p_h) ** 2)
    high = d + math.sqrt((u_t - p_t) ** 2 + (p_h - l_h) ** 2)
    return d, low, high


@dataclass(frozen=True, slots=True)
class LiftRow:
    """Lift of one strategy (``offer_code``) in one quadrant; ``*`` means all of them."""

    offer_code: str
    quadrant: str
    treated: ArmCounts
    holdout: ArmCounts
    lift: float | None
    low: float | None
    high: float | None
    incremental_revenue_cents: float | None
    revenue_low_cents: float | None
    revenue_high_cents: float | None

    @property
    def verdict(self) -> str:
        """``positive`` / ``negative`` when the interval excludes 0, else ``unclear``."""
        if self.low is None or self.high is None:
            return "not enough data"
        if self.low > 0:
            return "positive"
        if self.high < 0:
            return "negative"
        return "unclear"

    def as_dict(self) -> dict[str, object]:
        def arm(c: ArmCounts) -> dict[str, object]:
            return {
                "outcomes": c.n,
                "converted": c.converted,
                "conversion": c.conversion,
                "net_revenue_cents": c.net_cents,
                "revenue_per_outcome_cents": c.revenue_per_outcome_cents,
                "mean_days_to_first_purchase": c.mean_days_to_first,
            }

        return {
            "offer_code": self.offer_code,
            "quadrant": self.quadrant,
            "treated": arm(self.treated),
            "holdout": arm(self.holdout),
            "lift": self.lift,
            "lift_low": self.low,
            "lift_high": self.high,
            "verdict": self.verdict,
            "incremental_revenue_per_offer_cents": self.incremental_revenue_cents,
            "incremental_revenue_low_cents": self.revenue_low_cents,
            "incremental_revenue_high_cents": self.revenue_high_cents,
        }


def lift_of(offer_code: str, quadrant: str, treated: ArmCounts, holdout: ArmCounts) -> LiftRow:
    """The lift of one group (needs at least one outcome in each arm for an estimate)."""
    lift = low = high = revenue = r_low = r_high = None
    if treated.n and holdout.n:
        lift, low, high = newcombe(treated.converted, treated.n, holdout.converted, holdout.n)
        revenue = treated.net_cents / treated.n - holdout.net_cents / holdout.n
        v_t, v_h = treated.revenue_variance(), holdout.revenue_variance()
        if v_t is not None and v_h is not None:
            se = math.sqrt(v_t / treated.n + v_h / holdout.n)
            r_low, r_high = revenue - Z95 * se, revenue + Z95 * se
    return LiftRow(offer_code, quadrant, treated, holdout, lift, low, high, revenue, r_low, r_high)


def lift_table(aggregates: Mapping[Key, ArmCounts]) -> list[LiftRow]:
    """Rows per strategy (all quadrants), per quadrant (all strategies) and overall, sorted;
    the strategy × quadrant cells too where a strategy spans several quadrants."""
    groups: dict[tuple[str, str], list[ArmCounts]] = {}

    def add(code: str, quadrant: str, arm: str, counts: ArmCounts) -> None:
        pair = groups.setdefault((code, quadrant), [ArmCounts(), ArmCounts()])
        i = 0 if arm == "treated" else 1
        pair[i] = pair[i] + counts

    quadrants_of: dict[str, set[str]] = {}
    for (code, quadrant, arm), counts in aggregates.items():
        quadrants_of.setdefault(code, set()).add(quadrant)
        add(code, ALL, arm, counts)
        add(ALL, quadrant, arm, counts)
        add(ALL, ALL, arm, counts)
    for (code, quadrant, arm), counts in aggregates.items():
        if len(quadrants_of[code]) > 1:
            add(code, quadrant, arm, counts)
    rows = [lift_of(code, q, t, h) for (code, q), (t, h) in groups.items()]
    rows.sort(
        key=lambda r: (
            r.offer_code == ALL and r.quadrant == ALL,
            r.offer_code == ALL,
            r.offer_code,
            r.quadrant,
        )
    )
    return rows


def aggregates_from_outcomes(outcomes: Iterable[Mapping[str, object]]) -> dict[Key, ArmCounts]:
    """Fold outcome records (the ``offer-outcomes`` JSON, as dicts), once per id."""
    seen: set[str] = set()
    aggregates: dict[Key, ArmCounts] = {}
    for o in outcomes:
        oid = str(o["id"])
        if oid in seen:
            continue
        seen.add(oid)
        arm: Arm = "treated" if o["arm"] == "treated" else "holdout"
        days = o.get("days_to_first_purchase")
        net = o["net_revenue_cents"]
        add_outcome(
            aggregates,
            str(o["offer_code"]),
            str(o["quadrant"]),
            arm,
            converted=bool(o["converted"]),
            net_cents=net if isinstance(net, int) else 0,
            days_to_first=float(days) if isinstance(days, int | float) else None,
        )
    return aggregates


METHOD: Final = (
    "lift = conversion(treated) - conversion(holdout), 95 % Newcombe hybrid score interval "
    "(Wilson per arm); incremental revenue per offer = mean net revenue in the window, treated "
    "minus holdout, 95 % Welch normal interval"
)


def lift_body(rows: Iterable[LiftRow], as_of: str | None = None) -> dict[str, object]:
    """The JSON document of a lift table (HTTP API, ``rfm-stream lift --json``)."""
    return {
        "as_of": as_of,
        "confidence": 0.95,
        "method": METHOD,
        "rows": [r.as_dict() for r in rows],
    }
