"""How good are the segments and the churn alerts? Measured on a log whose truth is known.

A generated log (:mod:`streams.tools.personas`) says, for every customer, the quadrant they
were built for and, for churners, the moment they stopped buying. The log is run through the same
:class:`Processor` the worker runs (replay ≡ live), then:

* **quadrant accuracy** — for customers still active at the end of the log, the quadrant the
  stream gives at that moment against the truth (with the confusion matrix);
* **churn alerts** — a *drifting true friend* alert (``true_friend_drifting``) is what marketing
  acts on. Recall: churned true friends alerted after they stopped (clock moved
  ``silence_days`` past the end). Precision: of the customers alerted before the end of the
  log, the share who had really stopped. Detection delay: first alert after the stop, minus
  the stop.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from streams.config import Settings
from streams.domain.facts import MS_PER_DAY
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.tools.personas import CustomerTruth
from streams.tools.reference import run_reference
from streams.tools.replay import Order, as_consumed, plan


@dataclass
class QualityReport:
    """The figures; ``confusion[true][predicted]`` counts active customers."""

    customers: int = 0
    active: int = 0
    correct: int = 0
    confusion: dict[str, Counter[str]] = field(default_factory=dict)
    churned_true_friends: int = 0
    detected: int = 0
    alerted_before_end: int = 0
    alerted_and_stopped: int = 0
    delays_days: list[float] = field(default_factory=list)
    delays_gaps: list[float] = field(default_factory=list)
    """Each delay divided by that customer's own mean gap between orders."""

    @property
    def quadrant_accuracy(self) -> float:
        return self.correct / self.active if self.active else 0.0

    @property
    def recall(self) -> float:
        return self.detected / self.churned_true_friends if self.churned_true_friends else 0.0

    @property
    def precision(self) -> float:
        return (
            self.alerted_and_stopped / self.alerted_before_end if self.alerted_before_end else 0.0
        )

    def delay_percentile(self, q: float) -> float | None:
        if not self.delays_days:
            return None
        ordered = sorted(self.delays_days)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_dict(self) -> dict[str, object]:
        return {
            "customers": self.customers,
            "active": self.active,
            "quadrant_accuracy": self.quadrant_accuracy,
            "confusion": {k: dict(v) for k, v in self.confusion.items()},
            "churned_true_friends": self.churned_true_friends,
            "recall": self.recall,
            "precision": self.precision,
            "alerted_before_end": self.alerted_before_end,
            "delay_days_median": statistics.median(self.delays_days) if self.delays_days else None,
            "delay_days_p90": self.delay_percentile(0.9),
            "delay_days_max": max(self.delays_days) if self.delays_days else None,
            "delay_own_gaps_median": (
                statistics.median(self.delays_gaps) if self.delays_gaps else None
            ),
        }


def _ms(iso: object) -> int | None:
    from datetime import datetime

    if iso is None:
        return None
    if isinstance(iso, datetime):
        return int(iso.timestamp() * 1000)
    return int(datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() * 1000)


def _mean_gap_days(t: CustomerTruth) -> float | None:
    """The customer's own typical gap: mean days between their orders in the log."""
    if t.first_purchase_at is None or t.last_purchase_at is None or t.orders < 2:
        return None
    span = (t.last_purchase_at - t.first_purchase_at).total_seconds() / 86_400
    return span / (t.orders - 1) if span > 0 else None


def measure(
    lines: Sequence[bytes],
    truth: Sequence[CustomerTruth],
    end_ms: int | None,
    settings: Settings,
    rules: Rules,
    model: Model,
    *,
    order: Order = "delivery",
    silence_days: int = 60,
) -> QualityReport:
    """Run the log (then ``silence_days`` with no event) and score it against the truth.

    ``end_ms`` is the end of the log (default: its last event time).
    """
    lateness = rules.allowed_lateness_ms
    if end_ms is None:
        times = [p.at_ms for p in plan(lines, settings, "jsonl") if p.at_ms is not None]
        end_ms = max(times) + lateness + 1
    planned = plan(lines, settings, "jsonl", end_tick_ms=end_ms, lateness_ms=lateness, order=order)
    later = plan([], settings, end_tick_ms=end_ms + silence_days * MS_PER_DAY)
    run = run_reference(settings, rules, model, as_consumed(planned + later))

    quadrant_at_end: dict[str, str] = {}
    first_alert_after: dict[str, int] = {}
    alerted_before_end: dict[str, int] = {}
    stop_ms = {t.customer_id: _ms(t.churned_at) for t in truth}
    for out in run.outputs:
        if out.topic not in (settings.topics.segment_changes, settings.topics.churn_alerts):
            continue
        event = orjson.loads(out.value)
        at = _ms(event["event_time"])
        assert at is not None
        cid = event["customer_id"]
        if event["type"] == "segment_change":
            if event["dimension"] == "quadrant" and at <= end_ms:
                quadrant_at_end[cid] = event["to_value"]
        elif event["true_friend_drifting"]:
            if at <= end_ms:
                alerted_before_end.setdefault(cid, at)
            stopped = stop_ms.get(cid)
            if stopped is not None and at >= stopped:
                first_alert_after.setdefault(cid, at)

    report = QualityReport(customers=len(truth))
    for t in truth:
        if t.churned_at is None:
            report.active += 1
            predicted = quadrant_at_end.get(t.customer_id, "unclassified")
            report.confusion.setdefault(t.quadrant, Counter())[predicted] += 1
            report.correct += predicted == t.quadrant
        elif t.persona == "true_friend":
            report.churned_true_friends += 1
            alert = first_alert_after.get(t.customer_id)
            stopped = stop_ms[t.customer_id]
            if alert is not None and stopped is not None:
                report.detected += 1
                report.delays_days.append((alert - stopped) / MS_PER_DAY)
                gap = _mean_gap_days(t)
                if gap is not None:
                    report.delays_gaps.append((alert - stopped) / MS_PER_DAY / gap)
    report.alerted_before_end = len(alerted_before_end)
    report.alerted_and_stopped = sum(
        1
        for cid, at in alerted_before_end.items()
        if stop_ms.get(cid) is not None and at >= (stop_ms[cid] or 0)
    )
    return report
