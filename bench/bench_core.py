"""Domain core throughput and state size, one core, no Kafka: what the product costs per event.

    python bench/bench_core.py [--events N] [--customers N] [--purchase-share P] [--seed S]
    python bench/bench_core.py --processor [--events 200000] [--customers 20000]

Default: builds a synthetic log (customers with Gamma-distributed purchase rates over a year,
the rest of the events interactions, ~3 % of purchases refunded), runs it through one
:class:`PartitionEngine` (apply + every due evaluation + a final tick), and prints events/s,
outputs, and serialized bytes per customer state (mean, p99, max).

``--processor``: the throughput benchmark's log (bench/workload.py, 30 days, 1 % invalid) as
Kafka record bytes through the pure :class:`Processor` (decode, state, output records, a
profile drain every 2,000 records), as the ``core`` contender does minus the broker. Rates
are given per second of wall time and per second of this process's CPU time: on a shared
machine the CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from streams.domain import COMPILED
from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.facts import (
    MS_PER_DAY,
    InteractionFact,
    PurchaseFact,
    PurchaseKind,
    SourcePosition,
)
from streams.domain.model import default_model
from streams.domain.rules import load_rules

T0 = 1_700_000_000_000
YEAR_MS = 365 * MS_PER_DAY


def synthetic_log(
    events: int, customers: int, purchase_share: float, seed: int
) -> list[PurchaseFact | InteractionFact]:
    """A year of events in event-time order; purchase rates vary widely between customers."""
    rng = random.Random(seed)
    weights = [rng.gammavariate(0.6, 1.0) for _ in range(customers)]
    ids = [f"cust-{i:07d}" for i in range(customers)]
    chosen = rng.choices(ids, weights=weights, k=events)
    times = sorted(T0 + rng.randrange(YEAR_MS) for _ in range(events))
    kinds = ("visit", "product_view", "email_open", "email_click", "cart_add")
    log: list[PurchaseFact | InteractionFact] = []
    for i, (customer, at) in enumerate(zip(chosen, times, strict=True)):
        if rng.random() < purchase_share:
            refund = rng.random() < 0.03
            log.append(
                PurchaseFact(
                    event_id=f"p{i}",
                    customer_id=customer,
                    at_ms=at,
                    order_id=f"o{i}",
                    amount_cents=rng.randint(500, 30_000),
                    kind=PurchaseKind.REFUND if refund else PurchaseKind.PURCHASE,
                )
            )
        else:
            log.append(InteractionFact(f"i{i}", customer, at, rng.choice(kinds)))
    return log


def run_processor(events: int, customers: int, repeat: int) -> None:
    """Record bytes in, output records out, as the plain loop's ``core`` contender does."""
    from bench.workload import Workload, generate
    from streams.config import Settings
    from streams.processor import InRecord, MemoryPartitionStore, Processor

    settings = Settings(topic_prefix="rfm.")
    w = Workload(events=events, customers=customers)
    records = [
        InRecord(r.topic, r.partition, offset, r.key, r.value)
        for offset, r in enumerate(generate(w, settings))
    ]
    rules, model = load_rules(), default_model()
    runs: list[tuple[float, float]] = []
    outputs = 0
    for _ in range(max(repeat, 1)):
        processor = Processor(settings, rules, model, lambda _p: MemoryPartitionStore())
        outputs = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(records), BATCH):
            for record in records[i : i + BATCH]:
                outputs += len(processor.process(record))
            outputs += len(processor.drain_profiles())
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    print(f"log: {w.describe()}; core {'compiled (mypyc)' if COMPILED else 'pure Python'}")
    print(
        f"processor: {len(records) / wall:,.0f} events/s wall, "
        f"{len(records) / cpu:,.0f} events/s of CPU (best of {len(runs)}); outputs {outputs:,}"
    )


BATCH = 2_000  # the worker's take_events batch size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--purchase-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--processor", action="store_true", help="record bytes through the Processor instead"
    )
    parser.add_argument("--repeat", type=int, default=1, help="--processor: runs, best shown")
    args = parser.parse_args()
    if args.processor:
        run_processor(args.events, args.customers, args.repeat)
        return

    log = synthetic_log(args.events, args.customers, args.purchase_share, args.seed)
    purchases = sum(isinstance(f, PurchaseFact) for f in log)
    engine = PartitionEngine(load_rules(), default_model(), DictStore())
    outputs = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    for offset, fact in enumerate(log):
        if isinstance(fact, PurchaseFact):
            result = engine.on_purchase(fact, SourcePosition("purchases", 0, offset))
        else:
            result = engine.on_interaction(fact, SourcePosition("interactions", 0, offset))
        outputs += sum(hasattr(e, "id") for e in result)
    apply_s = time.perf_counter() - started
    apply_cpu = time.process_time() - started_cpu
    tick_started = time.perf_counter()
    outputs += sum(hasattr(e, "id") for e in engine.tick(T0 + YEAR_MS + 30 * MS_PER_DAY))
    tick_s = time.perf_counter() - tick_started

    assert isinstance(engine.store, DictStore)
    sizes = sorted(len(s.to_bytes()) for s in engine.store.states.values())
    p99 = sizes[min(len(sizes) - 1, int(len(sizes) * 0.99))]
    print(
        f"log: {len(log):,} events ({purchases:,} purchases/refunds), "
        f"{len(sizes):,} customers with state"
    )
    print(f"core: {'compiled (mypyc)' if COMPILED else 'pure Python'}")
    print(
        f"apply + evaluate: {len(log) / apply_s:,.0f} events/s "
        f"({apply_s:.2f} s, one core; {len(log) / apply_cpu:,.0f} events/s of CPU); "
        f"outputs {outputs:,}"
    )
    print(f"purchases only:   {purchases / apply_s:,.0f} purchases/s of wall time")
    print(f"final 30-day tick: {tick_s:.2f} s (time-driven evaluations of due customers)")
    print(
        f"state bytes per customer: mean {statistics.fmean(sizes):.0f}, p99 {p99}, max {sizes[-1]}"
    )


if __name__ == "__main__":
    main()
