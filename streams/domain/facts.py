"""What the core consumes: validated facts about a customer, in the core's own units.

The wire contract (``schemas/``) is converted into these records by the stream glue, so the
core never sees JSON, pydantic or Kafka. Units are chosen for exactness and speed:

* time is integer epoch **milliseconds** (UTC) — event time, never the wall clock;
* money is integer **cents** of the configured reporting currency, so sums are exact and
  independent of the order events arrive in (float sums are not).

The facts are built once per input record: hashable, compared by value, but not ``frozen``
dataclasses (whose ``__init__`` costs twice as much); nothing mutates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MS_PER_DAY = 86_400_000


class PurchaseKind(StrEnum):
    """A purchase adds value; a refund (or return) takes value back from an earlier order."""

    PURCHASE = "purchase"
    REFUND = "refund"


@dataclass(slots=True, unsafe_hash=True)
class PurchaseFact:
    """One order or refund. ``amount_cents`` is always >= 0; ``kind`` gives the sign."""

    event_id: str
    customer_id: str
    at_ms: int
    order_id: str
    amount_cents: int
    kind: PurchaseKind = PurchaseKind.PURCHASE
    margin_cents: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class InteractionFact:
    """One non-purchase touch point (visit, email open, cart add, support ticket, ...)."""

    event_id: str
    customer_id: str
    at_ms: int
    kind: str


@dataclass(slots=True, unsafe_hash=True)
class SourcePosition:
    """Where a fact was read from; lets the state skip redeliveries after a crash."""

    stream: str
    partition: int
    offset: int


Fact = PurchaseFact | InteractionFact


def day_of(at_ms: int) -> int:
    """The UTC calendar day number (days since 1970-01-01) of an event time."""
    return at_ms // MS_PER_DAY
