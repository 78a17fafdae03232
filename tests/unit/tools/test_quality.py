"""The quality report on generated logs: floors that catch regressions, each one justified.

Measured (1,000 customers, seeds 0 and 1): quadrant accuracy 100 %, recall 97.5 % and 95 %
(39/40, 38/40 churned true friends), precision 100 % (35/35, 33/33), median detection delay
45.4 and 47.5 days, 3.41 and 3.50 of the customer's own mean gap.

* accuracy >= 97 %: the personas keep well clear of every split of the default model, so
  anything below means a rule or the state broke, not noise;
* recall >= 90 % and precision >= 80 %: the drift rule judges a regular buyer's silence
  against their own rhythm and everyone by BG/NBD's expected purchases, so an alive true
  friend's ordinary gaps do not raise a drifting alert and a stopped one does;
* median delay <= 52 days and <= 4 own gaps: the warning needs the expected purchases over
  90 days below 0.25, which for a frequent, regular buyer takes three to four own gaps of
  silence after the last purchase (the stop itself falls about half a gap after it). One own
  gap, the product's aim, is not reached, and cannot be from purchases alone at this
  precision: :func:`test_one_own_gap_of_delay_costs_the_precision` shows that even a rule
  that knows each customer's mean gap is a few per cent precise at that delay, on personas
  whose alive gaps never exceed 2.5 times their mean (real regular buyers' do, often: see
  docs/domain.md, known limitations).
"""

from __future__ import annotations

import statistics
from datetime import datetime

import orjson
import pytest

from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.personas import GeneratedLog, PersonaConfig, generate
from streams.tools.quality import QualityReport, measure

DELAY_DAYS_FLOOR = 52.0
DELAY_GAPS_FLOOR = 4.0


@pytest.fixture(scope="module", params=[0, 1])
def generated(request: pytest.FixtureRequest) -> tuple[PersonaConfig, GeneratedLog]:
    config = PersonaConfig.for_customers(
        1_000, seed=request.param, partitions=Settings().partitions
    )
    return config, generate(config)


@pytest.fixture(scope="module")
def report(generated: tuple[PersonaConfig, GeneratedLog]) -> QualityReport:
    config, log = generated
    return measure(log.lines, log.truth, config.end_ms, Settings(), load_rules(), default_model())


def test_quadrant_accuracy(report: QualityReport) -> None:
    assert report.active > 700
    assert report.quadrant_accuracy >= 0.97, report.confusion


def test_churned_true_friends_are_detected(report: QualityReport) -> None:
    assert report.churned_true_friends >= 20
    assert report.recall >= 0.90


def test_detection_delay(report: QualityReport) -> None:
    assert statistics.median(report.delays_days) <= DELAY_DAYS_FLOOR
    assert statistics.median(report.delays_gaps) <= DELAY_GAPS_FLOOR
    assert min(report.delays_days) >= 0
    assert len(report.delays_gaps) == len(report.delays_days)


def test_alert_precision(report: QualityReport) -> None:
    assert report.alerted_before_end > 0
    assert report.precision >= 0.80


def _silence_rule(log: GeneratedLog, end_ms: int, multiple: float) -> tuple[float, float | None]:
    """Precision and median delay (in own gaps) of a rule that sees only purchase days and
    alerts once a silence reaches ``multiple`` times the customer's mean gap so far (from the
    third gap on), scored like :func:`measure` (precision among customers alerted before the
    end, delay after the true stop, the alert within 60 days of the end)."""
    days: dict[str, set[float]] = {}
    for line, label in zip(log.lines, log.labels, strict=True):
        if label not in ("ok", "reordered"):
            continue
        event = orjson.loads(line)
        if event.get("type") == "purchase":
            at = datetime.fromisoformat(event["occurred_at"]).timestamp() / 86_400
            days.setdefault(event["customer_id"], set()).add(float(int(at)))
    end = end_ms / 86_400_000
    alerted = right = 0
    delays: list[float] = []
    for t in log.truth:
        seen = sorted(days.get(t.customer_id, ()))
        if t.persona != "true_friend" or len(seen) < 4:
            continue
        stop = t.churned_at.timestamp() / 86_400 if t.churned_at else None
        alert = None
        for i in range(3, len(seen) + 1):
            mean = (seen[i - 1] - seen[0]) / (i - 1)
            if i == len(seen) or seen[i] - seen[i - 1] > multiple * mean:
                alert = seen[i - 1] + multiple * mean
                break
        assert alert is not None
        if alert <= end:
            alerted += 1
            right += stop is not None and alert >= stop
        if stop is not None and stop <= alert <= end + 60 and t.orders > 1:
            assert t.first_purchase_at and t.last_purchase_at
            gap = (t.last_purchase_at - t.first_purchase_at).total_seconds() / 86_400
            delays.append((alert - stop) / (gap / (t.orders - 1)))
    return right / alerted, statistics.median(delays) if delays else None


def test_one_own_gap_of_delay_costs_the_precision(
    generated: tuple[PersonaConfig, GeneratedLog],
) -> None:
    """Why the delay floor is not one own gap: even a rule that knows each customer's own
    mean gap, alerting at a fixed multiple of it, only reaches precision 0.8 at about two and
    a half own gaps of delay, and a one-gap delay leaves it a few per cent precise."""
    config, log = generated
    frontier = {k: _silence_rule(log, config.end_ms, k) for k in (1.5, 2.0, 2.5, 3.0, 3.5)}
    precise = [d for p, d in frontier.values() if p >= 0.8 and d is not None]
    assert precise, frontier
    assert min(precise) > 1.5, frontier
    fast = [p for p, d in frontier.values() if d is not None and d <= 1.2]
    assert fast and max(fast) < 0.2, frontier
