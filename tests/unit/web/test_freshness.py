"""A profile read through the API carries its time-dependent figures as of now."""

from __future__ import annotations

from streams.adapters.redis_views import iso_ms
from streams.domain.facts import MS_PER_DAY
from streams.domain.freshness import time_figures
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.web.freshness import fresh_profile

MODEL = default_model()
RULES = load_rules()
FIRST = 1_700_000_000_000
LAST = FIRST + 90 * MS_PER_DAY
STORED_AT = LAST + 3 * MS_PER_DAY


def stored() -> dict[str, object]:
    return {
        "customer_id": "c1",
        "at_ms": STORED_AT,
        "updated_at": iso_ms(STORED_AT),
        "model_version": MODEL.version,
        "first_purchase_at": iso_ms(FIRST),
        "last_purchase_at": iso_ms(LAST),
        "repeat_days": 6,
        "days_since_last_purchase": 3.0,
        "churn_risk_band": "low",
        "drift_level": 0,
    }


def test_figures_are_computed_as_of_now() -> None:
    now = LAST + 75 * MS_PER_DAY
    body = fresh_profile(stored(), (now, MODEL, RULES))
    want = time_figures(
        MODEL, RULES, repeat_days=6, first_purchase_ms=FIRST, last_purchase_ms=LAST, at_ms=now
    )
    assert body["as_of_ms"] == now and body["as_of"] == iso_ms(now)
    assert body["days_since_last_purchase"] == 75.0 == want.days_since_last_purchase
    assert body["churn_risk_band"] == want.churn_risk_band
    assert body["p_alive"] == want.p_alive and body["churn_risk"] == want.churn_risk
    assert body["tenure_days"] == want.tenure_days
    # what time does not move stays as stored
    assert body["drift_level"] == 0 and body["updated_at"] == iso_ms(STORED_AT)


def test_left_as_stored_when_it_cannot_be_computed() -> None:
    later = LAST + 75 * MS_PER_DAY
    as_stored = dict(stored(), as_of=iso_ms(STORED_AT), as_of_ms=STORED_AT)
    assert fresh_profile(stored(), None) == as_stored  # no clock yet
    other_model = dict(stored(), model_version="another")
    assert fresh_profile(other_model, (later, MODEL, RULES))["days_since_last_purchase"] == 3.0
    no_purchase = dict(stored(), first_purchase_at=None, last_purchase_at=None)
    assert fresh_profile(no_purchase, (later, MODEL, RULES))["as_of_ms"] == STORED_AT
    # a clock behind the stored profile (another partition's): never shown older
    assert fresh_profile(stored(), (STORED_AT - 1, MODEL, RULES)) == as_stored
