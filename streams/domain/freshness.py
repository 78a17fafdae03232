"""Profile figures that move with time alone, computed for any moment: profiles that stay true.

A stored profile is a snapshot at its event time. Days since the last purchase, tenure,
P(alive) and the churn risk (and its band) change with no new event, so a reader that trusts
the snapshot of a silent customer reads stale churn risk for exactly the customers it should
act on. Two remedies, both from here:

* :func:`time_figures` — the figures at any moment from what the profile stores (first and
  last purchase, repeat days) and the model: the API computes them at the current closed
  event time when it answers;
* :func:`band_moved` — whether the churn band changed between two evaluations with no
  purchase in between: the engine then republishes the profile (a drift level that rises by
  time alone already does, through its churn alert).

Same formulas as :class:`streams.domain.classify.Classifier` (its ``_verdict`` and
``assess``), so a profile computed here equals the one an evaluation at that moment shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.domain.churn import ChurnRiskBand, churn_risk_band, p_alive, p_no_purchase_within
from streams.domain.facts import MS_PER_DAY, day_of
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.domain.state import CustomerState


@dataclass(frozen=True, slots=True)
class TimeFigures:
    """The time-dependent part of a profile at ``at_ms``."""

    at_ms: int
    days_since_last_purchase: float
    tenure_days: float
    p_alive: float
    churn_risk: float
    churn_risk_band: ChurnRiskBand


def time_figures(
    model: Model,
    rules: Rules,
    *,
    repeat_days: int,
    first_purchase_ms: int,
    last_purchase_ms: int,
    at_ms: int,
) -> TimeFigures:
    """The figures of a customer with these purchases, as of ``at_ms`` (no purchase since)."""
    first_day = day_of(first_purchase_ms)
    t_x = day_of(last_purchase_ms) - first_day
    age = max(at_ms / MS_PER_DAY - first_day, float(t_x))
    risk = p_no_purchase_within(model.bgnbd, rules.drift.horizon_days, repeat_days, t_x, age)
    risk = min(max(risk, 0.0), 1.0)
    since = (at_ms - last_purchase_ms) / MS_PER_DAY if at_ms > last_purchase_ms else 0.0
    return TimeFigures(
        at_ms=at_ms,
        days_since_last_purchase=since,
        tenure_days=(at_ms - first_purchase_ms) / MS_PER_DAY,
        p_alive=p_alive(model.bgnbd, repeat_days, t_x, age),
        churn_risk=risk,
        churn_risk_band=churn_risk_band(risk),
    )


def band_at(model: Model, rules: Rules, state: CustomerState, at_ms: int) -> ChurnRiskBand | None:
    """The churn band of the customer's folded purchases at ``at_ms`` (None before any)."""
    if state.first_ms is None or state.last_ms is None:
        return None
    first_day = day_of(state.first_ms)
    t_x = day_of(state.last_ms) - first_day
    age = max(at_ms / MS_PER_DAY - first_day, float(t_x))
    risk = p_no_purchase_within(model.bgnbd, rules.drift.horizon_days, state.repeat_days, t_x, age)
    return churn_risk_band(min(max(risk, 0.0), 1.0))


def band_moved(
    model: Model, rules: Rules, state: CustomerState, before_ms: int | None, after_ms: int | None
) -> bool:
    """Whether time alone moved the customer's churn band from ``before_ms`` to ``after_ms``
    (the state's purchases unchanged in between)."""
    if before_ms is None or after_ms is None or after_ms <= before_ms:
        return False
    return band_at(model, rules, state, before_ms) != band_at(model, rules, state, after_ms)
