"""RFM scores 1–5 from population cut points, with hysteresis.

Cut points are four ascending values (the population's 20/40/60/80 % quantiles, from the
model). A value above ``cuts[i]`` earns at least score ``i + 2``. Hysteresis widens every
boundary *away from the current score* by ``max(relative * |cut|, floor)``, so a customer
sitting on a boundary keeps their score until the value moves clearly past it.

Recency is the inverse: few days since the last purchase is good, so R = 5 is the most recent.
"""

from __future__ import annotations

from collections.abc import Sequence


def _margin(cut: float, relative: float, floor: float) -> float:
    return max(abs(cut) * relative, floor)


def ascending_score(
    value: float,
    cuts: Sequence[float],
    current: int | None = None,
    relative: float = 0.0,
    floor: float = 0.0,
) -> int:
    """Score 1..5 where larger values score higher (frequency, monetary)."""
    score = 1
    for i, cut in enumerate(cuts):
        if current is not None:
            m = _margin(cut, relative, floor)
            # boundary between score i+1 and i+2: above the current score it is raised,
            # at or below it is lowered, so leaving the current score takes a clear move.
            cut = cut + m if i + 1 >= current else cut - m
        if value > cut:
            score = i + 2
    return score


def recency_score(
    days_since: float,
    cuts: Sequence[float],
    current: int | None = None,
    relative: float = 0.0,
    floor: float = 0.0,
) -> int:
    """R score 1..5 where *fewer* days since the last purchase score higher."""
    inverse_current = None if current is None else 6 - current
    return 6 - ascending_score(days_since, cuts, inverse_current, relative, floor)


def recency_drop_after_days(
    cuts: Sequence[float], current: int, relative: float, floor: float
) -> float | None:
    """Days since last purchase past which R falls below ``current`` (None if it can't)."""
    inverse = 6 - current  # ascending score of days
    if inverse >= 5:
        return None
    cut = cuts[inverse - 1]
    return cut + _margin(cut, relative, floor)


def above_split(value: float, split: float, currently_above: bool | None, relative: float) -> bool:
    """A two-sided test (profitable? frequent?) with the same hysteresis as the scores."""
    if currently_above is None:
        return value > split
    margin = abs(split) * relative
    return value > split - margin if currently_above else value > split + margin
