"""The benchmarks' input: a seeded, realistic mix of purchases, interactions and bad records.

Every Kafka benchmark reads the same kind of log so that their figures compare:

* customers with Gamma-distributed activity (a few very active, most occasional);
* ``purchase_share`` of the events purchases (3 % of those refunds), the rest interactions
  (visits, product views, email opens and clicks, cart adds);
* ``invalid_share`` of the records bad: malformed JSON, wrong types, unknown schema versions
  (they must all become dead letters);
* event times spread over ``span_days`` ending at a fixed instant, in event-time order, so the
  log plays like live traffic of that period (time-driven re-evaluations included).

Records are keyed by customer id and partitioned the way the product's producers do (murmur2),
so per-customer order holds and every consumer sees the same partitions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from streams.config import Settings
from streams.tools.replay import Planned, partition_for

END = datetime(2026, 6, 1, tzinfo=UTC)
_KINDS = ("visit", "product_view", "email_open", "email_click", "cart_add")
_BAD = (
    b'{"schema_version": 1, "event_id": "bad-',  # cut off
    b'{"schema_version": 1, "type": "purchase", "amount": "lots"}',
    b'{"schema_version": 7, "type": "visit", "event_id": "x", "customer_id": "c"}',
    b"\x00\x01 not json \xff",
)


@dataclass(frozen=True, slots=True)
class Workload:
    """What to generate; the same fields and seed give the same bytes."""

    events: int = 1_000_000
    customers: int = 100_000
    span_days: float = 30.0
    purchase_share: float = 0.3
    invalid_share: float = 0.01
    seed: int = 20261123

    def describe(self) -> str:
        return (
            f"{self.events:,} events, {self.customers:,} customers, {self.span_days:g} days of "
            f"event time, {self.purchase_share:.0%} purchases, {self.invalid_share:.0%} invalid"
        )


def generate(w: Workload, settings: Settings) -> list[Planned]:
    """The log as records to produce, in event-time order."""
    rng = random.Random(w.seed)
    t = settings.topics
    partitions = settings.partitions
    weights = [rng.gammavariate(0.6, 1.0) for _ in range(w.customers)]
    ids = [f"cust-{i:07d}" for i in range(w.customers)]
    chosen = rng.choices(ids, weights=weights, k=w.events)
    start_ms = int((END - timedelta(days=w.span_days)).timestamp() * 1000)
    span_ms = max(1, int(w.span_days * 86_400_000))
    times = sorted(start_ms + rng.randrange(span_ms) for _ in range(w.events))
    keys: dict[str, tuple[bytes, int]] = {}
    out: list[Planned] = []
    for i, (customer, at_ms) in enumerate(zip(chosen, times, strict=True)):
        key_part = keys.get(customer)
        if key_part is None:
            key = customer.encode()
            key_part = keys[customer] = (key, partition_for(key, partitions))
        key, partition = key_part
        at = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
        roll = rng.random()
        if roll < w.invalid_share:
            bad = _BAD[i % len(_BAD)]
            topic = t.purchases if i % 2 else t.interactions
            out.append(Planned(topic, partition, key, bad, at_ms))
        elif roll < w.invalid_share + w.purchase_share:
            refund = rng.random() < 0.03
            value = {
                "schema_version": 1,
                "type": "refund" if refund else "purchase",
                "event_id": f"p{i}",
                "customer_id": customer,
                "occurred_at": at,
                "order_id": f"o{i}",
                "amount": f"{rng.randint(500, 30_000) / 100:.2f}",
                "currency": settings.currency,
            }
            out.append(Planned(t.purchases, partition, key, orjson.dumps(value), at_ms))
        else:
            value = {
                "schema_version": 1,
                "event_id": f"i{i}",
                "customer_id": customer,
                "occurred_at": at,
                "type": _KINDS[i % len(_KINDS)],
                "channel": "web",
            }
            out.append(Planned(t.interactions, partition, key, orjson.dumps(value), at_ms))
    return out


def produce_fast(planned: Sequence[Planned], settings: Settings, progress: bool = True) -> float:
    """Produce the log as fast as the broker takes it; returns records/s.

    Unlike ``rfm-stream replay`` (kafka-python, acks=all, one request in flight, so order
    survives retries) this favours speed: aiokafka's batch builder, acks=1. It only fills
    benchmark topics on loopback.
    """
    import asyncio
    import time

    from rich.progress import Progress

    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks=1,
            linger_ms=20,
            max_batch_size=1024 * 1024,
            security_protocol=settings.kafka_security_protocol,
        )
        await producer.start()
        try:
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task("producing the benchmark log", total=len(planned))
                pending = []
                for n, r in enumerate(planned, start=1):
                    pending.append(
                        await producer.send(r.topic, r.value, key=r.key, partition=r.partition)
                    )
                    if n % 20_000 == 0:
                        await asyncio.gather(*pending)
                        pending.clear()
                        bar.update(task, completed=n)
                await asyncio.gather(*pending)
        finally:
            await producer.stop()

    started = time.perf_counter()
    asyncio.run(run())
    return len(planned) / (time.perf_counter() - started)
