"""RFM scores 1–5 from population cut points, with hysteresis.

Cut points are four ascending values (the population's 20/40/60/80 % quantiles, from the
model). A value above ``cuts[i]`` earns at least score ``i + 2``. Hysteresis widens every
boundary *away from the current score* by ``max(relative * |cut|, floor)``, so a customer
sitting on a boundary keeps their score until the value moves clearly past it.

Recency is the inverse: few days since the last purchase is good, so R = 5 is the most recent.
The classifier precomputes :func:`hysteresis_cuts` for every current score (they depend only
on the model), so scoring on the hot path is one ``bisect``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


def hysteresis_cuts(
    cuts: Sequence[float], current: int | None, relative: float, floor: float = 0.0
) -> list[float]:
    """Cut points for an ascending score, moved away from ``current`` by the margin.

    A boundary above the current score is raised and one at or below it is lowered, so the
    list stays ascending and leaving the current score takes a clear move. ``current`` None
    (first classification) leaves the cut points as they are.
    """
    if current is None:
        return list(cuts)
    return [
        cut + max(abs(cut) * relative, floor)
        if i + 1 >= current
        else cut - max(abs(cut) * relative, floor)
        for i, cut in enumerate(cuts)
    ]


def ascending_score(value: float, adjusted_cuts: Sequence[float]) -> int:
    """Score 1..5 where larger values score higher (frequency, monetary)."""
    return 1 + bisect_left(adjusted_cuts, value)


def recency_cuts(
    cuts: Sequence[float], current_r: int | None, relative: float, floor: float
) -> list[float]:
    """Hysteresis cut points on "days since the last purchase" for a current R score."""
    return hysteresis_cuts(cuts, None if current_r is None else 6 - current_r, relative, floor)


def recency_score(days_since: float, adjusted_cuts: Sequence[float]) -> int:
    """R score 1..5 where *fewer* days since the last purchase score higher."""
    return 5 - bisect_left(adjusted_cuts, days_since)


def recency_drop_after_days(adjusted_cuts: Sequence[float], current_r: int) -> float | None:
    """Days since last purchase past which R falls below ``current_r`` (None at R = 1)."""
    return None if current_r <= 1 else adjusted_cuts[5 - current_r]


def above_split(value: float, split: float, currently_above: bool | None, relative: float) -> bool:
    """A two-sided test (profitable? frequent?) with the same hysteresis as the scores."""
    if currently_above is None:
        return value > split
    margin = abs(split) * relative
    return value > split - margin if currently_above else value > split + margin
