"""The offer policy: quadrant strategies, no-offer rules, cooldown, caps, holdout."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.events import ChurnRiskRaised, Profile, SegmentChanged
from streams.domain.facts import MS_PER_DAY
from streams.domain.offers import OfferDecision, OfferHistory, Trigger, in_holdout
from streams.domain.offers import decide as decide_on
from streams.domain.rules import OfferRules, load_rules

T = 1_700_000_000_000


def decide(
    event: ChurnRiskRaised | SegmentChanged, history: OfferHistory, rules: OfferRules
) -> OfferDecision | None:
    trigger = Trigger.from_event(event)
    return None if trigger is None else decide_on(trigger, history, rules)


RULES = load_rules().offers
NO_HOLDOUT = RULES.model_copy(update={"holdout_percent": 0})


def _profile(quadrant: str) -> Profile:
    return Profile(
        customer_id="c",
        at_ms=T,
        model_version="m",
        scores=(3, 3, 3),
        rfm_segment="need_attention",
        quadrant=quadrant,
        loyal=quadrant in ("true_friend", "barnacle"),
        profitable=quadrant in ("true_friend", "butterfly"),
        p_alive=0.4,
        churn_risk=0.7,
        churn_risk_band="high",
        drift_level=2,
        first_purchase_ms=T - 400 * MS_PER_DAY,
        last_purchase_ms=T - 40 * MS_PER_DAY,
        purchase_count=20,
        repeat_days=19,
        frequency_window=2,
        monetary_window_cents=30_000,
        long_frequency=10,
        long_monetary_cents=150_000,
        mean_order_value_cents=15_000,
        days_since_last_purchase=40.0,
        avg_days_between_purchases=19.0,
        gap_std_days=3.0,
        expected_next_purchase_ms=T - 21 * MS_PER_DAY,
        tenure_days=400.0,
        engagement=None,
        last_interaction_ms=None,
    )


def alert(quadrant: str, severity: str = "warning", customer: str = "c") -> ChurnRiskRaised:
    return ChurnRiskRaised(
        id=f"{customer}:7",
        customer_id=customer,
        at_ms=T,
        severity=severity,  # type: ignore[arg-type]
        previous_level=1,
        p_alive=0.4,
        elapsed_days=40.0,
        typical_gap_days=19.0,
        true_friend_drifting=quadrant == "true_friend",
        cause="time",
        profile=dataclasses.replace(_profile(quadrant), customer_id=customer),
    )


def entered(quadrant: str) -> SegmentChanged:
    return SegmentChanged(
        id="c:3",
        customer_id="c",
        at_ms=T,
        dimension="quadrant",
        from_value="butterfly",
        to_value=quadrant,
        cause="purchase",
        profile=_profile(quadrant),
    )


def test_true_friend_drifting_gets_the_strongest_offer() -> None:
    d = decide(alert("true_friend"), OfferHistory(), NO_HOLDOUT)
    assert d is not None
    assert (d.decision, d.offer_code, d.id, d.trigger_id) == (
        "offer",
        "TF-WINBACK-VIP",
        "offer:c:7",
        "c:7",
    )
    assert d.expires_at_ms == T + 30 * MS_PER_DAY


def test_butterfly_gets_a_short_offer_then_nothing_once_gone() -> None:
    short = decide(alert("butterfly", "watch"), OfferHistory(), NO_HOLDOUT)
    gone = decide(alert("butterfly", "critical"), OfferHistory(), NO_HOLDOUT)
    assert short is not None
    assert gone is not None
    assert short.offer_code == "BF-FLASH-48H"
    assert (gone.decision, gone.offer_code) == ("no_offer", None)


def test_strangers_get_a_deliberate_no_and_unruled_triggers_nothing() -> None:
    d = decide(alert("stranger"), OfferHistory(), NO_HOLDOUT)
    assert d is not None
    assert d.decision == "no_offer"
    assert decide(entered("stranger"), OfferHistory(), NO_HOLDOUT) is None
    segment = dataclasses.replace(entered("true_friend"), dimension="rfm_segment")
    assert decide(segment, OfferHistory(), NO_HOLDOUT) is None


def test_cooldown_then_cap() -> None:
    recent = OfferHistory((T - 3 * MS_PER_DAY,))
    d = decide(alert("true_friend"), recent, NO_HOLDOUT)
    assert d is not None
    assert d.decision == "cooldown"
    busy = OfferHistory((T - 80 * MS_PER_DAY, T - 50 * MS_PER_DAY, T - 20 * MS_PER_DAY))
    d = decide(alert("true_friend"), busy, NO_HOLDOUT)
    assert d is not None
    assert d.decision == "capped"
    old = OfferHistory((T - 200 * MS_PER_DAY,))
    d = decide(alert("true_friend"), old, NO_HOLDOUT)
    assert d is not None
    assert d.decision == "offer"


@given(st.lists(st.text(min_size=1, max_size=12), min_size=200, max_size=200, unique=True))
def test_holdout_is_stable_and_near_its_share(customers: list[str]) -> None:
    rules = RULES.model_copy(update={"holdout_percent": 50})
    first = [in_holdout(c, rules) for c in customers]
    assert first == [in_holdout(c, rules) for c in customers]
    assert 60 <= sum(first) <= 140  # 50 % of 200, far outside binomial noise only by a bug


def test_holdout_customers_get_a_recorded_non_offer() -> None:
    everyone = OfferRules.model_validate({**RULES.model_dump(), "holdout_percent": 100})
    d = decide(alert("true_friend"), OfferHistory(), everyone)
    assert d is not None
    assert (d.decision, d.offer_code, d.records) == ("holdout", None, True)
