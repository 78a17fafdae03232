"""The quality report on generated logs: floors that catch regressions, each one justified.

Measured (1,000 customers, seeds 0 and 1): quadrant accuracy 100 %, recall 100 % (40/40
churned true friends), precision 32 % and 29 %, median detection delay 20.6 and 23.9 days,
max 46 days.

* accuracy >= 97 %: the personas keep well clear of every split of the default model, so
  anything below means a rule or the state broke, not noise;
* recall >= 90 %: a true friend who stops buying crosses the 2x-own-rhythm warning within
  about 2 x 18 days of the last purchase and P(alive) levels soon after; missing more than
  one in ten means the time-driven path is broken;
* median delay <= 35 days: the warning threshold is twice a true friend's mean gap (10-18
  days) after the last purchase, which is at most 36 days;
* precision >= 20 %: the rhythm rule fires on normal gap variance for some loyal customers
  (a known weakness, see docs/domain.md); the floor catches it getting markedly worse.
"""

from __future__ import annotations

import statistics

import pytest

from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.personas import PersonaConfig, generate
from streams.tools.quality import QualityReport, measure


@pytest.fixture(scope="module", params=[0, 1])
def report(request: pytest.FixtureRequest) -> QualityReport:
    settings = Settings()
    config = PersonaConfig.for_customers(1_000, seed=request.param, partitions=settings.partitions)
    log = generate(config)
    return measure(log.lines, log.truth, config.end_ms, settings, load_rules(), default_model())


def test_quadrant_accuracy(report: QualityReport) -> None:
    assert report.active > 700
    assert report.quadrant_accuracy >= 0.97, report.confusion


def test_churned_true_friends_are_detected(report: QualityReport) -> None:
    assert report.churned_true_friends >= 20
    assert report.recall >= 0.90


def test_detection_delay(report: QualityReport) -> None:
    assert statistics.median(report.delays_days) <= 35
    assert min(report.delays_days) >= 0


def test_alert_precision(report: QualityReport) -> None:
    assert report.alerted_before_end > 0
    assert report.precision >= 0.20
