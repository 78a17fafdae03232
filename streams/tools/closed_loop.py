"""Closed-loop personas: a simulated customer answers the offers the product decides.

The generated persona log (:mod:`streams.tools.personas`) runs through the same
:class:`Processor` the worker runs, one record at a time in event-time order. Each time the
product decides an offer (or its holdout twin) — a pending outcome appears in the customer's
state — the simulation decides how the customer answers: they come back within the offer's
outcome window with probability ``baseline + effect`` when treated, ``baseline`` when held out
(one purchase at a uniform time inside the window, a persona-like amount), and their own
planned purchases inside that window are dropped (the answer replaces what they would have
done). So the true lift of every strategy is exactly ``effect``, and the measured lift
(:mod:`streams.domain.lift`, over the ``offer-outcomes`` the product published) must recover
it: :func:`coverage` counts the seeds whose 95 % interval contains it.

Windows never overlap: the simulation's policy has a cooldown at least as long as the longest
outcome window (decisions that record — offers and holdouts — are that far apart), so one
window's answer never counts in another's outcome. Input noise (invalid, late, duplicate
records) and interactions (engagement, which no outcome counts) are off: not what this
measures.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import orjson

from streams.config import Settings
from streams.domain.facts import MS_PER_DAY
from streams.domain.lift import ALL, ArmCounts, Key, LiftRow, aggregates_from_outcomes, lift_table
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.processor import (
    TICK_HEADER,
    InRecord,
    MemoryPartitionStore,
    Processor,
    tick_record,
)
from streams.tools.personas import PersonaConfig, generate
from streams.tools.replay import partition_for, plan

TICK_STEP_MS: Final = 6 * 3_600_000
"""Clock steps after the log's end: far below any outcome window."""


@dataclass
class LoopRun:
    """One seed: the aggregates measured and what the simulation did."""

    seed: int
    effect: float
    baseline: float
    aggregates: dict[Key, ArmCounts]
    decisions: int = 0
    answered: int = 0
    dropped: int = 0
    duplicates: int = 0
    answers: dict[str, bool] = field(default_factory=dict)  # trigger id -> answered
    outcomes: list[dict[str, object]] = field(default_factory=list)

    @property
    def overall(self) -> LiftRow:
        return next(r for r in lift_table(self.aggregates) if r.offer_code == r.quadrant == ALL)


@dataclass
class Coverage:
    """Across seeds: how often the 95 % interval held the simulated effect."""

    effect: float
    baseline: float
    runs: list[LoopRun] = field(default_factory=list)

    @property
    def covered(self) -> int:
        return sum(
            1
            for r in self.runs
            if r.overall.low is not None
            and r.overall.high is not None
            and r.overall.low <= self.effect <= r.overall.high
        )

    @property
    def share(self) -> float:
        return self.covered / len(self.runs) if self.runs else 0.0

    @property
    def excluding_zero(self) -> int:
        """Seeds whose interval excludes 0 (the power to see an effect at all)."""
        return sum(1 for r in self.runs if r.overall.verdict in ("positive", "negative"))

    def as_dict(self) -> dict[str, object]:
        lifts = [r.overall.lift for r in self.runs if r.overall.lift is not None]
        return {
            "effect": self.effect,
            "baseline": self.baseline,
            "seeds": len(self.runs),
            "covered": self.covered,
            "coverage": self.share,
            "interval_excludes_zero": self.excluding_zero,
            "mean_lift": sum(lifts) / len(lifts) if lifts else None,
            "runs": [
                {
                    "seed": r.seed,
                    "decisions": r.decisions,
                    "answered": r.answered,
                    "dropped_planned_purchases": r.dropped,
                    "duplicates": r.duplicates,
                    **r.overall.as_dict(),
                }
                for r in self.runs
            ],
        }


def loop_rules(rules: Rules, holdout_percent: float | None = None) -> Rules:
    """The rules with a cooldown at least the longest outcome window (no overlapping windows)."""
    offers = rules.offers
    longest = max((offers.window_days(r) for r in offers.rules), default=offers.outcome_window_days)
    changes: dict[str, object] = {"cooldown_days": max(offers.cooldown_days, float(longest))}
    if holdout_percent is not None:
        changes["holdout_percent"] = holdout_percent
    return rules.model_copy(update={"offers": offers.model_copy(update=changes)})


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run_loop(
    seed: int,
    effect: float,
    *,
    baseline: float,
    customers: int,
    settings: Settings,
    rules: Rules,
    model: Model,
    days: int = 365,
) -> LoopRun:
    """One closed-loop run; returns the lift aggregates folded from the published outcomes."""
    if not 0 <= baseline <= 1 or not 0 <= baseline + effect <= 1:
        raise ValueError("baseline and baseline + effect must be probabilities")
    config = PersonaConfig.for_customers(
        customers,
        seed=seed,
        days=days,
        partitions=settings.partitions,
        invalid_share=0.0,
        late_share=0.0,
        very_late_share=0.0,
        duplicate_share=0.0,
        interaction_rate=0.0,
    )
    log = generate(config)
    longest = max(
        (rules.offers.window_days(r) for r in rules.offers.rules),
        default=rules.offers.outcome_window_days,
    )
    end_ms = config.end_ms + (longest + 1) * MS_PER_DAY
    planned = plan(log.lines, settings, "jsonl")
    rng = random.Random(f"closed-loop:{seed}")
    stores: dict[int, MemoryPartitionStore] = {}
    processor = Processor(
        settings, rules, model, lambda p: stores.setdefault(p, MemoryPartitionStore())
    )
    t = settings.topics
    offsets: dict[tuple[str, int], int] = {}
    injected: list[tuple[int, int, str, bytes]] = []  # (at, seq, customer, payload)
    answers = itertools.count()
    windows: dict[str, list[tuple[int, int]]] = {}  # customer -> answered windows (start, end]
    seen: set[str] = set()
    dropped_orders: set[str] = set()
    outcomes: list[dict[str, object]] = []
    run = LoopRun(seed, effect, baseline, {})

    def feed(
        topic: str, partition: int, key: bytes, value: bytes, headers: tuple[tuple[str, bytes], ...]
    ) -> None:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        record = InRecord(topic, partition, offset, key, value, headers)
        for out in processor.process(record):
            if out.topic == t.offer_outcomes:
                outcomes.append(orjson.loads(out.value))
            elif out.topic in (t.segment_changes, t.churn_alerts):
                answer(partition, out.key.decode())

    def answer(partition: int, customer_id: str) -> None:
        state = stores[partition].get(customer_id)
        if state is None:
            return
        for o in state.outcomes:
            if o.trigger_id in seen:
                continue
            seen.add(o.trigger_id)
            run.decisions += 1
            windows.setdefault(customer_id, []).append((o.decided_ms, o.closes_ms))
            p = baseline + effect if o.arm == 1 else baseline
            run.answers[o.trigger_id] = answered = rng.random() < p
            if answered:
                run.answered += 1
                at = o.decided_ms + 1 + int(rng.random() * (o.closes_ms - o.decided_ms - 1))
                n = next(answers)  # unique ids: a repeated one would be dropped as a duplicate
                cents = rng.randint(2_000, 15_000)
                payload = orjson.dumps(
                    {
                        "event_id": f"{customer_id}.answer{n}",
                        "customer_id": customer_id,
                        "occurred_at": _iso(at),
                        "order_id": f"o-{customer_id}-answer{n}",
                        "amount": f"{cents // 100}.{cents % 100:02d}",
                        "currency": settings.currency,
                        "type": "purchase",
                    }
                )
                heapq.heappush(injected, (at, n, customer_id, payload))

    def in_window(customer_id: str, at_ms: int) -> bool:
        return any(start < at_ms <= end for start, end in windows.get(customer_id, ()))

    for p in planned:
        if p.at_ms is not None:
            while injected and injected[0][0] <= p.at_ms:
                _, _, cid, payload = heapq.heappop(injected)
                key = cid.encode()
                feed(t.purchases, partition_for(key, settings.partitions), key, payload, ())
        if p.topic == t.purchases and p.at_ms is not None and not p.headers:
            # move the clock first: decisions due before this purchase are made (and answered,
            # their windows known) before the purchase can fall into one of them unseen
            tick = tick_record(t.purchases, p.partition, p.at_ms)
            feed(tick.topic, p.partition, tick.key, tick.value, ((TICK_HEADER, b"1"),))
            cid = p.key.decode()
            body = orjson.loads(p.value)
            order = str(body.get("order_id", ""))
            if in_window(cid, p.at_ms) or (
                body.get("type") == "refund" and order in dropped_orders
            ):
                run.dropped += 1
                dropped_orders.add(order)
                continue
        feed(p.topic, p.partition, p.key, p.value, p.headers)
    # after the log, time moves in small steps (not one jump to the end), so that each
    # decision made in the silence is answered before its window closes
    at_ms = max(p.at_ms for p in planned if p.at_ms is not None)
    while at_ms < end_ms:
        at_ms = min(at_ms + TICK_STEP_MS, end_ms)
        while injected and injected[0][0] <= at_ms:
            _, _, cid, payload = heapq.heappop(injected)
            key = cid.encode()
            feed(t.purchases, partition_for(key, settings.partitions), key, payload, ())
        for partition in range(settings.partitions):
            tick = tick_record(t.purchases, partition, at_ms)
            feed(tick.topic, partition, tick.key, tick.value, ((TICK_HEADER, b"1"),))
    run.aggregates = aggregates_from_outcomes(outcomes)
    run.outcomes = outcomes
    run.duplicates = processor.counters.duplicates  # none expected: the log has no noise
    return run


def coverage(
    effect: float,
    seeds: Sequence[int],
    *,
    baseline: float,
    customers: int,
    settings: Settings,
    rules: Rules,
    model: Model,
    days: int = 365,
) -> Coverage:
    """Run the closed loop for every seed and count how often the interval held ``effect``."""
    result = Coverage(effect, baseline)
    for seed in seeds:
        result.runs.append(
            run_loop(
                seed,
                effect,
                baseline=baseline,
                customers=customers,
                settings=settings,
                rules=rules,
                model=model,
                days=days,
            )
        )
    return result
