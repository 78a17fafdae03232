"""Named RFM segments and the loyalty × profitability quadrant.

|             | not loyal       | loyal            |
|-------------|-----------------|------------------|
| profitable  | ``butterfly``   | ``true_friend``  |
| unprofitable| ``stranger``    | ``barnacle``     |

Both tests carry hysteresis (see :mod:`streams.domain.scoring`), so a customer on a split point
does not flap between quadrants.
"""

from __future__ import annotations

from streams.domain.rules import LoyaltyRules, Quadrant, Rules
from streams.domain.scoring import above_split


def rfm_segment(scores: tuple[int, int, int], rules: Rules) -> str:
    """The first configured segment whose R, F and M ranges all hold (or the fallback)."""
    r, f, m = scores
    for rule in rules.segments:
        if rule.recency.holds(r) and rule.frequency.holds(f) and rule.monetary.holds(m):
            return rule.name
    return rules.fallback_segment


def quadrant_of(*, loyal: bool, profitable: bool) -> Quadrant:
    if profitable:
        return "true_friend" if loyal else "butterfly"
    return "barnacle" if loyal else "stranger"


PROFITABLE: frozenset[str] = frozenset({"butterfly", "true_friend"})
LOYAL: frozenset[str] = frozenset({"true_friend", "barnacle"})


def is_profitable(
    long_monetary_cents: float, split_cents: float, current: str | None, relative: float
) -> bool:
    """Net spend over the long window above the population split (median by default)."""
    was = None if current is None else current in PROFITABLE
    return above_split(max(long_monetary_cents, 0), split_cents, was, relative)


def is_loyal(
    *,
    repeat_days: int,
    tenure_days: float,
    p_alive: float,
    long_orders: float,
    split_orders: float,
    current: str | None,
    rules: LoyaltyRules,
    relative: float,
) -> bool:
    """Behavioural loyalty: repeat purchase days over enough tenure, frequent, and alive.

    A first-time buyer is never loyal. The frequency and P(alive) tests keep hysteresis.
    """
    if repeat_days < rules.min_repeat_days or tenure_days < rules.min_tenure_days:
        return False
    was = None if current is None else current in LOYAL
    return above_split(p_alive, rules.min_p_alive, was, relative) and above_split(
        long_orders, split_orders, was, relative
    )
