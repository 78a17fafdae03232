"""Latency: an event produced → its segment change consumed, under a steady background load.

    python -m bench.bench_latency --rate 4000 [--seconds 60] [--probes-per-s 50] [--lateness 0]

Runs one ``rfm-stream worker`` (everything on: table + changelog, outputs, Redis views) on fresh
topics. A producer sends background traffic (the benchmark workload's mix of purchases,
interactions and invalid records, stamped now) at ``--rate`` events/s, and among it *probes*:
first purchases of brand-new customers, each of which must produce a segment change. A
consumer of the segment-change topic in the same process (same clock) measures produce →
consumed for each probe. Use half of the one-worker throughput that ``bench_throughput``
measured as ``--rate``.

``--lateness`` is the rules' allowed lateness in seconds for the run. The product's default is
5 s: a purchase is classified once event time has closed past it, so with the default every
latency is at least 5 s by design (plus one live-clock tick when traffic is sparse). The
measurement therefore defaults to 0 s, which shows what the pipeline itself adds; docs/benchmarks.md
says how to choose the lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from bench.kit import (
    delete_topics,
    run_prefix,
    stack_settings,
    worker,
    worker_consumed,
)
from streams.config import Settings
from streams.domain.rules import load_rules
from streams.tools.replay import partition_for
from streams.worker.topics import ensure_topics

_KINDS = ("visit", "product_view", "email_open", "cart_add")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def slowest_seconds(timeline: list[tuple[float, float]], top: int = 5) -> list[str]:
    """The seconds of the run whose probes were slowest: when the tail happened (a pause
    every few seconds points at periodic work, a steady tail at queueing)."""
    by_second: dict[int, list[float]] = {}
    for at, latency in timeline:
        by_second.setdefault(int(at), []).append(latency * 1000)
    worst = sorted(by_second.items(), key=lambda item: max(item[1]), reverse=True)[:top]
    return [
        f"  second {second:>4}: max {max(ms):6.1f} ms, {sum(v > 50 for v in ms)} of {len(ms)} "
        "probes over 50 ms"
        for second, ms in sorted(worst)
    ]


def rules_with_lateness(seconds: float) -> Path:
    """The packaged rules file with another allowed lateness, for ``worker --rules``."""
    text = resources.files("streams.domain").joinpath("rules.toml").read_text("utf-8")
    text, n = re.subn(
        r"(?m)^allowed_lateness_seconds\s*=.*$", f"allowed_lateness_seconds = {seconds}", text
    )
    if n != 1:
        raise RuntimeError("rules.toml has no allowed_lateness_seconds line to change")
    path = Path(tempfile.mkstemp(prefix="rfm-bench-rules-", suffix=".toml")[1])
    path.write_text(text)
    load_rules(path)  # still valid
    return path


async def drive(
    settings: Settings, rate: float, probes_per_s: float, seconds: float, warmup: float
) -> tuple[list[float], int, int, list[tuple[float, float]]]:
    """Produce background + probes for ``seconds``; returns probe latencies (s), sent, lost
    and the timeline (:func:`slowest_seconds`)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    t = settings.topics
    rng = random.Random(7)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks=1,
        linger_ms=0,
        security_protocol=settings.kafka_security_protocol,
    )
    consumer = AIOKafkaConsumer(
        t.segment_changes,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        security_protocol=settings.kafka_security_protocol,
    )
    await producer.start()
    await consumer.start()
    # make sure the consumer has its position before the first probe is sent
    for _ in range(200):
        if consumer.assignment():
            break
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():
        await consumer.position(tp)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    """(seconds into the run the probe was sent, its latency) of each probe measured."""
    done = asyncio.Event()

    async def consume() -> None:
        def outstanding() -> bool:  # probes sent and not seen yet (warm-up ones are -1)
            return any(v >= 0 for v in sent_at.values())

        while not done.is_set() or outstanding():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for messages in batches.values():
                for m in messages:
                    key = (m.key or b"").decode()
                    started = sent_at.pop(key, None)
                    if started is not None and started >= 0:
                        latencies.append(now - started)
                        timeline.append((started - begin, now - started))
                    elif started is not None:
                        sent_at[key] = -1.0  # warm-up probe: seen, not counted
            if done.is_set() and time.perf_counter() > deadline_drain:
                return

    deadline_drain = float("inf")
    reader = asyncio.create_task(consume())
    customers = [f"bg-{i:06d}" for i in range(20_000)]
    begin = time.perf_counter()
    sent = probes = 0
    probe_every = rate / probes_per_s if probes_per_s > 0 else float("inf")
    next_probe = 0.0
    while (elapsed := time.perf_counter() - begin) < seconds:
        due = int(elapsed * rate)
        now_iso = datetime.now(UTC).isoformat()
        while sent < due:
            sent += 1
            if sent >= next_probe:
                next_probe += probe_every
                probes += 1
                key = f"probe-{probes:07d}"
                value = {
                    "schema_version": 1,
                    "type": "purchase",
                    "event_id": f"pe-{probes}",
                    "customer_id": key,
                    "occurred_at": now_iso,
                    "order_id": f"po-{probes}",
                    "amount": "42.00",
                    "currency": settings.currency,
                }
                kb = key.encode()
                sent_at[key] = time.perf_counter() if elapsed >= warmup else -1.0
                await producer.send(
                    t.purchases,
                    orjson.dumps(value),
                    key=kb,
                    partition=partition_for(kb, settings.partitions),
                )
                continue
            customer = rng.choice(customers)
            kb = customer.encode()
            roll = rng.random()
            if roll < 0.3:
                topic, body = (
                    t.purchases,
                    {
                        "schema_version": 1,
                        "type": "purchase",
                        "event_id": f"be-{sent}",
                        "customer_id": customer,
                        "occurred_at": now_iso,
                        "order_id": f"bo-{sent}",
                        "amount": f"{rng.randint(500, 30_000) / 100:.2f}",
                        "currency": settings.currency,
                    },
                )
            else:
                topic, body = (
                    t.interactions,
                    {
                        "schema_version": 1,
                        "event_id": f"bi-{sent}",
                        "customer_id": customer,
                        "occurred_at": now_iso,
                        "type": _KINDS[sent % len(_KINDS)],
                    },
                )
            payload = orjson.dumps(body) if roll > 0.01 else b"{not json"
            await producer.send(
                topic, payload, key=kb, partition=partition_for(kb, settings.partitions)
            )
        await asyncio.sleep(0.002)
    await producer.flush()
    deadline_drain = time.perf_counter() + 30
    done.set()
    await reader
    lost = sum(1 for v in sent_at.values() if v >= 0)
    await producer.stop()
    await consumer.stop()
    return latencies, sent, lost, timeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000, help="background events/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5, help="seconds not counted")
    parser.add_argument("--probes-per-s", type=float, default=50)
    parser.add_argument("--lateness", type=float, default=0.0, help="allowed lateness, s")
    parser.add_argument(
        "--batch-within-ms", type=float, default=None, help="the worker's RFM_BATCH_WITHIN_MS"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    prefix = run_prefix("lat")
    settings = stack_settings(topic_prefix=prefix, app_id=prefix, redis_prefix=prefix)
    ensure_topics(settings)
    rules = rules_with_lateness(args.lateness)
    update = {} if args.batch_within_ms is None else {"batch_within_ms": args.batch_within_ms}
    proc, port = worker(settings, "latency-worker", "--rules", str(rules), **update)
    try:
        deadline = time.monotonic() + 120
        while worker_consumed(port) is None:
            proc.check()
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not come up in 120 s:\n" + proc.tail())
            time.sleep(0.2)
        time.sleep(2)  # partitions assigned, table recovered (empty)
        latencies, sent, lost, timeline = asyncio.run(
            drive(settings, args.rate, args.probes_per_s, args.seconds, args.warmup)
        )
        proc.check()
    finally:
        proc.stop()
        delete_topics(settings, prefix)
        rules.unlink(missing_ok=True)
    ms = sorted(v * 1000 for v in latencies)
    figures: dict[str, Any] = {
        "rate": args.rate,
        "lateness_s": args.lateness,
        "batch_within_ms": args.batch_within_ms or settings.batch_within_ms,
        "events_sent": sent,
        "probes_measured": len(ms),
        "probes_lost": lost,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "p99_9_ms": percentile(ms, 99.9),
        "max_ms": ms[-1] if ms else float("nan"),
    }
    print(
        f"background {args.rate:,.0f} events/s for {args.seconds:g} s ({sent:,} sent), "
        f"allowed lateness {args.lateness:g} s, batch window "
        f"{args.batch_within_ms or settings.batch_within_ms:g} ms"
    )
    print(
        f"probe → segment change: n={len(ms):,}  p50 {figures['p50_ms']:.1f} ms  "
        f"p99 {figures['p99_ms']:.1f} ms  p99.9 {figures['p99_9_ms']:.1f} ms  "
        f"max {figures['max_ms']:.1f} ms  (lost {lost})"
    )
    for line in slowest_seconds(timeline):
        print(line)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures))
    return 1 if lost or not ms else 0


if __name__ == "__main__":
    sys.exit(main())
