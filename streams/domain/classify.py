"""Evaluate a customer at an event time: scores, segment, quadrant, drift; what changed; when next.

:func:`assess` is read-only (views, the API). :func:`evaluate` is what the stream runs when a
customer is due: it folds the purchases that time has closed past, classifies, emits a
:class:`SegmentChanged` / :class:`ChurnRiskRaised` for what changed, and stores the next event
time at which the classification could change with no new event (:func:`next_due_ms`). That
time is exact: recency boundaries, window buckets expiring, P(alive) crossing a level (closed
form), the purchase rhythm becoming overdue, tenure reaching the loyalty minimum.
"""

from __future__ import annotations

import math

from streams.domain.churn import (
    churn_risk_band,
    days_until_p_alive_below,
    p_alive,
    p_no_purchase_within,
)
from streams.domain.drift import (
    next_drift_ms,
    overdue_level,
    p_alive_level,
    rhythm_gap_days,
    severity_name,
)
from streams.domain.events import Cause, ChurnRiskRaised, OutputEvent, Profile, SegmentChanged
from streams.domain.facts import MS_PER_DAY, day_of
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.domain.scoring import ascending_score, recency_drop_after_days, recency_score
from streams.domain.segments import is_loyal, is_profitable, quadrant_of, rfm_segment
from streams.domain.state import REFUND, CustomerState, fold_purchase, prune_buckets


def assess(state: CustomerState, now_ms: int, model: Model, rules: Rules) -> Profile:
    """Classify ``state`` as of ``now_ms`` without changing it (hysteresis from its current)."""
    w, h = rules.windows, rules.hysteresis
    short_n, short_c = state.window_totals(now_ms, w.bucket_days, w.short_buckets)
    long_n, long_c = state.window_totals(now_ms, w.bucket_days, w.long_buckets)
    engagement = state.engagement(now_ms, w.bucket_days, w.engagement_buckets)
    base = {
        "customer_id": state.customer_id,
        "at_ms": now_ms,
        "model_version": model.version,
        "purchase_count": state.orders,
        "repeat_days": state.repeat_days,
        "frequency_window": short_n,
        "monetary_window_cents": short_c,
        "long_frequency": long_n,
        "long_monetary_cents": long_c,
        "mean_order_value_cents": long_c // long_n if long_n else None,
        "engagement": engagement,
        "last_interaction_ms": state.last_touch_ms,
        "first_purchase_ms": state.first_ms,
        "last_purchase_ms": state.last_ms,
    }
    if state.first_ms is None or state.last_ms is None:
        return Profile(
            scores=None,
            rfm_segment=None,
            quadrant=None,
            loyal=False,
            profitable=False,
            p_alive=None,
            churn_risk=None,
            churn_risk_band=None,
            drift_level=0,
            days_since_last_purchase=None,
            avg_days_between_purchases=None,
            gap_std_days=None,
            expected_next_purchase_ms=None,
            tenure_days=None,
            **base,  # type: ignore[arg-type]
        )
    days_since = max(now_ms - state.last_ms, 0) / MS_PER_DAY
    current = state.scores
    scores = (
        recency_score(
            days_since,
            model.recency_cuts_days,
            current[0] if current else None,
            h.relative,
            h.recency_days,
        ),
        ascending_score(
            short_n, model.frequency_cuts, current[1] if current else None, h.relative
        ),
        ascending_score(
            max(short_c, 0), model.monetary_cuts_cents, current[2] if current else None, h.relative
        ),
    )
    x, t_x = state.repeat_days, state.t_x_days
    age = max(state.age_days(now_ms), float(t_x))
    alive = p_alive(model.bgnbd, x, t_x, age)
    risk = p_no_purchase_within(model.bgnbd, rules.drift.horizon_days, x, t_x, age)
    tenure = (now_ms - state.first_ms) / MS_PER_DAY
    loyal = is_loyal(
        repeat_days=x,
        tenure_days=tenure,
        p_alive=alive,
        long_orders=long_n,
        split_orders=model.loyalty_split_orders,
        current=state.quadrant,
        rules=rules,
    )
    profitable = is_profitable(max(long_c, 0), model.profit_split_cents, state.quadrant, rules)
    mean_gap = state.mean_gap_days
    gap = rhythm_gap_days(x, mean_gap, rules.drift)
    level = max(
        p_alive_level(alive, rules.drift),
        overdue_level(days_since / gap if gap else None, rules.drift),
    )
    return Profile(
        scores=scores,
        rfm_segment=rfm_segment(scores, rules),
        quadrant=quadrant_of(loyal=loyal, profitable=profitable),
        loyal=loyal,
        profitable=profitable,
        p_alive=alive,
        churn_risk=risk,
        churn_risk_band=churn_risk_band(min(max(risk, 0.0), 1.0)),
        drift_level=level,
        days_since_last_purchase=days_since,
        avg_days_between_purchases=mean_gap,
        gap_std_days=state.gap_std_days,
        expected_next_purchase_ms=(
            state.last_ms + round(mean_gap * MS_PER_DAY) if mean_gap is not None else None
        ),
        tenure_days=tenure,
        **base,  # type: ignore[arg-type]
    )


def fold_closed(state: CustomerState, now_ms: int, rules: Rules) -> Cause:
    """Fold pending purchases with event time <= ``now_ms`` (in event-time order)."""
    bucket_days = rules.windows.bucket_days
    cause: Cause = "time"
    if state.pending and state.pending[0][0] <= now_ms:
        ready = [p for p in state.pending if p[0] <= now_ms]
        state.pending = [p for p in state.pending if p[0] > now_ms]
        for p in ready:  # pending is kept sorted by (event time, event id)
            fold_purchase(state, p, bucket_days)
        last = ready[-1]
        cause = "refund" if all(p[2] == REFUND for p in ready) else "purchase"
        edge = [p[1] for p in ready if p[0] == last[0]]
        state.edge_ids = (state.edge_ids if state.folded_ms == last[0] else []) + edge
        state.folded_ms = last[0]
        prune_buckets(state, now_ms, bucket_days, rules.windows.long_buckets)
    return cause


def evaluate(state: CustomerState, now_ms: int, model: Model, rules: Rules) -> list[OutputEvent]:
    """Run a due evaluation at event time ``now_ms``; mutates ``state``, returns its outputs."""
    cause = fold_closed(state, now_ms, rules)
    out: list[OutputEvent] = []
    if state.first_ms is None:
        state.evaluated_ms = now_ms
        state.next_due_ms = state.pending[0][0] if state.pending else None
        return out
    profile = assess(state, now_ms, model, rules)
    assert profile.rfm_segment is not None and profile.quadrant is not None
    if profile.rfm_segment != state.segment:
        out.append(_change(state, profile, "rfm_segment", state.segment, profile.rfm_segment, cause))
        state.segment, state.segment_since_ms = profile.rfm_segment, now_ms
    if profile.quadrant != state.quadrant:
        out.append(_change(state, profile, "quadrant", state.quadrant, profile.quadrant, cause))
        state.quadrant, state.quadrant_since_ms = profile.quadrant, now_ms
    state.scores = profile.scores
    if profile.drift_level > state.drift_level:
        out.append(_alert(state, profile, cause))
    if profile.drift_level > state.drift_level or cause == "purchase":
        # a purchase resets the drift level; time alone only ever raises it
        state.drift_level = profile.drift_level
    state.evaluated_ms = now_ms
    state.model_version = model.version
    state.next_due_ms = next_due_ms(state, profile, model, rules)
    return out


def _next_id(state: CustomerState) -> str:
    state.seq += 1
    return f"{state.customer_id}:{state.seq}"


def _change(
    state: CustomerState,
    profile: Profile,
    dimension: str,
    before: str | None,
    after: str,
    cause: Cause,
) -> SegmentChanged:
    return SegmentChanged(
        id=_next_id(state),
        customer_id=state.customer_id,
        at_ms=profile.at_ms,
        dimension="quadrant" if dimension == "quadrant" else "rfm_segment",
        from_value=before,
        to_value=after,
        cause=cause,
        profile=profile,
    )


def _alert(state: CustomerState, profile: Profile, cause: Cause) -> ChurnRiskRaised:
    assert profile.p_alive is not None and profile.days_since_last_purchase is not None
    return ChurnRiskRaised(
        id=_next_id(state),
        customer_id=state.customer_id,
        at_ms=profile.at_ms,
        severity=severity_name(profile.drift_level),
        previous_level=state.drift_level,
        p_alive=profile.p_alive,
        elapsed_days=profile.days_since_last_purchase,
        typical_gap_days=profile.avg_days_between_purchases,
        true_friend_drifting=profile.quadrant == "true_friend" and profile.drift_level >= 2,
        cause=cause,
        profile=profile,
    )


def next_due_ms(state: CustomerState, profile: Profile, model: Model, rules: Rules) -> int | None:
    """The earliest event time after ``profile.at_ms`` at which this customer must be re-run."""
    now = profile.at_ms
    candidates: list[int] = []
    if state.pending:
        candidates.append(state.pending[0][0])
    if state.first_ms is None or state.last_ms is None or profile.scores is None:
        return min(candidates) if candidates else None
    w, h = rules.windows, rules.hysteresis
    drop = recency_drop_after_days(
        model.recency_cuts_days, profile.scores[0], h.relative, h.recency_days
    )
    if drop is not None:
        candidates.append(state.last_ms + math.floor(drop * MS_PER_DAY) + 1)
    bucket_ms = w.bucket_days * MS_PER_DAY
    newest = now // bucket_ms
    for width in (w.short_buckets, w.long_buckets):
        in_window = [b for b in state.buckets if newest - width < b <= newest]
        if in_window:
            candidates.append((min(in_window) + width) * bucket_ms)
    first_day = day_of(state.first_ms)
    x, t_x = state.repeat_days, state.t_x_days
    age = max(state.age_days(now), float(t_x))
    drift_due = next_drift_ms(
        level=state.drift_level,
        params=model.bgnbd,
        first_day=first_day,
        last_ms=state.last_ms,
        repeat_days=x,
        t_x_days=t_x,
        age_days=age,
        gap_days=rhythm_gap_days(x, state.mean_gap_days, rules.drift),
        rules=rules.drift,
    )
    if drift_due is not None:
        candidates.append(drift_due)
    if profile.loyal and x > 0:
        threshold = rules.loyalty.min_p_alive * (1 - h.relative)
        if 0 < threshold < 1:
            crossing = days_until_p_alive_below(model.bgnbd, x, t_x, age, threshold)
            if crossing is not None:
                candidates.append(math.floor((first_day + crossing) * MS_PER_DAY) + 1)
    tenure_ms = math.ceil(rules.loyalty.min_tenure_days * MS_PER_DAY)
    if now - state.first_ms < tenure_ms:
        candidates.append(state.first_ms + tenure_ms)
    later = [c for c in candidates if c > now]
    return min(later) if later else None
