"""Evaluate a customer at an event time: scores, segment, quadrant, drift; what changed; when next.

A :class:`Classifier` is the rule book and the model compiled into lookup tables (hysteresis
cut points per current score, the segment of every R/F/M triple), because it runs once per
purchase on the stream's hot path.

* :meth:`Classifier.assess` is read-only: the full :class:`Profile` (views, the API).
* :meth:`Classifier.evaluate` is what the stream runs when a customer is due: it folds the
  purchases that time has closed past, classifies, emits a :class:`SegmentChanged` or
  :class:`ChurnRiskRaised` for what changed, and stores the next event time at which the
  classification could change with no new event. That time is exact: a recency boundary, a
  window bucket expiring, P(alive) crossing a level (closed form), the purchase rhythm becoming
  overdue, tenure reaching the loyalty minimum.
"""

from __future__ import annotations

import math
from itertools import product
from typing import final

from streams.domain.churn import (
    churn_risk_band,
    days_until_p_alive_below,
    p_alive,
    p_no_purchase_within,
)
from streams.domain.drift import drift_crossing_age, drift_expected, drift_level, severity_name
from streams.domain.events import Cause, ChurnRiskRaised, OutputEvent, Profile, SegmentChanged
from streams.domain.facts import MS_PER_DAY, day_of
from streams.domain.model import Model
from streams.domain.outcomes import count_purchase
from streams.domain.rules import Rules
from streams.domain.scoring import (
    ascending_score,
    hysteresis_cuts,
    recency_cuts,
    recency_drop_after_days,
    recency_score,
)
from streams.domain.segments import is_loyal, is_profitable, quadrant_of, rfm_segment
from streams.domain.state import (
    PURCHASE,
    REFUND,
    CustomerState,
    fold_purchase,
    forget_before,
    prune_buckets,
)

# bound on the classifier's cache of drift crossings (cleared when full; values are pure)
_CROSSING_CACHE = 100_000
# the bisected crossing is within ~0.01 ms; a few 1-ms steps settle float rounding
_DUE_ADJUST_STEPS = 8


@final
class Verdict:
    """The classification part of a profile: what evaluation compares against state.

    A plain class rather than a frozen dataclass: one is built per evaluation, and a frozen
    dataclass's generated ``__init__`` (interpreted even in the compiled core) costs more than
    the rest of the verdict. Treat it as read-only.
    """

    __slots__ = (
        "age_days",
        "days_since",
        "level",
        "long_cents",
        "long_oldest",
        "long_orders",
        "loyal",
        "p_alive",
        "profitable",
        "quadrant",
        "scores",
        "segment",
        "short_cents",
        "short_oldest",
        "short_orders",
    )

    def __init__(
        self,
        *,
        scores: tuple[int, int, int],
        segment: str,
        quadrant: str,
        loyal: bool,
        profitable: bool,
        p_alive: float,
        level: int,
        days_since: float,
        age_days: float,
        short_orders: int,
        short_cents: int,
        long_orders: int,
        long_cents: int,
        short_oldest: int | None,
        long_oldest: int | None,
    ) -> None:
        self.scores = scores
        self.segment = segment
        self.quadrant = quadrant
        self.loyal = loyal
        self.profitable = profitable
        self.p_alive = p_alive
        self.level = level
        self.days_since = days_since
        self.age_days = age_days
        self.short_orders = short_orders
        self.short_cents = short_cents
        self.long_orders = long_orders
        self.long_cents = long_cents
        self.short_oldest = short_oldest
        self.long_oldest = long_oldest


class Classifier:
    """Rules + model compiled for the hot path. Build once per model version."""

    def __init__(self, rules: Rules, model: Model) -> None:
        self.rules = rules
        self.model = model
        h = rules.hysteresis
        rel = h.relative
        # index 0: no current score yet (first classification); 1..5: the current score
        currents: list[int | None] = [None, 1, 2, 3, 4, 5]
        self._r_cuts = [
            recency_cuts(model.recency_cuts_days, c, rel, h.recency_days) for c in currents
        ]
        self._f_cuts = [hysteresis_cuts(model.frequency_cuts, c, rel) for c in currents]
        self._m_cuts = [hysteresis_cuts(model.monetary_cuts_cents, c, rel) for c in currents]
        self._segment = {
            (r, f, m): rfm_segment((r, f, m), rules)
            for r, f, m in product(range(1, 6), range(1, 6), range(1, 6))
        }
        self._recency_drop = [math.inf] + [
            recency_drop_after_days(self._r_cuts[c], c) or math.inf for c in range(1, 6)
        ]
        w, d, lo = rules.windows, rules.drift, rules.loyalty
        self._bucket_ms = w.bucket_days * MS_PER_DAY
        self._short, self._long, self._long_keep = w.short_buckets, w.long_buckets, w.long_buckets
        self._drift = d
        # drift crossing ages by (x, t_x, squared gaps, level): the same for every evaluation
        # between two purchases, and a pure function of them and the model
        self._crossings: dict[tuple[int, int, int, int], float | None] = {}
        self._rel = rel
        self._loyalty = lo
        self._min_alive = lo.min_p_alive
        self._tenure_ms = math.ceil(lo.min_tenure_days * MS_PER_DAY)
        self._horizon_ms = rules.late_horizon_ms
        self._profit_split = model.profit_split_cents
        self._loyal_split = model.loyalty_split_orders
        # the verdict of the latest evaluate() call, so that the profile the views show for
        # that moment reuses it instead of classifying the customer a second time
        self.last_verdict: tuple[int, Verdict] | None = None

    # ------------------------------------------------------------------ classification
    def _verdict(self, state: CustomerState, now_ms: int) -> Verdict:
        assert state.first_ms is not None and state.last_ms is not None
        newest = now_ms // self._bucket_ms
        short_from, long_from = newest - self._short, newest - self._long
        sn = sc = ln = lc = 0
        short_oldest = long_oldest = None
        for b, (n, c) in state.buckets.items():
            if long_from < b <= newest:
                ln += n
                lc += c
                if long_oldest is None or b < long_oldest:
                    long_oldest = b
                if b > short_from:
                    sn += n
                    sc += c
                    if short_oldest is None or b < short_oldest:
                        short_oldest = b
        days_since = (now_ms - state.last_ms) / MS_PER_DAY if now_ms > state.last_ms else 0.0
        cur = state.scores
        cr, cf, cm = cur if cur else (0, 0, 0)
        scores = (
            recency_score(days_since, self._r_cuts[cr]),
            ascending_score(sn, self._f_cuts[cf]),
            ascending_score(sc if sc > 0 else 0, self._m_cuts[cm]),
        )
        x = state.repeat_days
        first_day = day_of(state.first_ms)
        t_x = day_of(state.last_ms) - first_day
        age = now_ms / MS_PER_DAY - first_day
        if age < t_x:
            age = float(t_x)
        alive = p_alive(self.model.bgnbd, x, t_x, age)
        expected = drift_expected(self.model.bgnbd, x, t_x, age, state.gap_sq_days, self._drift)
        level = drift_level(expected, x, t_x, self._drift)
        # Drift ends loyalty at critical ("gone", whatever the window says), and nobody becomes
        # loyal while drifting at warning or worse: a true friend is not made from a silence.
        was_loyal = state.quadrant == "true_friend" or state.quadrant == "barnacle"
        loyal = level < (3 if was_loyal else 2) and is_loyal(
            repeat_days=x,
            tenure_days=(now_ms - state.first_ms) / MS_PER_DAY,
            p_alive=alive,
            long_orders=ln,
            split_orders=self._loyal_split,
            current=state.quadrant,
            rules=self._loyalty,
            relative=self._rel,
        )
        profitable = is_profitable(lc, self._profit_split, state.quadrant, self._rel)
        return Verdict(
            scores=scores,
            segment=self._segment[scores],
            quadrant=quadrant_of(loyal=loyal, profitable=profitable),
            loyal=loyal,
            profitable=profitable,
            p_alive=alive,
            level=level,
            days_since=days_since,
            age_days=age,
            short_orders=sn,
            short_cents=sc,
            long_orders=ln,
            long_cents=lc,
            short_oldest=short_oldest,
            long_oldest=long_oldest,
        )

    def assess(
        self,
        state: CustomerState,
        now_ms: int,
        verdict: Verdict | None = None,
        *,
        engagement: bool = True,
    ) -> Profile:
        """The customer's full profile as of ``now_ms``; does not change ``state``.

        Output events are built with ``engagement=False``: interactions arrive on their own
        topic, so how they interleave with purchases is not reproducible, and an output must
        be (the same log gives the same outputs). Views and the API show engagement.
        """
        w = self.rules.windows
        touches = (
            state.engagement(now_ms, w.bucket_days, w.engagement_buckets) if engagement else None
        )
        last_touch = state.last_touch_ms if engagement else None
        if state.first_ms is None or state.last_ms is None:
            return Profile(
                customer_id=state.customer_id,
                at_ms=now_ms,
                model_version=self.model.version,
                scores=None,
                rfm_segment=None,
                quadrant=None,
                loyal=False,
                profitable=False,
                p_alive=None,
                churn_risk=None,
                churn_risk_band=None,
                drift_level=0,
                first_purchase_ms=None,
                last_purchase_ms=None,
                purchase_count=state.orders,
                repeat_days=0,
                frequency_window=0,
                monetary_window_cents=0,
                long_frequency=0,
                long_monetary_cents=0,
                mean_order_value_cents=None,
                days_since_last_purchase=None,
                avg_days_between_purchases=None,
                gap_std_days=None,
                expected_next_purchase_ms=None,
                tenure_days=None,
                engagement=touches,
                last_interaction_ms=last_touch,
            )
        v = verdict or self._verdict(state, now_ms)
        x, t_x = state.repeat_days, state.t_x_days
        risk = p_no_purchase_within(
            self.model.bgnbd, self.rules.drift.horizon_days, x, t_x, v.age_days
        )
        risk = min(max(risk, 0.0), 1.0)
        mean_gap = state.mean_gap_days
        return Profile(
            customer_id=state.customer_id,
            at_ms=now_ms,
            model_version=self.model.version,
            scores=v.scores,
            rfm_segment=v.segment,
            quadrant=v.quadrant,
            loyal=v.loyal,
            profitable=v.profitable,
            p_alive=v.p_alive,
            churn_risk=risk,
            churn_risk_band=churn_risk_band(risk),
            drift_level=v.level,
            first_purchase_ms=state.first_ms,
            last_purchase_ms=state.last_ms,
            purchase_count=state.orders,
            repeat_days=x,
            frequency_window=v.short_orders,
            monetary_window_cents=v.short_cents,
            long_frequency=v.long_orders,
            long_monetary_cents=v.long_cents,
            mean_order_value_cents=v.long_cents // v.long_orders if v.long_orders else None,
            days_since_last_purchase=v.days_since,
            avg_days_between_purchases=mean_gap,
            gap_std_days=state.gap_std_days,
            expected_next_purchase_ms=(
                state.last_ms + round(mean_gap * MS_PER_DAY) if mean_gap is not None else None
            ),
            tenure_days=(now_ms - state.first_ms) / MS_PER_DAY,
            engagement=touches,
            last_interaction_ms=last_touch,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, state: CustomerState, now_ms: int, late: int = 0) -> list[OutputEvent]:
        """Run a due evaluation at event time ``now_ms``; mutates ``state``, returns outputs.

        ``late`` is PURCHASE or REFUND when a late fact was just folded in (a correction: the
        outputs' cause is ``late_purchase``, and a late purchase resets the drift level as an
        in-time one does), 0 for a due evaluation.
        """
        self.last_verdict = None
        cause = fold_closed(state, now_ms, self.rules)
        forget_before(state, now_ms - self._horizon_ms)
        if late:
            cause = "late_purchase"
        state.evaluated_ms = now_ms
        if state.first_ms is None:
            state.next_due_ms = state.pending[0][0] if state.pending else None
            return []
        v = self._verdict(state, now_ms)
        out: list[OutputEvent] = []
        profile: Profile | None = None
        was_true_friend = state.quadrant == "true_friend"
        if v.segment != state.segment:
            profile = profile or self.assess(state, now_ms, v, engagement=False)
            out.append(_change(state, profile, "rfm_segment", state.segment, v.segment, cause))
            state.segment, state.segment_since_ms = v.segment, now_ms
        if v.quadrant != state.quadrant:
            profile = profile or self.assess(state, now_ms, v, engagement=False)
            out.append(_change(state, profile, "quadrant", state.quadrant, v.quadrant, cause))
            state.quadrant, state.quadrant_since_ms = v.quadrant, now_ms
        state.scores = v.scores
        if v.level > state.drift_level:
            profile = profile or self.assess(state, now_ms, v, engagement=False)
            out.append(_alert(state, profile, v.level, cause, was_true_friend))
        if v.level > state.drift_level or cause == "purchase" or late == PURCHASE:
            # a purchase resets the drift level; time alone only ever raises it
            state.drift_level = v.level
        state.model_version = self.model.version
        state.next_due_ms = self._next_due(state, v, now_ms)
        self.last_verdict = (now_ms, v)
        return out

    def _level_at(self, state: CustomerState, first_day: int, at_ms: int) -> int:
        """The drift level :meth:`_verdict` finds at ``at_ms``, with no further purchase."""
        x, t_x = state.repeat_days, state.t_x_days
        age = max(at_ms / MS_PER_DAY - first_day, float(t_x))
        expected = drift_expected(self.model.bgnbd, x, t_x, age, state.gap_sq_days, self._drift)
        return drift_level(expected, x, t_x, self._drift)

    def _drift_due_ms(self, state: CustomerState, first_day: int, crossing_age: float) -> int:
        """The first millisecond at which the drift level exceeds the state's: the crossing
        age turned into event time, then checked (and moved by a few ms if rounding says so)
        against the very computation an evaluation at that time makes."""
        level = state.drift_level
        at = math.floor((first_day + crossing_age) * MS_PER_DAY)
        for _ in range(_DUE_ADJUST_STEPS):
            if self._level_at(state, first_day, at) > level:
                break
            at += 1
        for _ in range(_DUE_ADJUST_STEPS):
            if self._level_at(state, first_day, at - 1) <= level:
                break
            at -= 1
        return at

    def _drift_due(
        self, state: CustomerState, x: int, t_x: int, first_day: int, before: int | None
    ) -> int | None:
        """The first millisecond at which the drift level exceeds the state's, when that may
        come before ``before`` (None: no bound); None when it never comes, or surely not before.

        The level only rises with time between purchases, so when it has not risen by
        ``before`` the crossing lies after it: one evaluation of the level instead of a root
        search (dozens of them). A cached crossing is turned into a due time only when it may
        fall before ``before``: :meth:`_drift_due_ms` moves it by at most a few milliseconds.
        """
        key = (x, t_x, state.gap_sq_days, state.drift_level)
        if key in self._crossings:
            crossing = self._crossings[key]
            if crossing is None:
                return None
            if (
                before is not None
                and math.floor((first_day + crossing) * MS_PER_DAY) - _DUE_ADJUST_STEPS >= before
            ):
                return None
        else:
            if before is not None and self._level_at(state, first_day, before) <= state.drift_level:
                return None
            if len(self._crossings) >= _CROSSING_CACHE:
                self._crossings.clear()
            crossing = drift_crossing_age(
                self.model.bgnbd, x, t_x, state.gap_sq_days, state.drift_level, self._drift
            )
            self._crossings[key] = crossing
            if crossing is None:
                return None
        return self._drift_due_ms(state, first_day, crossing)

    def _next_due(self, state: CustomerState, v: Verdict, now: int) -> int | None:
        """The earliest event time after ``now`` at which this customer must be re-run."""
        assert state.first_ms is not None and state.last_ms is not None
        best = state.pending[0][0] if state.pending else None

        def consider(at: int) -> None:
            nonlocal best
            if at > now and (best is None or at < best):
                best = at

        drop = self._recency_drop[v.scores[0]]
        if drop != math.inf:
            consider(state.last_ms + math.floor(drop * MS_PER_DAY) + 1)
        if v.short_oldest is not None:
            consider((v.short_oldest + self._short) * self._bucket_ms)
        if v.long_oldest is not None:
            consider((v.long_oldest + self._long) * self._bucket_ms)
        x = state.repeat_days
        first_day = day_of(state.first_ms)
        t_x = day_of(state.last_ms) - first_day
        if v.loyal:
            threshold = self._min_alive * (1 - self._rel)
            if 0 < threshold < 1:
                crossing = days_until_p_alive_below(self.model.bgnbd, x, t_x, v.age_days, threshold)
                if crossing is not None:
                    consider(math.floor((first_day + crossing) * MS_PER_DAY) + 1)
        if now - state.first_ms < self._tenure_ms:
            consider(state.first_ms + self._tenure_ms)
        # Drift last: its due time needs a root search, so it is skipped whenever another due
        # time is known to come first (see _drift_due).
        if state.drift_level < 3 and x > 0 and (best is None or best > now):
            due = self._drift_due(state, x, t_x, first_day, best)
            if due is not None:
                consider(due)
        return best


def fold_closed(state: CustomerState, now_ms: int, rules: Rules) -> Cause:
    """Fold pending purchases with event time <= ``now_ms`` (in event-time order)."""
    cause: Cause = "time"
    if state.pending and state.pending[0][0] <= now_ms:
        bucket_days = rules.windows.bucket_days
        ready = [p for p in state.pending if p[0] <= now_ms]
        state.pending = [p for p in state.pending if p[0] > now_ms]
        for p in ready:  # pending is kept sorted by (event time, event id)
            fold_purchase(state, p, bucket_days)
        if state.outcomes:
            for p in ready:
                count_purchase(state.outcomes, p[0], p[2], p[3])
        last = ready[-1]
        cause = "refund" if all(p[2] == REFUND for p in ready) else "purchase"
        ids = state.folded_ids
        for p in ready:
            ids[p[1]] = day_of(p[0])
        if state.folded_ms is None or last[0] > state.folded_ms:
            state.folded_ms = last[0]
        prune_buckets(state, now_ms, bucket_days, rules.windows.long_buckets)
    return cause


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


def _alert(
    state: CustomerState, profile: Profile, level: int, cause: Cause, was_true_friend: bool
) -> ChurnRiskRaised:
    """A drifting true friend: a true friend before this evaluation or after it (a critical
    drift also ends loyalty, so the quadrant leaves true friend in the same evaluation)."""
    assert profile.p_alive is not None and profile.days_since_last_purchase is not None
    return ChurnRiskRaised(
        id=_next_id(state),
        customer_id=state.customer_id,
        at_ms=profile.at_ms,
        severity=severity_name(level),
        previous_level=state.drift_level,
        p_alive=profile.p_alive,
        elapsed_days=profile.days_since_last_purchase,
        typical_gap_days=profile.avg_days_between_purchases,
        true_friend_drifting=(was_true_friend or profile.quadrant == "true_friend") and level >= 2,
        cause=cause,
        profile=profile,
    )
