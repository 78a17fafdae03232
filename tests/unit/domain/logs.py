"""Event-log strategies and a reference runner shared by the domain property tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import DomainEvent, OfferOutcome, OutputEvent
from streams.domain.facts import (
    MS_PER_DAY,
    InteractionFact,
    PurchaseFact,
    PurchaseKind,
    SourcePosition,
)
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.domain.state import CustomerState

T0 = 1_577_836_800_000  # 2020-01-01T00:00:00Z
LATENESS_MS = 2 * 3_600_000

Fact = PurchaseFact | InteractionFact


def rules_with_lateness(ms: int = LATENESS_MS) -> Rules:
    return load_rules().model_copy(update={"allowed_lateness_seconds": ms / 1000})


@st.composite
def customer_logs(draw: st.DrawFn, max_customers: int = 4, max_events: int = 40) -> list[Fact]:
    """Facts sorted by event time, for a few customers, with unique event ids."""
    customers = [f"c{i}" for i in range(draw(st.integers(1, max_customers)))]
    n = draw(st.integers(1, max_events))
    facts: list[Fact] = []
    for i in range(n):
        at = T0 + draw(st.integers(0, 400 * MS_PER_DAY // 60_000)) * 60_000
        customer = draw(st.sampled_from(customers))
        kind = draw(st.sampled_from(["purchase", "purchase", "purchase", "refund", "touch"]))
        if kind == "touch":
            facts.append(InteractionFact(f"i{i}", customer, at, "visit"))
        else:
            facts.append(
                PurchaseFact(
                    event_id=f"e{i}",
                    customer_id=customer,
                    at_ms=at,
                    order_id=f"o{i}",
                    amount_cents=draw(st.integers(0, 50_000)),
                    kind=PurchaseKind.REFUND if kind == "refund" else PurchaseKind.PURCHASE,
                )
            )
    facts.sort(key=lambda f: (f.at_ms, f.event_id))
    return facts


@dataclass
class Run:
    """What a reference run produced: outputs, everything else, and the final states."""

    outputs: list[OutputEvent] = field(default_factory=list)
    outcomes: list[OfferOutcome] = field(default_factory=list)
    other: list[DomainEvent] = field(default_factory=list)
    engine: PartitionEngine | None = None

    @property
    def store(self) -> DictStore:
        assert self.engine is not None
        assert isinstance(self.engine.store, DictStore)
        return self.engine.store


def feed(
    engine: PartitionEngine, facts: list[Fact], run: Run, done: list[Fact] | None = None
) -> None:
    """Feed facts in the given order; offsets follow that order on two input streams,
    continuing after the facts ``done`` before them (a resumed or redelivered read)."""
    before = done or []
    purchases = sum(isinstance(f, PurchaseFact) for f in before)
    offsets = {"purchases": purchases, "interactions": len(before) - purchases}
    for fact in facts:
        stream = "purchases" if isinstance(fact, PurchaseFact) else "interactions"
        position = SourcePosition(stream, 0, offsets[stream])
        offsets[stream] += 1
        if isinstance(fact, PurchaseFact):
            events = engine.on_purchase(fact, position)
        else:
            events = engine.on_interaction(fact, position)
        collect(events, run)


def collect(events: list[DomainEvent], run: Run) -> None:
    for e in events:
        if isinstance(e, OfferOutcome):
            run.outcomes.append(e)
        elif hasattr(e, "id"):
            run.outputs.append(e)  # type: ignore[arg-type]
        else:
            run.other.append(e)


def run_log(
    facts: list[Fact],
    rules: Rules | None = None,
    model: Model | None = None,
    end_ms: int | None = None,
) -> Run:
    """The whole log through one engine, then a tick to ``end_ms`` (flushes pending work)."""
    engine = PartitionEngine(rules or rules_with_lateness(), model or default_model(), DictStore())
    run = Run(engine=engine)
    feed(engine, facts, run)
    if end_ms is not None:
        collect(engine.tick(end_ms), run)
    return run


def essence(run: Run) -> dict[str, list[object]]:
    """Final states without the source offsets (which differ when the log's layout does)."""
    out = {}
    for cid, state in run.store.states.items():
        row = state.to_list()
        row[2] = row[22] = None  # the partition in the index head, and the offsets
        out[cid] = row
    return out


def by_customer(outputs: list[OutputEvent]) -> dict[str, list[OutputEvent]]:
    grouped: dict[str, list[OutputEvent]] = {}
    for e in outputs:
        grouped.setdefault(e.customer_id, []).append(e)
    return grouped


def format_3_row(state: CustomerState) -> list[object]:
    """The state as a format-3 row (before the index head), as an earlier release wrote it:
    format 4 without its head, the next due time back in the body after ``evaluated_ms``."""
    row = state.to_list()
    assert row[0] == 4
    return [3, *row[3:30], row[1], *row[30:]]
