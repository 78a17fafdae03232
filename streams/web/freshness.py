"""The time-dependent figures of a profile, as of the moment it is read (see
:mod:`streams.domain.freshness`): the API never answers a silent customer's stale churn risk."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from streams.adapters.redis_views import iso_ms
from streams.domain.freshness import time_figures
from streams.domain.model import Model
from streams.domain.rules import Rules


@runtime_checkable
class ReadTimeSource(Protocol):
    """What the processor tells the web side: now, the model and the rules."""

    def read_time(self, customer_id: str) -> tuple[int, Model, Rules] | None: ...


def _ms(text: Any) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def fresh_profile(body: dict[str, Any], now: tuple[int, Model, Rules] | None) -> dict[str, Any]:
    """``body`` (a profile as the API answers it) with its time-dependent figures as of now.

    Adds ``as_of`` (and ``as_of_ms``): the moment the figures are for. Left as stored (as of
    ``updated_at``) when the worker has no clock yet, when the profile was made with another
    model than the worker's, or when it has no purchase.
    """
    stored_at = body.get("at_ms")
    out = dict(body, as_of=body.get("updated_at"), as_of_ms=stored_at)
    first, last, x = _ms(body.get("first_purchase_at")), _ms(body.get("last_purchase_at")), None
    if isinstance(body.get("repeat_days"), int):
        x = body["repeat_days"]
    if now is None or first is None or last is None or x is None:
        return out
    at_ms, model, rules = now
    if body.get("model_version") != model.version:
        return out
    if isinstance(stored_at, int) and stored_at > at_ms:
        return out
    figures = time_figures(
        model, rules, repeat_days=x, first_purchase_ms=first, last_purchase_ms=last, at_ms=at_ms
    )
    out.update(
        days_since_last_purchase=figures.days_since_last_purchase,
        tenure_days=figures.tenure_days,
        p_alive=figures.p_alive,
        churn_risk=figures.churn_risk,
        churn_risk_band=figures.churn_risk_band,
        as_of=iso_ms(at_ms),
        as_of_ms=at_ms,
    )
    return out
