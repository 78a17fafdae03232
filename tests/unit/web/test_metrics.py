"""Prometheus metrics of the HTTP side, rendered and parsed back, without services."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from schemas import DeadLetterReason
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import MemoryPartitionStore, Processor
from streams.web.metrics import OFFER_DECISIONS, Snapshot, WebMetrics

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def processor() -> Processor:
    return Processor(Settings(), load_rules(), default_model(), lambda _: MemoryPartitionStore())


def parsed(text: bytes) -> tuple[Samples, dict[str, Any]]:
    samples: Samples = {}
    types: dict[str, Any] = {}
    for family in text_string_to_metric_families(text.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples, types


def test_counters_come_from_the_processor_at_scrape_time() -> None:
    source = processor()
    metrics = WebMetrics(source)
    c = source.counters
    c.consumed, c.purchases, c.interactions, c.ticks = 10, 6, 2, 1
    c.duplicates, c.segment_changes, c.churn_alerts, c.corrections = 3, 4, 5, 6
    c.dead("invalid_json")
    c.dead("late_event")
    c.dead("late_event")

    samples, types = parsed(metrics.render(Snapshot({}, None)))
    assert samples["rfm_records_consumed_total"] == {(): 10}
    assert samples["rfm_events_consumed_total"] == {
        (("kind", "purchase"),): 6,
        (("kind", "interaction"),): 2,
        (("kind", "tick"),): 1,
    }
    dead = samples["rfm_dead_letters_total"]
    assert dead[(("reason", "invalid_json"),)] == 1
    assert dead[(("reason", "late_event"),)] == 2
    # every reason is a series from the start, so rate() and alerts work before the first one
    assert {dict(k)["reason"] for k in dead} == {r.value for r in DeadLetterReason}
    assert samples["rfm_duplicates_total"] == {(): 3}
    assert samples["rfm_late_corrections_total"] == {(): 6}
    assert samples["rfm_segment_changes_total"] == {(): 4}
    assert samples["rfm_churn_alerts_total"] == {(): 5}
    assert samples["rfm_model_info"] == {(("version", source.model.version),): 1}
    assert types["rfm_records_consumed"] == "counter"
    assert types["rfm_consumer_lag"] == "gauge"

    c.consumed = 11  # read again on the next scrape, not copied
    samples, _ = parsed(metrics.render(Snapshot({}, None)))
    assert samples["rfm_records_consumed_total"] == {(): 11}


def test_batches_offers_lag_and_segment_sizes() -> None:
    metrics = WebMetrics(processor())
    metrics.observe_batch(0.004, 120)
    metrics.observe_batch(0.2, 2000)
    metrics.observe_batch(-1.0, -5)  # a clock step back must not break the histogram
    metrics.observe_offer("offer")
    metrics.observe_offer("offer")
    metrics.observe_offer("holdout")
    snapshot = Snapshot(
        lag={("rfm.purchases", 0): 7, ("rfm.purchases", 1): 0},
        segments={"quadrant": {"true_friend": 4, "stranger": 0}, "rfm_segment": {"lost": 2}},
    )
    samples, types = parsed(metrics.render(snapshot))

    assert types["rfm_batch_duration_seconds"] == "histogram"
    assert samples["rfm_batch_duration_seconds_count"] == {(): 3}
    assert samples["rfm_batch_duration_seconds_bucket"][(("le", "0.005"),)] == 2
    assert samples["rfm_batch_events_sum"] == {(): 2120}
    offers = samples["rfm_retention_offers_total"]
    assert offers[(("decision", "offer"),)] == 2
    assert offers[(("decision", "holdout"),)] == 1
    assert {dict(k)["decision"] for k in offers} == set(OFFER_DECISIONS)
    assert samples["rfm_consumer_lag"] == {
        (("partition", "0"), ("topic", "rfm.purchases")): 7,
        (("partition", "1"), ("topic", "rfm.purchases")): 0,
    }
    assert samples["rfm_segment_customers"] == {
        (("dimension", "quadrant"), ("segment", "true_friend")): 4,
        (("dimension", "quadrant"), ("segment", "stranger")): 0,
        (("dimension", "rfm_segment"), ("segment", "lost")): 2,
    }


def test_without_redis_the_segment_gauge_is_empty_not_wrong() -> None:
    samples, types = parsed(WebMetrics(processor()).render(Snapshot({}, None)))
    assert "rfm_segment_customers" in types
    assert "rfm_segment_customers" not in samples


def test_registries_are_private() -> None:
    # two apps in one process (tests do this) must not collide, nor touch the global registry
    first, second = WebMetrics(processor()), WebMetrics(processor())
    first.observe_offer("offer")
    assert (
        parsed(second.render(Snapshot({}, None)))[0]["rfm_retention_offers_total"][
            (("decision", "offer"),)
        ]
        == 0
    )
    assert prometheus_client.REGISTRY.get_sample_value("rfm_retention_offers_total") is None


def test_lift_gauges_from_the_outcome_counters() -> None:
    from streams.domain.lift import ArmCounts, lift_table

    rows = lift_table(
        {
            ("TF-RECOGNITION", "true_friend", "treated"): ArmCounts(100, 40, 400_000, 0, 0.0),
            ("TF-RECOGNITION", "true_friend", "holdout"): ArmCounts(20, 5, 50_000, 0, 0.0),
        }
    )
    samples, types = parsed(WebMetrics(processor()).render(Snapshot({}, None, rows)))
    key = (("offer_code", "TF-RECOGNITION"), ("quadrant", "*"))
    assert types["rfm_offer_lift"] == "gauge"
    assert samples["rfm_offer_lift"][key] == 0.40 - 0.25
    low = samples["rfm_offer_lift_bound"][(("bound", "low"), *key)]
    high = samples["rfm_offer_lift_bound"][(("bound", "high"), *key)]
    assert low < 0.15 < high
    assert samples["rfm_offer_conversion"][(("arm", "holdout"), *key)] == 0.25
    assert samples["rfm_offer_outcomes_closed"][(("arm", "treated"), *key)] == 100
    assert samples["rfm_offer_incremental_revenue_cents"][key] == 4_000 - 2_500


def test_without_outcomes_the_lift_gauges_are_empty() -> None:
    samples, types = parsed(WebMetrics(processor()).render(Snapshot({}, None)))
    assert "rfm_offer_lift" in types and "rfm_offer_lift" not in samples
    assert samples["rfm_offer_outcomes_total"][()] == 0
