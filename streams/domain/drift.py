"""Drift toward churn: expected purchases over the horizon, with the own rhythm in P(alive).

The alert is grounded in the model. BG/NBD's conditional expectation of purchases over the
horizon is ``P(alive) · E[purchases | alive]``. BG/NBD judges P(alive) by treating gaps as
Poisson (memoryless): a silence of three own gaps is barely suspicious, right for an irregular
buyer and far too lenient for one who buys like clockwork. So for a customer with a *regular*
rhythm, P(alive) is the smaller of two posteriors that share the BG/NBD prior of a dropout after
the last purchase, ``a / (a + b + x - 1)``:

* **BG/NBD P(alive)** — a silence as likely as the NBD mixture says;
* **rhythm P(alive)** — the silence against the customer's *own* gap distribution, a log-normal
  with their mean gap ``t_x / x`` and a coefficient of variation shrunk toward 1 (Poisson-like)
  when there are few gaps: ``odds alive = (b + x - 1)/a · S(silence)``; used only when that
  CV is at most ``rhythm_max_cv`` (an irregular buyer's gaps have heavier tails than a
  log-normal fitted to a few of them).

Levels 0 none, 1 watch, 2 warning, 3 critical: the expectation below the configured levels
*and* below a share of the customer's own past rate over the same horizon. The expectation
only falls while no purchase comes, so the level only rises, and the age at which it next
rises is unique; :func:`drift_crossing_age` finds it (a root search on the customer's age),
and it is the same for every evaluation between two purchases, so the classifier caches it.
"""

from __future__ import annotations

import math

from streams.domain.churn import BgNbdParams, expected_purchases_if_alive
from streams.domain.rules import SEVERITIES, DriftRules, Severity

# a crossing further than this many days past the last purchase counts as "never"
_NEVER_DAYS = 36_525.0
# the root search stops when the bracket is this narrow (days, ~ 0.01 ms)
_AGE_TOLERANCE_DAYS = 1e-7
_MAX_ROOT_STEPS = 200
# exp() of more than this overflows: odds that small are an alive probability of 0
_MAX_LOG = 700.0


def severity_name(level: int) -> Severity:
    return SEVERITIES[level - 1]


def gap_cv(repeat_days: int, t_x_days: float, gap_sq_days: float, prior_gaps: float) -> float:
    """Coefficient of variation of the customer's gaps, shrunk toward 1 with few gaps.

    ``cv² = (x · observed cv² + k · 1) / (x + k)`` with ``k = prior_gaps``: a customer seen
    over two gaps does not get a clockwork rhythm from a lucky pair; with many gaps the
    observed spread dominates. Floored at 0.05 so the survival stays a distribution.
    """
    mean = t_x_days / repeat_days
    var = max(gap_sq_days / repeat_days - mean * mean, 0.0)
    observed = var / (mean * mean)
    return max(math.sqrt((repeat_days * observed + prior_gaps) / (repeat_days + prior_gaps)), 0.05)


def rhythm_survival(silence_days: float, mean_gap_days: float, cv: float) -> float:
    """P(a gap lasts longer than ``silence_days``), log-normal gaps with this mean and CV."""
    if silence_days <= 0.0:
        return 1.0
    s2 = math.log1p(cv * cv)
    mu = math.log(mean_gap_days) - s2 / 2.0
    return 0.5 * math.erfc((math.log(silence_days) - mu) / math.sqrt(2.0 * s2))


def alive_with_rhythm(
    params: BgNbdParams, x: int, t_x: float, age: float, gap_sq_days: float, rules: DriftRules
) -> float:
    """P(alive) at ``age``: BG/NBD's, or the own-rhythm posterior when the customer has a
    regular rhythm (shrunk gap CV at most ``rhythm_max_cv``) and it is the lower one."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    prior_odds = (b + x - 1.0) / a
    # BG/NBD: odds alive = (b+x-1)/a · ((α+t_x)/(α+T))^(r+x)
    log_odds = math.log(prior_odds) - (r + x) * math.log((alpha + age) / (alpha + t_x))
    if (
        x >= rules.rhythm_min_gaps
        and gap_cv(x, t_x, gap_sq_days, rules.prior_gaps) <= rules.rhythm_max_cv
    ):
        cv = gap_cv(x, t_x, gap_sq_days, rules.prior_gaps)
        survival = rhythm_survival(age - t_x, t_x / x, cv)
        log_rhythm = math.log(prior_odds * survival) if survival > 0.0 else -math.inf
        log_odds = min(log_odds, log_rhythm)
    if log_odds < -_MAX_LOG:
        return 0.0
    if log_odds > 0.0:
        return 1.0 / (1.0 + math.exp(-log_odds))
    odds = math.exp(log_odds)
    return odds / (1.0 + odds)


def drift_expected(
    params: BgNbdParams,
    x: int,
    t_x: float,
    age: float,
    gap_sq_days: float,
    rules: DriftRules,
) -> float | None:
    """Expected purchases in the next ``horizon_days``, with the own rhythm in P(alive).

    The BG/NBD conditional expectation is P(alive) times the purchases of an alive customer;
    here P(alive) is :func:`alive_with_rhythm`. None when the customer has no rate of their
    own yet (fewer than ``min_repeat_days_for_rhythm`` repeat days): no drift is judged.
    """
    if x < rules.min_repeat_days_for_rhythm or t_x <= 0.0:
        return None
    if_alive = expected_purchases_if_alive(params, rules.horizon_days, x, age)
    return alive_with_rhythm(params, x, t_x, age, gap_sq_days, rules) * if_alive


def drift_level(expected: float | None, repeat_days: int, t_x: float, rules: DriftRules) -> int:
    """0 none, 1 watch, 2 warning, 3 critical.

    A level holds when the expected purchases over the horizon are below its threshold
    *and* below ``max_share_of_own_rate`` of what the customer's own past rate
    (``x / t_x`` purchase days a day) gives over the same horizon: a drift is a fall from
    their own level, not a naturally slow buyer.
    """
    if expected is None:
        return 0
    own = rules.max_share_of_own_rate * repeat_days / t_x * rules.horizon_days
    if expected >= own:
        return 0
    return (
        (expected < rules.expected_watch)
        + (expected < rules.expected_warning)
        + (expected < rules.expected_critical)
    )


def drift_crossing_age(
    params: BgNbdParams,
    x: int,
    t_x: float,
    gap_sq_days: float,
    level: int,
    rules: DriftRules,
) -> float | None:
    """The customer age (days since the first purchase day) at which, with no purchase, the
    drift level first exceeds ``level``; None when it never does.

    Depends only on the history (``x``, ``t_x``, the gaps) and the level, not on the time of
    asking, so callers may cache it between purchases. The expected purchases only fall with
    age (P(alive) and the rate of an alive customer both fall in silence), so the level only
    rises, and the crossing is found by bracketing and a safeguarded regula falsi to ~1e-7
    days; the caller turns it into a millisecond and checks that one.
    """
    if level >= 3 or x < rules.min_repeat_days_for_rhythm or t_x <= 0.0:
        return None
    own = rules.max_share_of_own_rate * x / t_x * rules.horizon_days
    thresholds = (rules.expected_watch, rules.expected_warning, rules.expected_critical)
    # the level exceeds ``level`` exactly when the expectation is below this
    bound = min(own, thresholds[level])

    def excess(age: float) -> float:
        expected = drift_expected(params, x, t_x, age, gap_sq_days, rules)
        assert expected is not None
        return expected - bound

    lo, step = float(t_x), max(t_x / x, 1.0)
    f_lo = excess(lo)
    if f_lo < 0.0:
        return lo
    hi = lo + step
    f_hi = excess(hi)
    while f_hi >= 0.0:
        lo, f_lo, step = hi, f_hi, step * 2.0
        hi = lo + step
        if hi - t_x > _NEVER_DAYS:
            return None
        f_hi = excess(hi)
    # Illinois (regula falsi with the stale end's value halved): superlinear on this smooth,
    # monotone function; a bisection step whenever the bracket fails to halve keeps it safe.
    side = 0
    for _ in range(_MAX_ROOT_STEPS):
        width = hi - lo
        if width <= _AGE_TOLERANCE_DAYS * max(1.0, hi):
            break
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        f_mid = excess(mid)
        if f_mid < 0.0:
            hi, f_hi = mid, f_mid
            if side == -1:
                f_lo *= 0.5
            side = -1
        else:
            lo, f_lo = mid, f_mid
            if side == 1:
                f_hi *= 0.5
            side = 1
        if hi - lo > 0.5 * width:
            mid = 0.5 * (lo + hi)
            f_mid = excess(mid)
            if f_mid < 0.0:
                hi, f_hi = mid, f_mid
            else:
                lo, f_lo = mid, f_mid
            side = 0
    return hi
