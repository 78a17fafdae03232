"""Churn alerts against a real holdout: the CDNOW calibration/holdout evaluation.

The CDNOW master log (23,570 customers who first bought in early 1997, their purchases up to
1998-06-30) is the standard public test of customer-base models. The literature's split:

* **calibration**: purchases up to the cut-off (1997-09-30 by default);
* **holdout**: the rest of the log (to 1998-06-30); *churned* = no purchase in the holdout.

The calibration period is folded through the same core the worker runs with the default
model, the model is calibrated on that population (quantile cut points and the BG/NBD fit),
and the period is replayed with the calibrated model: every segment change and churn alert the
stream would have emitted, and every customer's state at the cut-off. Then:

* the **drifting-true-friend alerts active at the cut-off** (raised since the customer's last
  purchase) against the two BG/NBD rankings a data team would use instead — lowest P(alive) and
  lowest conditional expected purchases over the holdout — picking the same number of
  customers from the same population (true friends at the cut-off, and customers whose active
  alert says they drifted as a true friend): precision (share churned) and recall;
* the same for each severity, so that "critical" can be checked to be more often right;
* **alerts raised during calibration followed by a purchase within 90 days** (wasted budget);
* **quadrant changes undone within 30 days** (flapping), among changes at least 30 days
  before the cut-off;
* **churn-band calibration**: the observed share of customers with no purchase in the 90 days
  after the cut-off, per churn-risk band at the cut-off;
* **outputs per customer-year**;
* **regular buyers' long gaps** over the whole log (:func:`regular_gap_tails`): how often a
  customer with a regular rhythm is silent several own gaps and then buys again, the false
  alarms a rhythm-based alert would raise on real data.

Pure and offline: no Kafka, no clock; the log is passed in as lines.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from streams.domain.churn import expected_purchases, p_alive, p_no_purchase_within
from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import ChurnRiskRaised, DomainEvent, SegmentChanged
from streams.domain.facts import MS_PER_DAY, PurchaseFact, SourcePosition, day_of
from streams.domain.model import Model, calibrate, default_model
from streams.domain.rules import SEVERITIES, Rules
from streams.domain.state import PURCHASE, CustomerState, fold_purchase

STANDARD_CUT_OFF = date(1997, 9, 30)
LOG_END = date(1998, 6, 30)
FOLLOW_UP_DAYS = 90  # an alert followed by a purchase this soon was not needed
UNDONE_DAYS = 30  # a quadrant change reversed this soon is flapping
BAND_DAYS = 90  # the churn-risk band's horizon


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Purchase:
    customer_id: str
    at_ms: int
    cents: int


def read_cdnow(lines: Iterable[bytes | str]) -> list[Purchase]:
    """CDNOW text log rows ``customer_id YYYYMMDD cds dollars`` (a header line is skipped).

    ``CDNOW_sample.txt`` rows have two ids (master, sample); the sample id is used.
    """
    out: list[Purchase] = []
    for raw in lines:
        text = raw.decode() if isinstance(raw, bytes) else raw
        fields = text.split()
        if len(fields) < 4 or not fields[-3].isdigit():
            continue
        day = fields[-3]
        at = _ms(date(int(day[:4]), int(day[4:6]), int(day[6:8])))
        out.append(Purchase(fields[-4], at, round(float(fields[-1]) * 100)))
    out.sort(key=lambda p: p.at_ms)  # stable: same-day rows keep file order
    return out


@dataclass(frozen=True, slots=True)
class Selection:
    """A set of customers flagged as churning, scored against the holdout."""

    name: str
    count: int
    churned: int
    population_churned: int

    @property
    def precision(self) -> float:
        return self.churned / self.count if self.count else 0.0

    @property
    def recall(self) -> float:
        return self.churned / self.population_churned if self.population_churned else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "count": self.count,
            "churned": self.churned,
            "precision": self.precision,
            "recall": self.recall,
        }


@dataclass
class HoldoutReport:
    """Every figure of the evaluation; see the module docstring for their definitions."""

    cut_off: date
    holdout_end: date
    customers: int = 0
    model_version: str = ""
    population: int = 0  # true friends (and drifting true friends) at the cut-off
    population_churn_rate: float = 0.0
    true_friends: int = 0
    selections: list[Selection] = field(default_factory=list)
    by_severity: list[Selection] = field(default_factory=list)
    alerts_raised: int = 0
    alerts_followed_by_purchase: int = 0
    alerts_by_severity: dict[str, tuple[int, int]] = field(default_factory=dict)
    quadrant_changes: int = 0
    quadrant_changes_undone: int = 0
    bands: dict[str, tuple[int, int]] = field(default_factory=dict)  # band -> (n, no purchase)
    outputs: Counter[str] = field(default_factory=Counter)
    customer_years: float = 0.0
    gap_tails: GapTails | None = None

    @property
    def alert_coverage(self) -> float:
        return self.selections[0].count / self.population if self.population else 0.0

    @property
    def followed_share(self) -> float:
        return self.alerts_followed_by_purchase / self.alerts_raised if self.alerts_raised else 0.0

    @property
    def undone_share(self) -> float:
        return (
            self.quadrant_changes_undone / self.quadrant_changes if self.quadrant_changes else 0.0
        )

    def outputs_per_customer_year(self) -> dict[str, float]:
        years = self.customer_years or 1.0
        per = {kind: n / years for kind, n in sorted(self.outputs.items())}
        per["all"] = sum(self.outputs.values()) / years
        return per

    def lines(self) -> list[str]:
        """The report as Markdown tables, ready for a document."""
        out = [
            f"CDNOW, calibration to {self.cut_off}, holdout to {self.holdout_end}: "
            f"{self.customers:,} customers; {self.true_friends:,} true friends at the cut-off, "
            f"{self.population:,} with the drifting ones, holdout churn rate "
            f"{self.population_churn_rate:.3f}.",
            "",
            "| selection, same count | count | precision (churned) | recall |",
            "|---|---|---|---|",
        ]
        for sel in self.selections + self.by_severity:
            out.append(f"| {sel.name} | {sel.count:,} | {sel.precision:.3f} | {sel.recall:.3f} |")
        out += [
            "",
            f"- alerts cover {self.alert_coverage:.1%} of the population;",
            f"- drifting-true-friend alerts raised during calibration followed by a purchase "
            f"within {FOLLOW_UP_DAYS} days: {self.alerts_followed_by_purchase:,} of "
            f"{self.alerts_raised:,} ({self.followed_share:.1%})"
            + "".join(
                f"; {sev} {f}/{n} ({f / n:.1%})"
                for sev, (n, f) in self.alerts_by_severity.items()
                if n
            )
            + ";",
            f"- quadrant changes undone within {UNDONE_DAYS} days: "
            f"{self.quadrant_changes_undone:,} of {self.quadrant_changes:,} "
            f"({self.undone_share:.1%});",
            f"- churn-risk band at the cut-off, observed share with no purchase in the next "
            f"{BAND_DAYS} days: "
            + ", ".join(
                f"{band} {z / n:.3f} ({n:,} customers)" if n else f"{band} -"
                for band, (n, z) in self.bands.items()
            )
            + " (stated: low < 0.33, medium 0.33-0.66, high > 0.66);",
            "- outputs per customer-year: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.outputs_per_customer_year().items())
            + ".",
        ]
        if self.gap_tails is not None and self.gap_tails.gaps:
            g = self.gap_tails
            out.append(
                f"- regular buyers (>= {REGULAR_MIN_GAPS} gaps, gap CV <= {REGULAR_MAX_CV}), "
                f"whole log: of {g.gaps:,} next gaps, "
                + ", ".join(
                    f"{g.longer[k] / g.gaps:.1%} longer than {k}x the mean" for k in g.longer
                )
                + f"; {g.came_back} of {g.silences} silences beyond "
                f"{LONG_SILENCE_GAPS:g} own gaps ended with a purchase."
            )
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "cut_off": self.cut_off.isoformat(),
            "holdout_end": self.holdout_end.isoformat(),
            "customers": self.customers,
            "model_version": self.model_version,
            "population": self.population,
            "true_friends": self.true_friends,
            "population_churn_rate": self.population_churn_rate,
            "alert_coverage": self.alert_coverage,
            "selections": [s.as_dict() for s in self.selections],
            "active_alerts_by_severity": [s.as_dict() for s in self.by_severity],
            "alerts_raised": self.alerts_raised,
            "alerts_followed_by_purchase_within_90_days": self.alerts_followed_by_purchase,
            "alerts_followed_share": self.followed_share,
            "alerts_by_severity": {
                k: {"raised": n, "followed": f} for k, (n, f) in self.alerts_by_severity.items()
            },
            "quadrant_changes": self.quadrant_changes,
            "quadrant_changes_undone_within_30_days": self.quadrant_changes_undone,
            "quadrant_undone_share": self.undone_share,
            "bands": {
                k: {"customers": n, "no_purchase_90_days": z, "rate": z / n if n else None}
                for k, (n, z) in self.bands.items()
            },
            "outputs_per_customer_year": self.outputs_per_customer_year(),
            "customer_years": self.customer_years,
            "regular_gap_tails": self.gap_tails.as_dict() if self.gap_tails else None,
        }


REGULAR_MIN_GAPS = 8
REGULAR_MAX_CV = 0.5
LONG_SILENCE_GAPS = 3.0
_TAIL_MULTIPLES = (1.5, 2.0, 2.5, 3.0, 4.0)


@dataclass(frozen=True, slots=True)
class GapTails:
    """Next gaps of customers with a regular rhythm so far, against their mean gap so far."""

    gaps: int
    longer: dict[float, int]  # multiple of the mean gap -> next gaps longer than it
    silences: int  # silences beyond LONG_SILENCE_GAPS own gaps (incl. to the log's end)
    came_back: int  # ... that ended with a purchase

    def as_dict(self) -> dict[str, object]:
        return {
            "gaps": self.gaps,
            "longer_than_multiple_of_mean": {str(k): v for k, v in self.longer.items()},
            "silences": self.silences,
            "came_back": self.came_back,
        }


def regular_gap_tails(log: Sequence[Purchase]) -> GapTails:
    """After each purchase day of a customer with at least ``REGULAR_MIN_GAPS`` gaps whose
    gap CV so far is at most ``REGULAR_MAX_CV``: is the next gap longer than k times the mean
    gap so far? A silence rule tuned to regular buyers fires on each of those that came back."""
    days: dict[str, set[int]] = {}
    for p in log:
        days.setdefault(p.customer_id, set()).add(p.at_ms // MS_PER_DAY)
    end = max(p.at_ms for p in log) // MS_PER_DAY
    gaps = silences = came_back = 0
    longer = dict.fromkeys(_TAIL_MULTIPLES, 0)
    for seen in days.values():
        ordered = sorted(seen)
        total = total_sq = 0.0
        for i in range(1, len(ordered)):
            gap = ordered[i] - ordered[i - 1]
            total += gap
            total_sq += gap * gap
            if i < REGULAR_MIN_GAPS:
                continue
            mean = total / i
            cv = (max(total_sq / i - mean * mean, 0.0)) ** 0.5 / mean
            if cv > REGULAR_MAX_CV:
                continue
            if i + 1 < len(ordered):
                following = ordered[i + 1] - ordered[i]
                gaps += 1
                for k in longer:
                    longer[k] += following > k * mean
                if following > LONG_SILENCE_GAPS * mean:
                    silences += 1
                    came_back += 1
            elif end - ordered[i] > LONG_SILENCE_GAPS * mean:
                silences += 1
    return GapTails(gaps, longer, silences, came_back)


def _replay(
    purchases: Sequence[Purchase], end_ms: int, rules: Rules, model: Model
) -> tuple[DictStore, list[DomainEvent]]:
    store = DictStore()
    engine = PartitionEngine(rules, model, store)
    out: list[DomainEvent] = []
    for offset, p in enumerate(purchases):
        fact = PurchaseFact(
            event_id=f"cdnow-{offset}",
            customer_id=p.customer_id,
            at_ms=p.at_ms,
            order_id=f"cdnow-{offset}",
            amount_cents=p.cents,
        )
        out.extend(engine.on_purchase(fact, SourcePosition("purchases", 0, offset)))
    # close event time past the cut-off so every customer due at it is evaluated there
    out.extend(engine.tick(end_ms + rules.allowed_lateness_ms + 1))
    return store, out


def _fold(purchases: Sequence[Purchase], rules: Rules) -> dict[str, CustomerState]:
    """Customers' aggregates only, for calibration: what a first pass would fold, minus the
    classification, which calibration does not read."""
    states: dict[str, CustomerState] = {}
    bucket_days = rules.windows.bucket_days
    for offset, p in enumerate(purchases):
        state = states.get(p.customer_id)
        if state is None:
            state = states[p.customer_id] = CustomerState(p.customer_id)
        fold_purchase(state, (p.at_ms, f"cdnow-{offset}", PURCHASE, p.cents, ""), bucket_days)
    return states


def _pick(
    name: str, chosen: Iterable[str], churned: set[str], population_churned: int
) -> Selection:
    ids = list(chosen)
    return Selection(name, len(ids), sum(c in churned for c in ids), population_churned)


def evaluate_holdout(
    log: Sequence[Purchase],
    rules: Rules,
    *,
    cut_off: date = STANDARD_CUT_OFF,
    holdout_end: date | None = None,
) -> HoldoutReport:
    """Run the whole evaluation; ``holdout_end`` defaults to the last day of the log."""
    cut_ms = _ms(cut_off)
    end_ms = _ms(holdout_end) if holdout_end else max(p.at_ms for p in log)
    if not end_ms > cut_ms:
        raise ValueError("the holdout must end after the cut-off")
    calibration = [p for p in log if p.at_ms <= cut_ms]
    if not calibration:
        raise ValueError("no purchase up to the cut-off")
    later: dict[str, list[int]] = {}
    for p in log:
        if p.at_ms <= end_ms:
            later.setdefault(p.customer_id, []).append(p.at_ms)

    model = calibrate(_fold(calibration, rules).values(), cut_ms, rules, default_model())
    store, events = _replay(calibration, cut_ms, rules, model)
    states = store.states
    report = HoldoutReport(
        cut_off=cut_off, holdout_end=datetime.fromtimestamp(end_ms / 1000, UTC).date()
    )
    report.customers = len(states)
    report.model_version = model.version
    report.gap_tails = regular_gap_tails(log)

    def buys_between(cid: str, after_ms: int, until_ms: int) -> bool:
        times = later.get(cid, [])
        i = bisect.bisect_right(times, after_ms)
        return i < len(times) and times[i] <= until_ms

    churned = {cid for cid in states if not buys_between(cid, cut_ms, end_ms)}

    # --- outputs, alerts and flapping
    active: dict[str, ChurnRiskRaised] = {}
    quadrant_moves: dict[str, list[SegmentChanged]] = {}
    followed_by_severity: dict[str, list[int]] = {s: [0, 0] for s in SEVERITIES}
    for e in events:
        if isinstance(e, SegmentChanged):
            report.outputs[f"{e.dimension}_change"] += 1
            if e.dimension == "quadrant" and e.from_value is not None:
                quadrant_moves.setdefault(e.customer_id, []).append(e)
        elif isinstance(e, ChurnRiskRaised):
            report.outputs["churn_alert"] += 1
            if not e.true_friend_drifting:
                continue
            report.alerts_raised += 1
            followed = buys_between(e.customer_id, e.at_ms, e.at_ms + FOLLOW_UP_DAYS * MS_PER_DAY)
            report.alerts_followed_by_purchase += followed
            counts = followed_by_severity[e.severity]
            counts[0] += 1
            counts[1] += followed
            last = states[e.customer_id].last_ms
            if last is not None and e.at_ms > last:
                active[e.customer_id] = e
    report.alerts_by_severity = {k: (v[0], v[1]) for k, v in followed_by_severity.items()}
    for moves in quadrant_moves.values():
        for i, move in enumerate(moves):
            if move.at_ms + UNDONE_DAYS * MS_PER_DAY > cut_ms:
                continue
            report.quadrant_changes += 1
            for back in moves[i + 1 :]:
                if back.at_ms > move.at_ms + UNDONE_DAYS * MS_PER_DAY:
                    break
                if back.to_value == move.from_value:
                    report.quadrant_changes_undone += 1
                    break

    # --- the population at the cut-off and the BG/NBD rankings
    params = model.bgnbd
    horizon = (end_ms - cut_ms) / MS_PER_DAY
    cut_day = day_of(cut_ms)
    population: list[str] = []
    alive: dict[str, float] = {}
    expected: dict[str, float] = {}
    bands: dict[str, list[int]] = {"low": [0, 0], "medium": [0, 0], "high": [0, 0]}
    for cid, s in states.items():
        if s.first_ms is None:
            continue
        report.customer_years += (cut_ms - s.first_ms) / MS_PER_DAY / 365.25
        x, t_x, age = s.repeat_days, s.t_x_days, float(cut_day - day_of(s.first_ms))
        risk = p_no_purchase_within(params, BAND_DAYS, x, t_x, age)
        band = bands["low" if risk < 0.33 else "high" if risk > 0.66 else "medium"]
        band[0] += 1
        band[1] += not buys_between(cid, cut_ms, cut_ms + BAND_DAYS * MS_PER_DAY)
        if s.quadrant == "true_friend":
            report.true_friends += 1
        if s.quadrant == "true_friend" or cid in active:
            population.append(cid)
            alive[cid] = p_alive(params, x, t_x, age)
            expected[cid] = expected_purchases(params, horizon, x, t_x, age)
    report.bands = {k: (v[0], v[1]) for k, v in bands.items()}
    report.population = len(population)
    pop_churned = sum(c in churned for c in population)
    report.population_churn_rate = pop_churned / len(population) if population else 0.0
    n = len(active)
    report.selections = [
        _pick("drifting-true-friend alerts active at the cut-off", active, churned, pop_churned),
        _pick(
            "lowest BG/NBD P(alive)",
            sorted(population, key=lambda c: (alive[c], c))[:n],
            churned,
            pop_churned,
        ),
        _pick(
            "lowest BG/NBD expected purchases in the holdout",
            sorted(population, key=lambda c: (expected[c], c))[:n],
            churned,
            pop_churned,
        ),
    ]
    report.by_severity = [
        _pick(
            f"active {sev} alerts",
            (c for c, e in active.items() if e.severity == sev),
            churned,
            pop_churned,
        )
        for sev in SEVERITIES[1:]  # a drifting-true-friend alert is a warning or worse
    ]
    return report
