"""Drift toward churn: severity from P(alive) and from the customer's own purchase rhythm.

Two signals, the worse one wins:

* **P(alive)** (BG/NBD) below the configured levels (watch / warning / critical);
* **overdue ratio**: days since the last purchase divided by the customer's own mean gap
  between purchase days, above the configured multiples (the familiar "more than twice their
  usual interval" rule), once the customer has enough repeat days to have a rhythm.

Levels: 0 none, 1 watch, 2 warning, 3 critical. Both signals only grow while no purchase
comes, so the next time either crosses a level is known in closed form: :func:`next_drift_ms`.
"""

from __future__ import annotations

import math

from streams.domain.churn import BgNbdParams, days_until_p_alive_below
from streams.domain.facts import MS_PER_DAY
from streams.domain.rules import SEVERITIES, DriftRules, Severity


def p_alive_level(p: float, rules: DriftRules) -> int:
    return sum(p < t for t in (rules.p_alive_watch, rules.p_alive_warning, rules.p_alive_critical))


def overdue_level(overdue_ratio: float | None, rules: DriftRules) -> int:
    if overdue_ratio is None:
        return 0
    levels = (rules.overdue_watch, rules.overdue_warning, rules.overdue_critical)
    return sum(overdue_ratio >= k for k in levels)


def severity_name(level: int) -> Severity:
    return SEVERITIES[level - 1]


def rhythm_gap_days(repeat_days: int, mean_gap_days: float | None, rules: DriftRules) -> float:
    """The gap the overdue ratio divides by, or 0 when there is no rhythm yet."""
    if repeat_days < rules.min_repeat_days_for_rhythm or not mean_gap_days:
        return 0.0
    return mean_gap_days


def next_drift_ms(
    *,
    level: int,
    params: BgNbdParams,
    first_day: int,
    last_ms: int,
    repeat_days: int,
    t_x_days: int,
    age_days: float,
    gap_days: float,
    rules: DriftRules,
) -> int | None:
    """Event time at which, with no purchase, the drift level first exceeds ``level``."""
    if level >= 3:
        return None
    candidates: list[int] = []
    p_levels = (rules.p_alive_watch, rules.p_alive_warning, rules.p_alive_critical)
    if repeat_days > 0:
        age = days_until_p_alive_below(params, repeat_days, t_x_days, age_days, p_levels[level])
        if age is not None:
            candidates.append(math.floor((first_day + age) * MS_PER_DAY) + 1)
    if gap_days > 0:
        ratios = (rules.overdue_watch, rules.overdue_warning, rules.overdue_critical)
        candidates.append(last_ms + math.ceil(ratios[level] * gap_days * MS_PER_DAY))
    return min(candidates) if candidates else None
