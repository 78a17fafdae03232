"""Throughput over the real broker, side by side on the same topics in the same run.

    python bench/bench_throughput.py [--events 1000000] [--customers 100000] [--span-days 30]
        [--only plain,core,faust-floor,faust-naive,quix-naive,rfm-1,rfm-2] [--store memory]

One seeded log (bench/workload.py) is produced once into fresh input topics; then each
contender reads all of it, one at a time, so none competes with another for the two cores:

1. ``plain``       a plain aiokafka loop that reads and decodes (the product's decoders);
2. ``core``        the same loop driving the pure Processor (decode, state, outputs built);
3. ``faust-floor`` a Faust agent that does nothing per event, on uvloop like the product;
4. ``faust-naive`` decode + one changelogged table write per event, default settings;
5. ``quix-naive``  the naive job as a plain Quix Streams app (JSON values, per-customer state
                   in its RocksDB store with a changelog, one output record per event,
                   at-least-once), from its own environment: see ``bench/quix_contender.py``;
6. ``rfm-1``       ``rfm-stream worker``, everything on (table + changelog, outputs, Redis views);
7. ``rfm-2``       two such workers in one consumer group.

Each is timed from the moment all its consumers are running (the loops and the Quix app: from
their first record) to the last record, so start-up and the first rebalance are not counted.
Prints events/s and the ratios the targets are set
in; ``--json PATH`` writes them too.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.kit import (
    Proc,
    count_page,
    delete_topics,
    free_port,
    measure_rate,
    run_prefix,
    settings_env,
    stack_settings,
    worker,
    worker_consumed,
)
from bench.workload import Workload, generate, produce_fast
from streams.config import Settings
from streams.worker.topics import ensure_topics

ALL = ("plain", "core", "faust-floor", "faust-naive", "quix-naive", "rfm-1", "rfm-2")
HERE = Path(__file__).resolve().parent


def run_loop(name: str, settings: Settings, expected: int) -> dict[str, Any]:
    env = settings_env(settings)
    with Proc(
        [sys.executable, str(HERE / "contenders.py"), name, "--expected", str(expected)], env, name
    ) as proc:
        proc.popen.wait()
        if proc.popen.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.tail()}")
        line = proc.log_path.read_text().strip().splitlines()[-1]
    result: dict[str, Any] = orjson.loads(line)
    result["rate"] = result["events"] / max(result["seconds"], 1e-9)
    result["read"] = result["events"]  # the loops read the log from its start to its end
    return result


QUIX_PYTHON = HERE.parent / ".local" / "venv-quix" / "bin" / "python"


def run_quix(settings: Settings, expected: int, python: Path) -> dict[str, Any]:
    """The Quix Streams app, from its own environment (quixstreams pins an older pydantic)."""
    if not python.exists():
        raise RuntimeError(
            f"no Python with quixstreams at {python}: python -m venv .local/venv-quix && "
            ".local/venv-quix/bin/pip install quixstreams==3.28.1 (or pass --quix-python)"
        )
    t = settings.topics
    prefix = settings.topic_prefix
    args = [str(python), str(HERE / "quix_contender.py"), "--bootstrap", settings.kafka_bootstrap]
    args += ["--purchases", t.purchases, "--interactions", t.interactions]
    args += ["--out", f"{prefix}quix-out", "--group", f"{prefix}quix-naive"]
    args += ["--expected", str(expected)]
    with Proc(args, settings_env(settings), "quix-naive") as proc:
        proc.popen.wait()
        if proc.popen.returncode != 0:
            raise RuntimeError(f"quix-naive failed:\n{proc.tail()}")
        line = proc.log_path.read_text().strip().splitlines()[-1]
    result: dict[str, Any] = orjson.loads(line)
    result["rate"] = result["events"] / max(result["seconds"], 1e-9)
    return result


def run_faust(name: str, settings: Settings, expected: int, timeout: float) -> dict[str, Any]:
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix=f"{settings.topic_prefix}{name}-")  # not the checkout
    s = settings.model_copy(
        update={"app_id": f"{settings.topic_prefix}{name}", "web_port": port, "data_dir": data_dir}
    )
    with Proc([sys.executable, str(HERE / "contenders.py"), name], settings_env(s), name) as proc:
        rate, seconds, counted = measure_rate(
            [lambda: count_page(port)], expected, [proc], timeout=timeout
        )
        rss = proc.rss_bytes()
        read = count_page(port) or 0
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "events": counted,  # consumed after the clock started (see measure_rate)
        "read": read,  # consumed in all: the whole log, or more after a redelivery
        "seconds": seconds,
        "rate": rate,
        "rss_mib": rss / 2**20,
    }


def run_workers(
    n: int, settings: Settings, expected: int, timeout: float, store: str
) -> dict[str, Any]:
    app_id = f"{settings.topic_prefix}rfm-{n}"
    procs: list[Proc] = []
    ports: list[int] = []
    try:
        for i in range(n):
            proc, port = worker(
                settings,
                f"rfm-{n}.{i}",
                app_id=app_id,
                store=store,
                data_dir=f"/tmp/{app_id}-{i}",
                redis_prefix=f"{settings.topic_prefix}rfm-{n}:",
            )
            procs.append(proc)
            ports.append(port)
        counters = [functools.partial(worker_consumed, p) for p in ports]
        rate, seconds, counted = measure_rate(counters, expected, procs, timeout=timeout)
        rss = sum(p.rss_bytes() for p in procs)
        read = sum(c() or 0 for c in counters)
    finally:
        for p in procs:
            p.stop()
    return {
        "events": counted,  # consumed after the clock started (see measure_rate)
        "read": read,  # consumed in all: the whole log, or more after a redelivery
        "seconds": seconds,
        "rate": rate,
        "rss_mib": rss / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--span-days", type=float, default=30.0, help="event time covered")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated contenders")
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    parser.add_argument("--timeout", type=float, default=1800, help="per contender, seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics")
    parser.add_argument(
        "--quix-python",
        type=Path,
        default=QUIX_PYTHON,
        help="a Python with quixstreams 3.28 installed, for quix-naive",
    )
    args = parser.parse_args(argv)
    chosen = [c for c in args.only.split(",") if c]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {', '.join(ALL)}")

    prefix = run_prefix("tp")
    settings = stack_settings(topic_prefix=prefix, partitions=args.partitions, app_id=prefix)
    w = Workload(events=args.events, customers=args.customers, span_days=args.span_days)
    print(f"workload: {w.describe()}, {args.partitions} partitions, topics {prefix}*")
    started = time.perf_counter()
    planned = generate(w, settings)
    print(f"generated in {time.perf_counter() - started:.1f} s")
    ensure_topics(settings)
    produced_rate = produce_fast(planned, settings)
    print(f"produced at {produced_rate:,.0f} records/s")
    expected = len(planned)
    del planned
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in chosen:
            print(f"-- {name} ...", flush=True)
            if name in ("plain", "core"):
                results[name] = run_loop(name, settings, expected)
            elif name == "quix-naive":
                results[name] = run_quix(settings, expected, args.quix_python)
            elif name.startswith("faust"):
                results[name] = run_faust(name, settings, expected, args.timeout)
            else:
                n = int(name.split("-")[1])
                results[name] = run_workers(n, settings, expected, args.timeout, args.store)
            r = results[name]
            print(f"   {r['rate']:>10,.0f} events/s  ({r['events']:,} in {r['seconds']:.1f} s)")
    finally:
        if not args.keep:
            delete_topics(settings, prefix)
    report(results, args.store)
    if args.json:
        args.json.write_bytes(orjson.dumps({"workload": w.describe(), "results": results}))
    return 0


def report(results: dict[str, dict[str, Any]], store: str = "memory") -> None:
    """The table of issue 17: every contender, and its ratio to the Faust floor and to Quix."""
    rate = {k: v["rate"] for k, v in results.items()}

    def versus(name: str, base: str) -> str:
        return f"{rate[name] / rate[base]:.2f}x" if base in rate else "-"

    print("\n| contender | events/s | vs Faust floor | vs Quix stateful app |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rate']:,.0f} | {versus(name, 'faust-floor')} "
            f"| {versus(name, 'quix-naive')} |"
        )

    def ratio(a: str, b: str, target: float | None, what: str) -> None:
        if a in rate and b in rate:
            value = rate[a] / rate[b]
            verdict = "" if target is None else (" ok" if value >= target else " MISSED")
            goal = "" if target is None else f" (target >= {target:g})"
            print(f"{what}: {a} / {b} = {value:.2f}{goal}{verdict}")

    print()
    ratio("core", "plain", None, "decode + core vs decode alone")
    ratio("faust-floor", "plain", None, "Faust floor vs plain loop")
    print(f"rfm workers' table store: {store}")
    floor_target = 1.0 if store == "memory" else 0.8
    ratio("rfm-1", "faust-floor", floor_target, "one worker vs Faust floor")
    ratio("rfm-1", "quix-naive", None, "one worker vs the Quix stateful app")
    ratio("rfm-1", "faust-naive", 3.0, "one worker vs naive Faust")
    ratio("quix-naive", "faust-naive", None, "Quix stateful app vs naive Faust")
    ratio("rfm-2", "rfm-1", 1.6, "two workers vs one")
    if "core" in rate:
        ok = "ok" if rate["core"] >= 100_000 else "MISSED"
        print(
            f"pure core driven by the plain loop: {rate['core']:,.0f} events/s "
            f"(target 100,000) {ok}"
        )


if __name__ == "__main__":
    sys.exit(main())
