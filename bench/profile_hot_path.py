"""Profile the hot path: where a worker's time per event goes.

    python bench/profile_hot_path.py core   [--events 100000] [--customers 10000] [--html out.html]
    python bench/profile_hot_path.py worker [--events 300000] [--seconds 30] [--svg out.svg]

``core`` runs the benchmark workload (bench/workload.py) through the pure Processor in this
process (decode, state, classification, output records, profile drain per batch, as the worker
does) under pyinstrument, and prints the call tree. No Kafka needed.

``worker`` produces the workload to fresh topics on the local stack, starts ``rfm-stream
worker`` and samples it with py-spy for ``--seconds`` while it consumes, writing a flame graph
(needs permission to ptrace the child: root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.kit import delete_topics, run_prefix, stack_settings, worker, worker_consumed
from bench.workload import Workload, generate, produce_fast
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import InRecord, MemoryPartitionStore, Processor
from streams.worker.topics import ensure_topics

BATCH = 2_000  # the worker's take_events batch size


def profile_core(args: argparse.Namespace) -> None:
    from pyinstrument import Profiler

    settings = stack_settings(topic_prefix="rfm.")
    w = Workload(events=args.events, customers=args.customers, span_days=args.span_days)
    records = [
        InRecord(r.topic, r.partition, offset, r.key, r.value)
        for offset, r in enumerate(generate(w, settings))
    ]
    processor = Processor(
        settings, load_rules(), default_model(), lambda _p: MemoryPartitionStore()
    )
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    outputs = 0
    for i in range(0, len(records), BATCH):
        for record in records[i : i + BATCH]:
            outputs += len(processor.process(record))
        outputs += len(processor.drain_profiles())
    profiler.stop()
    elapsed = time.perf_counter() - started
    print(
        f"{w.describe()}: {len(records) / elapsed:,.0f} events/s under the profiler, "
        f"{outputs:,} outputs"
    )
    if args.html:
        Path(args.html).write_text(profiler.output_html())
        print(f"wrote {args.html}")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def profile_worker(args: argparse.Namespace) -> None:
    prefix = run_prefix("prof")
    settings = stack_settings(topic_prefix=prefix, app_id=prefix)
    w = Workload(events=args.events, customers=args.customers, span_days=args.span_days)
    planned = generate(w, settings)
    ensure_topics(settings)
    produce_fast(planned, settings)
    proc, port = worker(settings, "profiled-worker")
    try:
        while not worker_consumed(port):
            proc.check()
            time.sleep(0.2)
        py_spy = Path(sys.executable).with_name("py-spy")
        subprocess.run(
            [
                str(py_spy),
                "record",
                "--pid",
                str(proc.pid),
                "--duration",
                str(args.seconds),
                "--rate",
                "200",
                "--output",
                args.svg,
                "--nonblocking",
                *(["--format", "raw"] if args.svg.endswith(".txt") else []),
            ],
            check=True,
        )
        print(f"wrote {args.svg}; consumed {worker_consumed(port) or 0:,} records meanwhile")
    finally:
        proc.stop()
        delete_topics(settings, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=["core", "worker"])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--html", help="core: also write pyinstrument's HTML report here")
    parser.add_argument("--seconds", type=int, default=30, help="worker: how long to sample")
    parser.add_argument("--svg", default="worker-profile.svg", help="worker: flame graph path")
    args = parser.parse_args()
    if args.target == "core":
        profile_core(args)
    else:
        profile_worker(args)


if __name__ == "__main__":
    main()
