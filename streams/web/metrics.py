"""Prometheus metrics of one worker, in a registry of its own (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas import DeadLetterReason
from streams.domain.lift import LiftRow
from streams.processor import Counters

OFFER_DECISIONS: Final = ("offer", "no_offer", "holdout", "capped", "cooldown")
BATCH_SECONDS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
BATCH_EVENTS_BUCKETS: Final = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000)


class _Versioned(Protocol):
    @property
    def version(self) -> str: ...


class CountersSource(Protocol):
    """What the metrics read from the stream processor (``streams.processor.Processor``)."""

    @property
    def counters(self) -> Counters: ...

    @property
    def model(self) -> _Versioned: ...


@dataclass
class Snapshot:
    """Values that need I/O, fetched by the scrape handler before rendering."""

    lag: Mapping[tuple[str, int], int]
    segments: Mapping[str, Mapping[str, int]] | None
    lift: Sequence[LiftRow] | None = None


class _StreamCollector(Collector):
    """Counters of the processor, read at scrape time (they live in the processor anyway)."""

    def __init__(self, source: CountersSource, snapshot: Callable[[], Snapshot]) -> None:
        self._source = source
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Counters(), Snapshot({}, None), None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._source.counters, self._snapshot(), self._source))

    def _families(
        self, c: Counters, snap: Snapshot, source: CountersSource | None
    ) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "rfm_records_consumed", "Input records consumed (valid, invalid and ticks)."
        )
        records.add_metric([], c.consumed)
        yield records
        events = CounterMetricFamily(
            "rfm_events_consumed",
            "Valid input records by kind; invalid ones are counted as dead letters.",
            labels=["kind"],
        )
        for kind, n in (("purchase", c.purchases), ("interaction", c.interactions)):
            events.add_metric([kind], n)
        events.add_metric(["tick"], c.ticks)
        yield events
        dead = CounterMetricFamily(
            "rfm_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            labels=["reason"],
        )
        reasons = {r.value: 0 for r in DeadLetterReason} | c.dead_letters
        for reason, n in sorted(reasons.items()):
            dead.add_metric([reason], n)
        yield dead
        for name, help_text, value in (
            ("rfm_duplicates", "Repeated or redelivered events (no-ops).", c.duplicates),
            (
                "rfm_late_corrections",
                "Late purchases and refunds folded in as corrections (cause late_purchase).",
                c.corrections,
            ),
            ("rfm_segment_changes", "Segment changes published.", c.segment_changes),
            ("rfm_churn_alerts", "Churn alerts published.", c.churn_alerts),
            ("rfm_offer_outcomes", "Offer outcomes published (closed windows).", c.offer_outcomes),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        lag = GaugeMetricFamily(
            "rfm_consumer_lag",
            "Records not yet committed by this worker: log end offset minus committed offset.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(snap.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        sizes = GaugeMetricFamily(
            "rfm_segment_customers",
            "Customers per audience (Redis views, shared by all workers).",
            labels=["dimension", "segment"],
        )
        for dimension, names in sorted((snap.segments or {}).items()):
            for name, n in sorted(names.items()):
                sizes.add_metric([dimension, name], n)
        yield sizes
        yield from lift_families(snap.lift or ())
        model = GaugeMetricFamily(
            "rfm_model_info", "The model this worker scores with.", labels=["version"]
        )
        if source is not None:
            model.add_metric([source.model.version], 1)
        yield model


def lift_families(rows: Iterable[LiftRow]) -> Iterator[Metric]:
    """Lift gauges (shared by all workers: from the outcome counters in Redis). Labels
    ``offer_code`` and ``quadrant``; ``*`` is every strategy or every quadrant."""
    labels = ["offer_code", "quadrant"]
    outcomes = GaugeMetricFamily(
        "rfm_offer_outcomes_closed",
        "Closed offer outcomes by arm (treated: offer sent; holdout: control group).",
        labels=[*labels, "arm"],
    )
    conversion = GaugeMetricFamily(
        "rfm_offer_conversion",
        "Share of closed outcomes with a purchase within the window, by arm.",
        labels=[*labels, "arm"],
    )
    lift = GaugeMetricFamily(
        "rfm_offer_lift",
        "Conversion of the treated minus the holdout's (absent until both arms have outcomes).",
        labels=labels,
    )
    bounds = GaugeMetricFamily(
        "rfm_offer_lift_bound",
        "The 95 % Newcombe interval of rfm_offer_lift (bound: low or high).",
        labels=[*labels, "bound"],
    )
    revenue = GaugeMetricFamily(
        "rfm_offer_incremental_revenue_cents",
        "Net revenue in the window per offer sent, treated minus holdout (cents).",
        labels=labels,
    )
    for row in rows:
        key = [row.offer_code, row.quadrant]
        for arm, counts in (("treated", row.treated), ("holdout", row.holdout)):
            outcomes.add_metric([*key, arm], counts.n)
            if counts.conversion is not None:
                conversion.add_metric([*key, arm], counts.conversion)
        if row.lift is not None and row.low is not None and row.high is not None:
            lift.add_metric(key, row.lift)
            bounds.add_metric([*key, "low"], row.low)
            bounds.add_metric([*key, "high"], row.high)
        if row.incremental_revenue_cents is not None:
            revenue.add_metric(key, row.incremental_revenue_cents)
    yield from (outcomes, conversion, lift, bounds, revenue)


class WebMetrics:
    """A registry of this worker's own, so tests and several apps in one process never clash."""

    def __init__(self, source: CountersSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = Snapshot({}, None)
        self.batch_seconds = Histogram(
            "rfm_batch_duration_seconds",
            "Wall-clock time to process one batch of input records and publish its outputs.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "rfm_batch_events",
            "Input records per processed batch.",
            buckets=BATCH_EVENTS_BUCKETS,
            registry=self.registry,
        )
        self.offers = Counter(
            "rfm_retention_offers",
            "Retention-offer decisions seen on the offers topic by this worker, by decision.",
            ["decision"],
            registry=self.registry,
        )
        for decision in OFFER_DECISIONS:
            self.offers.labels(decision)
        self.registry.register(_StreamCollector(source, lambda: self._snapshot))

    def observe_batch(self, seconds: float, events: int) -> None:
        self.batch_seconds.observe(max(0.0, seconds))
        self.batch_events.observe(max(0, events))

    def observe_offer(self, decision: str) -> None:
        self.offers.labels(decision).inc()

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition format. Scrapes are served one at a time by the event loop."""
        self._snapshot = snapshot
        return generate_latest(self.registry)
