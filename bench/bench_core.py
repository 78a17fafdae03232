"""Domain core throughput and state size, one core, no Kafka: what the product costs per event.

    python bench/bench_core.py [--events N] [--customers N] [--purchase-share P] [--seed S]

Builds a synthetic log (customers with Gamma-distributed purchase rates over a year, the rest
of the events interactions, ~3 % of purchases refunded), runs it through one
:class:`PartitionEngine` (apply + every due evaluation + a final tick), and prints events/s,
outputs, and serialized bytes per customer state (mean, p99, max).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--purchase-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    log = synthetic_log(args.events, args.customers, args.purchase_share, args.seed)
    purchases = sum(isinstance(f, PurchaseFact) for f in log)
    engine = PartitionEngine(load_rules(), default_model(), DictStore())
    outputs = 0
    started = time.perf_counter()
    for offset, fact in enumerate(log):
        if isinstance(fact, PurchaseFact):
            result = engine.on_purchase(fact, SourcePosition("purchases", 0, offset))
        else:
            result = engine.on_interaction(fact, SourcePosition("interactions", 0, offset))
        outputs += sum(hasattr(e, "id") for e in result)
    apply_s = time.perf_counter() - started
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
    print(
        f"apply + evaluate: {len(log) / apply_s:,.0f} events/s "
        f"({apply_s:.2f} s, one core); outputs {outputs:,}"
    )
    print(f"purchases only:   {purchases / apply_s:,.0f} purchases/s of wall time")
    print(f"final 30-day tick: {tick_s:.2f} s (time-driven evaluations of due customers)")
    print(
        f"state bytes per customer: mean {statistics.fmean(sizes):.0f}, p99 {p99}, max {sizes[-1]}"
    )


if __name__ == "__main__":
    main()
