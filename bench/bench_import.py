"""``rfm-stream import`` end to end against the pure core's speed on the same log.

    python -m bench.bench_import [--events 1000000] [--customers 100000] [--json PATH]

Writes the throughput benchmark's log (``bench/workload.py``) as a JSON-lines file, then runs
the import as the CLI does, phase by phase, into a fresh app on the local stack:

* **fold**: the pure core over the log (decode, state, outputs built and counted) — the
  core's own events/s on this log, the figure the import is compared with;
* **erasure check**: the customers erased in the deployment left out (one Redis round trip);
* **calibrate**: the model fitted on the folded states, every customer re-evaluated;
* **write**: every state and clock row produced to the changelog and acknowledged, and every
  customer's final profile built and written with the audiences to Redis, side by side.

Prints events/s of the fold and of the whole import, and their ratio (target ≥ 0.8). The
topics, consumer group and Redis keys it made are deleted at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.kit import delete_topics, run_prefix, stack_settings, worker, worker_consumed
from bench.workload import Workload, generate
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools import importer
from streams.tools.replay import Planned, produce
from streams.worker.topics import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the topics and Redis keys")
    parser.add_argument(
        "--worker",
        choices=("none", "memory", "rocksdb"),
        default="memory",
        help="then start a worker with this store and time it to its first processed events",
    )
    args = parser.parse_args(argv)

    prefix = run_prefix("import").rstrip(".")
    settings = stack_settings(topic_prefix=f"{prefix}.", app_id=prefix, redis_prefix=f"{prefix}:")
    rules = load_rules()
    w = Workload(events=args.events, customers=args.customers)
    print(f"workload: {w.describe()}, {settings.partitions} partitions, app {prefix}")
    planned = generate(w, settings)
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        for p in planned:  # interactions carry no order id: the import routes them by that
            f.write(p.value.replace(b"\n", b" ") + b"\n")
        path = Path(f.name)
    del planned
    print(f"log written to {path} ({path.stat().st_size / 2**20:,.0f} MiB)")
    figures: dict[str, Any] = {"events": args.events, "customers": args.customers}
    try:
        ensure_topics(settings)
        heap = importer.long_lived_heap()  # as the CLI
        heap.__enter__()
        started = time.perf_counter()
        lines, fmt = importer.read_log(path, "jsonl", settings, None)
        read_s = time.perf_counter() - started

        t0 = time.perf_counter()
        folded = importer.fold(lines, fmt, settings, rules, default_model())
        fold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        erased = importer.drop_erased(settings, folded)  # as the CLI: one Redis round trip
        erasure_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        importer.recalibrate(folded, rules, default_model())
        calibrate_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # as the CLI: final profiles built while the last are written
        cpu0, redis0 = time.process_time(), redis_cpu_s(settings.redis_url)
        rows = asyncio.run(
            importer.write_all(settings, folded, importer.final_profile_batches(folded))
        )
        write_s = time.perf_counter() - t0
        write_cpu_s = time.process_time() - cpu0
        write_redis_s = redis_cpu_s(settings.redis_url) - redis0
        total_s = time.perf_counter() - started
        heap.__exit__(None, None, None)

        figures |= {
            "records": folded.events,
            "customers_imported": folded.customers,
            "dead_letters": dict(folded.dead_reasons),
            "read_s": read_s,
            "fold_s": fold_s,
            "erasure_check_s": erasure_s,
            "erased_left_out": erased,
            "calibrate_s": calibrate_s,
            "write_s": write_s,
            "write_client_cpu_s": write_cpu_s,
            "write_redis_cpu_s": write_redis_s,
            "changelog_rows": rows,
            "total_s": total_s,
            "core_events_per_s": folded.events / fold_s,
            "import_events_per_s": folded.events / total_s,
        }
        figures["ratio"] = figures["import_events_per_s"] / figures["core_events_per_s"]
        if args.worker != "none":
            figures["worker_start_to_processing_s"] = first_events(settings, folded, args.worker)
    finally:
        path.unlink(missing_ok=True)
        if not args.keep:
            delete_topics(settings, prefix)
            asyncio.run(_delete_keys(settings.redis_url, settings.redis_prefix))
    print(
        f"phases: read {figures['read_s']:.1f} s, fold {figures['fold_s']:.1f} s, erasure check "
        f"{figures['erasure_check_s']:.1f} s, calibrate "
        f"{figures['calibrate_s']:.1f} s, changelog and Redis views side by side "
        f"{figures['write_s']:.1f} s ({figures['changelog_rows']:,} changelog rows; CPU: this "
        f"process {figures['write_client_cpu_s']:.1f} s, "
        f"Redis {figures['write_redis_cpu_s']:.1f} s)"
    )
    print(f"figure: pure core over the log: {figures['core_events_per_s']:,.0f} events/s")
    verdict = "meets" if figures["ratio"] >= 0.8 else "MISSES"
    print(
        f"figure: import end to end: {figures['import_events_per_s']:,.0f} events/s = "
        f"{figures['ratio']:.2f} x the core ({verdict} >= 0.8)"
    )
    if "worker_start_to_processing_s" in figures:
        took = figures["worker_start_to_processing_s"]
        verdict = "meets" if took <= 30 else "MISSES"
        print(
            f"figure: worker ({args.worker} store) start -> first events processed after the "
            f"import: {took:.1f} s ({verdict} <= 30 s)"
        )
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


def first_events(settings: Settings, folded: importer.Folded, store: str) -> float:
    """Start a worker over the imported table; seconds until it has processed one new purchase
    on every partition (it restores the imported states first)."""
    assert folded.clock_ms is not None
    probes: list[Planned] = []
    for partition, partition_store in sorted(folded.stores.items()):
        customer = next(iter(partition_store.by_customer), None)
        if customer is None:
            continue
        event = {
            "event_id": f"probe-{partition}",
            "customer_id": customer,
            "occurred_at": datetime.fromtimestamp(
                (folded.clock_ms + 60_000) / 1000, UTC
            ).isoformat(),
            "order_id": f"probe-{partition}",
            "amount": "10.00",
            "currency": settings.currency,
        }
        probes.append(
            Planned(
                settings.topics.purchases, partition, customer.encode(), orjson.dumps(event), None
            )
        )
    produce(probes, settings)
    data_dir = f"/tmp/{settings.app_id}-worker"
    proc, port = worker(settings, f"import-{store}", store=store, data_dir=data_dir)
    try:
        while True:
            proc.check()
            consumed = worker_consumed(port)
            if consumed is not None and consumed >= len(probes):
                return time.perf_counter() - proc.started
            if time.perf_counter() - proc.started > 600:
                raise TimeoutError(f"the worker processed nothing in 600 s:\n{proc.tail()}")
            time.sleep(0.1)
    finally:
        proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def redis_cpu_s(url: str) -> float:
    """CPU seconds the Redis server has used (its INFO), to split a phase's wall time."""
    from redis import Redis

    client = Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _delete_keys(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


if __name__ == "__main__":
    sys.exit(main())
