"""Synthetic event logs whose right answer is known: personas, noise and ground truth.

The classifier can only be judged against customers whose quadrant is known by construction.
:func:`generate` builds such a population from four personas, each parameterised so that under
the **default model and rules** (``default_model()``: profit split $100 and loyalty split
4 orders per 364 days; ``rules.toml``: loyalty needs 2 repeat days, 60 days of tenure and
P(alive) >= 0.5) it sits clearly inside its quadrant in steady state, away from every split:

* **true friends** buy every 10-18 days on average (gamma-distributed gaps), $60-$200 an
  order, start in the first months of the log and interact a lot. A share of them are
  **churners**: they stop at a known moment (``churned_at``) and their engagement fades in
  the weeks before their last purchase;
* **butterflies** place 1-3 orders of $150-$600. Most do it in one short burst and are gone
  (``churned_at`` is the end of the burst); the others come back for one big order every
  4-9 months, never more than 3 orders a year, so they are never loyal;
* **barnacles** buy every 2-4 weeks but small: their orders track a yearly budget of $45-$80
  (a few dollars an order), so they are loyal without ever crossing the $100 profit split;
* **strangers** place one or two small orders ($5-$35) and are rarely seen.

On top of that the log has the noise of a real feed: more orders on weekends and in the
year-end season, refunds (a share of orders, partial or full, same ``order_id``, days later),
interactions (browsing sessions, the session before each order, newsletter opens and clicks,
support tickets), events delivered **out of order** within the allowed lateness, a few
delivered **hours late** (the stream folds a late purchase or refund in as a correction, and
dead-letters a late interaction as ``late_event``), **duplicates**
(the same line re-sent) and **invalid records** of every kind the decoders refuse, written in
the replay's envelope form (``{"topic", "key", "value"}``) so they reach the topic they
pretend to belong to.

Lines come in **delivery order**: event-time order except for the displaced ones, which sit
where they would arrive. Lateness is arranged per Kafka partition (``PersonaConfig.partitions``
with the producer's partitioner), because that is where the stream orders records: a record
"out of order" is behind a later-timed record of the same topic and partition.

Everything is a function of the config: no wall clock, and every random draw comes from
``random.Random`` seeded by the config's seed (one generator per customer, so one customer's
history does not depend on how many others there are). The same config gives the same bytes.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from streams.domain.rules import Quadrant
from streams.tools.replay import partition_for

Persona = Literal["true_friend", "butterfly", "barnacle", "stranger"]
PERSONAS: Final[tuple[Persona, ...]] = ("true_friend", "butterfly", "barnacle", "stranger")

QUADRANT_OF: Final[dict[Persona, Quadrant]] = {
    "true_friend": "true_friend",
    "butterfly": "butterfly",
    "barnacle": "barnacle",
    "stranger": "stranger",
}
"""The quadrant each persona is built to sit in while it is active (one persona per quadrant;
kept as a table so a future persona, e.g. a lapsing barnacle, can map onto an existing one)."""

INVALID_KINDS: Final[dict[str, str]] = {
    "malformed_json": "invalid_json",
    "missing_field": "invalid_event",
    "naive_timestamp": "invalid_event",
    "epoch_timestamp": "invalid_event",
    "negative_amount": "amount_out_of_range",
    "unsupported_schema_version": "unsupported_schema_version",
    "wrong_currency": "invalid_event",
    "lookalike_field": "invalid_event",
    "zero_timestamp": "timestamp_out_of_range",
    "future_timestamp": "timestamp_out_of_range",
    "oversized_properties": "invalid_event",
    "oversized_payload": "payload_too_large",
}
"""Every kind of invalid record the generator writes -> the dead-letter reason it must get.

The first records cycle through the kinds in this order, so even a small log has each one;
after that ``oversized_payload`` is one in 500 (each such line is over 64 KiB)."""

_INVALID_WEIGHTS: Final[dict[str, float]] = dict.fromkeys(INVALID_KINDS, 1.0) | {
    "oversized_payload": 0.0
}
_OVERSIZED_EVERY: Final = 500  # after the first cycle, one oversized payload per 500 invalid
_PURCHASE_ONLY: Final = frozenset({"negative_amount", "wrong_currency", "oversized_payload"})
_INTERACTION_ONLY: Final = frozenset({"oversized_properties"})

Label = str
"""What a line is: ``ok``, ``reordered`` (out of order, within the allowed lateness),
``late`` (hours late: an interaction must be dead-lettered, a purchase or refund is folded in
as a correction), ``duplicate`` (the same line again) or
``invalid:<kind>`` (see ``INVALID_KINDS``)."""

SECOND_MS: Final = 1_000
DAY_MS: Final = 86_400_000
_PURCHASES, _INTERACTIONS = 0, 1
_TOPIC_NAMES: Final = ("purchases", "interactions")

# Loyal personas start early enough to prove loyalty by the end of the log: five orders and
# 60 days of tenure inside the 364-day window, with room for long gaps.
_LOYAL_RAMP_DAYS: Final = 220
# A churning true friend is one for at least this long before leaving (a true friend first).
_TRUE_FRIEND_BEFORE_CHURN_DAYS: Final = 150
# Butterflies start at most this many days before the end, so every order of theirs is still
# inside the 364-day profitability window when the log ends.
_BUTTERFLY_HORIZON_DAYS: Final = 350
# A reordered record is moved at most this far in event time to sit just behind its partner.
_MAX_REORDER_SHIFT_MS: Final = 6 * 3_600_000
# Event sort key: event time, then customer number, then the customer's own event counter.
_CUSTOMER_SEQ: Final = 1 << 24
_SEQ_SPAN: Final = 1 << 44

_WEEKDAY_WEIGHT: Final = (1.0, 0.95, 1.0, 1.05, 1.15, 1.45, 1.35)  # Monday .. Sunday
_WEEKDAY_MAX: Final = max(_WEEKDAY_WEIGHT)
_SEASON_MAX: Final = 1.6
_HOUR_WEIGHT: Final = (  # local hour 0 .. 23: low at night, peak in the evening
    *(0.8, 0.4, 0.25, 0.2, 0.2, 0.3, 0.6, 1.0, 1.4, 1.8, 2.0, 2.1),
    *(2.3, 2.2, 2.0, 2.0, 2.1, 2.4, 2.9, 3.3, 3.5, 3.1, 2.3, 1.5),
)
_HOUR_CUM: Final = [sum(_HOUR_WEIGHT[: h + 1]) for h in range(24)]
_TIMEZONES: Final = (0, 0, 60, 60, 120, -300, -300, -360, -420, -480, 330, 540)
_CHANNELS: Final = ("web", "web", "ios", "android")
_EPOCH_DATE: Final = date(1970, 1, 1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _offset_text(offset_min: int) -> str:
    if offset_min == 0:
        return "Z"
    sign = "+" if offset_min > 0 else "-"
    h, m = divmod(abs(offset_min), 60)
    return f"{sign}{h:02d}:{m:02d}"


_OFFSET_TEXT: Final = {offset: _offset_text(offset) for offset in _TIMEZONES}


@dataclass(frozen=True)
class PersonaConfig:
    """What to generate. Shares of noise are fractions of the valid events, except
    ``invalid_share`` which is the fraction of all lines that are invalid."""

    true_friends: int = 200
    butterflies: int = 200
    barnacles: int = 200
    strangers: int = 400
    start: date = date(2025, 1, 1)
    """First day of the log (00:00 UTC)."""
    days: int = 365
    seed: int = 0
    churn_share: float = 0.2
    """Share of true friends who stop buying before the end (exact count, rounded)."""
    churn_before_end_days: tuple[float, float] = (30.0, 200.0)
    """Churners stop at a moment drawn uniformly this many days before the end, capped so
    that they have been true friends for 150 days first (a log too short for that has no
    churners)."""
    butterfly_churn_share: float = 0.8
    """Share of butterflies who buy in one short burst and are gone; the rest come back for a
    big order every few months."""
    refund_share: float = 0.03
    interaction_rate: float = 1.0
    """Multiplies every persona's browsing and e-mail engagement (volume knob)."""
    invalid_share: float = 0.03
    late_share: float = 0.01
    """Records delivered behind a later-timed record of their partition, by at most
    ``allowed_lateness_seconds - 1`` seconds: the stream must reorder them, not drop them."""
    very_late_share: float = 0.001
    """Records delivered hours after their event time: ``late_event`` dead letters for
    interactions, corrections (within the late horizon) for purchases and refunds."""
    duplicate_share: float = 0.01
    partitions: int = 4
    """Partitions of the input topics the log will be replayed into (``RFM_PARTITIONS``)."""
    allowed_lateness_seconds: float = 5.0
    """The rules' allowed lateness the reordering must stay within."""
    currency: str = "USD"
    wrong_currency: str = "EUR"

    def __post_init__(self) -> None:
        counts = (self.true_friends, self.butterflies, self.barnacles, self.strangers)
        if min(counts) < 0 or sum(counts) == 0:
            raise ValueError("persona counts must be >= 0 and not all 0")
        if sum(counts) >= 1_000_000:
            raise ValueError("at most 999,999 customers (ids are c + 6 digits)")
        if self.days < 30:
            raise ValueError("days must be >= 30")
        for name in (
            "churn_share",
            "butterfly_churn_share",
            "refund_share",
            "late_share",
            "very_late_share",
            "duplicate_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if not 0.0 <= self.invalid_share < 1.0:
            raise ValueError("invalid_share must be within [0, 1)")
        if self.interaction_rate < 0:
            raise ValueError("interaction_rate must be >= 0")
        low, high = self.churn_before_end_days
        if not 0 <= low <= high:
            raise ValueError("churn_before_end_days must be (low, high) with 0 <= low <= high")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        for name in ("currency", "wrong_currency"):
            code = getattr(self, name)
            if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
                raise ValueError(f"{name} must be a 3-letter upper-case ISO 4217 code")
        if self.currency == self.wrong_currency:
            raise ValueError("wrong_currency must differ from currency")
        if self.late_share > 0 and self.allowed_lateness_seconds < 2:
            raise ValueError("reordering needs allowed_lateness_seconds >= 2 (or late_share = 0)")

    @classmethod
    def for_customers(cls, customers: int, **changes: Any) -> PersonaConfig:
        """``customers`` split 20 % true friends, 20 % butterflies, 20 % barnacles, 40 %
        strangers (a retail-like mix where one-off buyers are the largest group)."""
        tf = bf = bn = customers // 5
        counts = {
            "true_friends": tf,
            "butterflies": bf,
            "barnacles": bn,
            "strangers": customers - tf - bf - bn,
        }
        return cls(**(counts | changes))

    @property
    def customers(self) -> int:
        return self.true_friends + self.butterflies + self.barnacles + self.strangers

    @property
    def start_ms(self) -> int:
        return (self.start - _EPOCH_DATE).days * DAY_MS

    @property
    def end_ms(self) -> int:
        """End of the log (exclusive): every event time is before it."""
        return self.start_ms + self.days * DAY_MS


SAMPLE_CONFIG: Final = PersonaConfig(
    true_friends=36,
    butterflies=30,
    barnacles=30,
    strangers=54,
    start=date(2025, 1, 1),
    days=365,
    seed=2025,
    churn_share=6 / 36,
    churn_before_end_days=(50.0, 56.0),
    interaction_rate=0.4,
    invalid_share=0.03,
    late_share=0.01,
    very_late_share=0.002,
    duplicate_share=0.01,
)
"""The bundled demo log: ~150 customers over 2025, six true friends who go silent about two
months before the end (time alone turns them into drifting true friends)."""

DATA_DIR: Final = Path(__file__).resolve().parent.parent / "data"
SAMPLE_EVENTS: Final = DATA_DIR / "sample.jsonl"
SAMPLE_TRUTH: Final = DATA_DIR / "sample_truth.jsonl"


@dataclass(frozen=True, slots=True)
class CustomerTruth:
    """What the generator knows about one customer.

    ``quadrant`` is where the persona is built to sit while it is active; a churner
    (``churned_at`` set) leaves it as time passes without purchases. The purchase fields count
    only what the stream will apply (hours-late purchases are dead-lettered, so not counted).
    """

    customer_id: str
    persona: Persona
    quadrant: Quadrant
    churned_at: datetime | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    orders: int
    net_spend_cents: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "customer_id": self.customer_id,
                "persona": self.persona,
                "quadrant": self.quadrant,
                "churned_at": _iso_utc(self.churned_at),
                "first_purchase_at": _iso_utc(self.first_purchase_at),
                "last_purchase_at": _iso_utc(self.last_purchase_at),
                "orders": self.orders,
                "net_spend_cents": self.net_spend_cents,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CustomerTruth:
        data = orjson.loads(raw)
        persona = data["persona"]
        quadrant = data["quadrant"]
        if persona not in PERSONAS or quadrant not in QUADRANT_OF.values():
            raise ValueError(f"unknown persona/quadrant {persona!r}/{quadrant!r}")
        return cls(
            customer_id=str(data["customer_id"]),
            persona=persona,
            quadrant=quadrant,
            churned_at=_parse_utc(data.get("churned_at")),
            first_purchase_at=_parse_utc(data.get("first_purchase_at")),
            last_purchase_at=_parse_utc(data.get("last_purchase_at")),
            orders=int(data["orders"]),
            net_spend_cents=int(data["net_spend_cents"]),
        )


@dataclass(frozen=True)
class GeneratedLog:
    """A generated log: the lines in delivery order, what each line is, and the truth."""

    config: PersonaConfig
    lines: list[bytes]
    """JSON lines without their newline, in delivery order."""
    labels: list[Label]
    """One label per line (see ``Label``)."""
    truth: list[CustomerTruth]
    """One per customer, sorted by customer id."""

    def counts(self) -> dict[str, int]:
        """Lines per label, plus ``valid`` (lines the stream applies or reorders)."""
        c = Counter(self.labels)
        return dict(sorted(c.items())) | {"valid": c["ok"] + c["reordered"], "lines": len(self)}

    def __len__(self) -> int:
        return len(self.lines)


# ---------------------------------------------------------------------------------- events


class _Event:
    """One valid event before serialization; ``at`` may still move (reordering).

    The fields after the time are kept as a ready JSON fragment (``tail``): building a dict
    and encoding it for each of several hundred thousand events was most of the run time.
    Every string in it is generated here (ids, types, skus, amounts), so no escaping is needed.
    """

    __slots__ = (
        "at",
        "cents",
        "cid",
        "droppable",
        "event_id",
        "kind",
        "offset_min",
        "seq",
        "tail",
        "topic",
    )

    def __init__(
        self,
        at: int,
        cid: str,
        seq: int,
        topic: int,
        event_id: str,
        kind: str,
        tail: str,
        offset_min: int,
        cents: int = 0,
    ) -> None:
        self.at = at
        self.cid = cid
        self.seq = seq
        self.topic = topic
        self.event_id = event_id
        self.kind = kind
        self.tail = tail
        self.offset_min = offset_min
        self.cents = cents
        self.droppable = False  # may arrive hours late without changing the customer's quadrant

    def line(self, at: int | None = None) -> bytes:
        """The event as the producer sends it (``at`` overrides its time)."""
        when = _iso_local(self.at if at is None else at, self.offset_min)
        return (
            f'{{"event_id":"{self.event_id}","customer_id":"{self.cid}",'
            f'"occurred_at":"{when}",{self.tail}}}'
        ).encode()

    def payload(self, at: int | None = None) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.line(at))
        return parsed


@dataclass(slots=True)
class _Invalid:
    at: int
    seq: int
    kind: str
    line: bytes


_DATE_CACHE: dict[int, str] = {}
_CLOCK: list[str] = []
_SEASON_CACHE: dict[int, float] = {}


def _date_text(day: int) -> str:
    text = _DATE_CACHE.get(day)
    if text is None:
        text = _DATE_CACHE[day] = (_EPOCH_DATE + timedelta(days=day)).isoformat()
    return text


def _clock_texts() -> list[str]:
    """Every second of a day as HH:MM:SS, built once (formatting times was a hot spot)."""
    if not _CLOCK:
        _CLOCK.extend(
            f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
        )
    return _CLOCK


def _iso_local(at_ms: int, offset_min: int, *, with_offset: bool = True) -> str:
    """ISO 8601 in the customer's local time (second precision), as producers send it."""
    day, sec = divmod(at_ms // SECOND_MS + offset_min * 60, 86_400)
    text = _DATE_CACHE.get(day) or _date_text(day)
    clock = _CLOCK or _clock_texts()
    if not with_offset:
        return f"{text}T{clock[sec]}"
    return f"{text}T{clock[sec]}{_OFFSET_TEXT[offset_min]}"


def _iso_utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_utc(value: object) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _utc(at_ms: int | None) -> datetime | None:
    return None if at_ms is None else _EPOCH + timedelta(milliseconds=at_ms)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _weekday(day: int) -> int:
    """Monday = 0 for a day number counted from 1970-01-01 (a Thursday)."""
    return (day + 3) % 7


def _season(day: int) -> float:
    """Year-end intensity: the run-up to the holidays (Nov 20 - Dec 23), then the sales."""
    weight = _SEASON_CACHE.get(day)
    if weight is None:
        d = _EPOCH_DATE + timedelta(days=day)
        weight = 1.0
        if (d.month == 11 and d.day >= 20) or (d.month == 12 and d.day <= 23):
            weight = _SEASON_MAX
        elif d.month == 12:
            weight = 1.2
        _SEASON_CACHE[day] = weight
    return weight


def _day_weight(day: int) -> float:
    """Relative purchase intensity of a local day: weekends and the year-end season higher."""
    return _WEEKDAY_WEIGHT[_weekday(day)] * _season(day)


def _in_season(day: int) -> bool:
    return _season(day) == _SEASON_MAX


def _settle(day: int, rng: random.Random) -> int:
    """Roll a planned purchase day forward to a likelier one: orders bunch on weekends."""
    for _ in range(4):
        if rng.random() * _WEEKDAY_MAX <= _WEEKDAY_WEIGHT[_weekday(day)]:
            return day
        day += 1
    return day


def _arrival_day(low: int, high: int, rng: random.Random) -> int:
    """A first-purchase day in [low, high], denser on weekends and in the year-end season.

    Callers keep a day's margin from both ends of the log: these are local days, and a
    customer's local day can start or end hours away from the UTC one."""
    top = _WEEKDAY_MAX * _SEASON_MAX
    while True:
        day = rng.randint(low, high)
        if rng.random() * top <= _day_weight(day):
            return day


def _time_of_day(rng: random.Random) -> int:
    """Seconds after local midnight, with the evening peak of online retail."""
    hour = bisect.bisect_left(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
    return hour * 3600 + rng.randrange(3600)


# -------------------------------------------------------------------------------- customers


class _Customer:
    """Builds one customer's events with its own random generator.

    This is the generator's hot loop (hundreds of thousands of events for a large log), hence
    the slots, the cached bounds and ``rng.random()`` arithmetic instead of ``randint``.
    """

    __slots__ = (
        "_seq",
        "base",
        "cfg",
        "channel",
        "churned_at",
        "cid",
        "end_ms",
        "events",
        "offset_min",
        "orders",
        "persona",
        "rng",
        "start_ms",
    )

    def __init__(
        self, number: int, persona: Persona, rng: random.Random, cfg: PersonaConfig
    ) -> None:
        self.cid = f"c{number:06d}"
        self.base = number * _CUSTOMER_SEQ
        self.persona: Persona = persona
        self.rng = rng
        self.cfg = cfg
        self.start_ms = cfg.start_ms
        self.end_ms = cfg.end_ms
        self.offset_min: int = rng.choice(_TIMEZONES)
        self.channel: str = rng.choice(_CHANNELS)
        self.events: list[_Event] = []
        self.orders: list[tuple[int, int, str, _Event]] = []  # at, cents, order id, event
        self.churned_at: int | None = None
        self._seq = 0

    # time -------------------------------------------------------------------------------
    def local_day(self, at_ms: int) -> int:
        return (at_ms + self.offset_min * 60_000) // DAY_MS

    def at_on(self, day: int, seconds: int) -> int:
        return (day * 86_400 + seconds) * SECOND_MS - self.offset_min * 60_000

    def in_log(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms

    # events -----------------------------------------------------------------------------
    def _add(
        self, at: int, topic: int, event_id: str, kind: str, tail: str, cents: int = 0
    ) -> _Event:
        self._seq += 1
        event = _Event(
            at, self.cid, self.base + self._seq, topic, event_id, kind, tail, self.offset_min, cents
        )
        self.events.append(event)
        return event

    def order(self, at: int, cents: int) -> None:
        n = len(self.orders) + 1
        order_id = f"o-{self.cid}-{n}"
        tail = (
            f'"order_id":"{order_id}","amount":"{_money(cents)}",'
            f'"currency":"{self.cfg.currency}","type":"purchase"'
        )
        event = self._add(at, _PURCHASES, f"{self.cid}.p{n}", "purchase", tail, cents)
        self.orders.append((at, cents, order_id, event))

    def refund(self, at: int, order_id: str, cents: int, n: int) -> None:
        tail = (
            f'"order_id":"{order_id}","amount":"{_money(cents)}",'
            f'"currency":"{self.cfg.currency}","type":"refund"'
        )
        self._add(at, _PURCHASES, f"{self.cid}.r{n}", "refund", tail, cents)

    def touch(self, at: int, kind: str, channel: str, properties: str = "") -> None:
        """An interaction; ``properties`` is a ready JSON object text (or empty)."""
        if not self.start_ms <= at < self.end_ms:
            return
        tail = f'"type":"{kind}","channel":"{channel}"'
        if properties:
            tail += f',"properties":{properties}'
        self._add(at, _INTERACTIONS, f"{self.cid}.i{self._seq + 1}", kind, tail)

    # behaviour --------------------------------------------------------------------------
    def purchase_at(self, day: int) -> int:
        return self.at_on(day, _time_of_day(self.rng))

    def session(self, at: int, *, checkout: bool = False) -> None:
        """A browsing session from ``at``: a visit, maybe a search, 1-3 product views, maybe a
        cart add; with ``checkout`` it ends in a cart add and a checkout. It lasts at most
        ~10 minutes."""
        rnd, touch = self.rng.random, self.touch
        channel = self.channel if rnd() < 0.8 else _CHANNELS[int(rnd() * len(_CHANNELS))]
        touch(at, "visit", channel)
        if rnd() < 0.2:
            at += 5_000 + int(rnd() * 35_000)
            touch(at, "search", channel)
        for _ in range(1 + (rnd() < 0.45) + (rnd() < 0.2)):
            at += 8_000 + int(rnd() * 82_000)
            touch(at, "product_view", channel, f'{{"sku":"SKU-{int(rnd() * 10_000):04d}"}}')
        if checkout or rnd() < 0.15:
            at += 5_000 + int(rnd() * 55_000)
            touch(at, "cart_add", channel)
        if checkout:
            at += 10_000 + int(rnd() * 110_000)
            touch(at, "checkout_start", channel)

    def browse(self, weekly: float, start: int, end: int, fade: Callable[[int], float]) -> None:
        """Browsing sessions at ``weekly`` sessions a week (Poisson), thinned by ``fade``."""
        rate = weekly * self.cfg.interaction_rate / 7 / DAY_MS
        if rate <= 0:
            return
        rng = self.rng
        at = start
        while True:
            at += int(rng.expovariate(rate))
            if at >= end:
                return
            day = self.local_day(at)
            keep = fade(at) * _WEEKDAY_WEIGHT[_weekday(day)] / _WEEKDAY_MAX
            if rng.random() < keep:
                self.session(self.at_on(day, _time_of_day(rng)))

    def newsletter(self, open_p: float, start: int, fade: Callable[[int], float]) -> None:
        """The weekly newsletter (Tuesdays, 09:00 UTC) from ``start``: opens and clicks."""
        rnd = self.rng.random
        p = open_p * self.cfg.interaction_rate
        if p <= 0:
            return
        first_day = start // DAY_MS
        tuesday = first_day + (1 - _weekday(first_day)) % 7
        sent = tuesday * DAY_MS + 9 * 3_600_000
        while sent < self.end_ms:
            if rnd() < p * fade(sent):
                opened = sent + int(self.rng.expovariate(1 / 14_400)) * SECOND_MS
                campaign = f'{{"campaign":"nl-{_date_text(sent // DAY_MS)}"}}'
                self.touch(opened, "email_open", "email", campaign)
                if rnd() < 0.3:
                    clicked = opened + 5_000 + int(rnd() * 175_000)
                    self.touch(clicked, "email_click", "email", campaign)
            sent += 7 * DAY_MS

    def around_orders(self, checkout_p: float, ticket_p: float) -> None:
        """The session that leads to each order, and the odd support ticket after one."""
        rnd = self.rng.random
        p = checkout_p * self.cfg.interaction_rate
        for at, _cents, order_id, _event in self.orders:
            if rnd() < p:
                # starts 15-60 minutes before the order: it ends before the order it leads to
                self.session(at - 900_000 - int(rnd() * 2_700_000), checkout=True)
            if rnd() < ticket_p:
                later = at + DAY_MS + int(rnd() * 6 * DAY_MS)
                self.touch(later, "support_ticket", "web", f'{{"order_id":"{order_id}"}}')

    def refunds(self, *, keep_above_cents: int | None = None) -> None:
        """Refund a share of orders a few days later, partially or fully. ``keep_above_cents``
        bounds what may be refunded so that net spend stays clearly above that amount."""
        rng = self.rng
        net = sum(o[1] for o in self.orders)
        for n, (at, cents, order_id, event) in enumerate(list(self.orders), start=1):
            if rng.random() >= self.cfg.refund_share:
                continue
            when = at + DAY_MS + int(rng.random() * 9 * DAY_MS)
            if not self.in_log(when):
                continue
            full = keep_above_cents is None and rng.random() < 0.35
            amount = cents if full else max(100, round(cents * rng.uniform(0.1, 0.6)))
            if keep_above_cents is not None:
                amount = min(amount, net - keep_above_cents)
                if amount < 100:
                    continue
            net -= amount
            event.droppable = False  # its refund refers to it
            self.refund(when, order_id, amount, n)


def _churn_fade(last_order: int | None) -> Callable[[int], float]:
    """Engagement of a churner: normal until 60 days before the last order, then fading to a
    quarter of it at the last order, and almost nothing after (a rare newsletter open)."""
    if last_order is None:
        return lambda _at: 1.0
    ramp = 60 * DAY_MS
    begin = last_order - ramp

    def fade(at: int) -> float:
        if at <= begin:
            return 1.0
        if at <= last_order:
            return 1.0 - 0.75 * (at - begin) / ramp
        return 0.06

    return fade


def _no_fade(_at: int) -> float:
    return 1.0


def _loyal_gap(rng: random.Random, mean: float) -> float:
    """Days to a loyal customer's next order: gamma-distributed (shape 6, so a gap is within
    half to twice the mean nine times out of ten), cut at 2.5 times the mean. The cut keeps a
    rare 3-4x gap near the end of the log from dropping P(alive) under the loyalty minimum,
    which would turn a loyal persona into a churner the truth does not know about."""
    return min(rng.gammavariate(6.0, mean / 6.0), 2.5 * mean)


def _true_friend(c: _Customer, churner: bool) -> None:
    cfg, rng = c.cfg, c.rng
    start_day, end_day = cfg.start_ms // DAY_MS, cfg.end_ms // DAY_MS
    churn_at: int | None = None
    latest_first = start_day + max(0, cfg.days - _LOYAL_RAMP_DAYS)
    low, high = cfg.churn_before_end_days
    high = min(high, cfg.days - _TRUE_FRIEND_BEFORE_CHURN_DAYS - 1)  # a true friend first
    if churner and low <= high:
        churn_at = cfg.end_ms - round(rng.uniform(low, high) * DAY_MS)
        room = (churn_at - cfg.start_ms) // DAY_MS - _TRUE_FRIEND_BEFORE_CHURN_DAYS
        latest_first = min(latest_first, start_day + room)
    mean_gap = rng.uniform(10.0, 18.0)
    typical = rng.uniform(60.0, 200.0)
    day = _arrival_day(start_day + 1, max(start_day + 1, latest_first), rng)
    while day < end_day:
        at = c.purchase_at(day)
        if not c.in_log(at) or (churn_at is not None and at >= churn_at):
            break
        cents = round(typical * math.exp(rng.gauss(0.0, 0.3)) * 100)
        c.order(at, min(max(cents, 2_000), 90_000))
        gap = _loyal_gap(rng, mean_gap) * (0.75 if _in_season(day) else 1.0)
        day = _settle(day + max(1, round(gap)), rng)
    c.churned_at = churn_at
    _mark_droppable(c)
    c.refunds()
    last = c.orders[-1][0] if c.orders and churn_at is not None else None
    fade = _churn_fade(last)
    first = c.orders[0][0] if c.orders else cfg.start_ms
    c.browse(rng.uniform(0.2, 0.45), max(cfg.start_ms, first - 21 * DAY_MS), cfg.end_ms, fade)
    c.newsletter(0.25, first, fade)
    c.around_orders(0.25, 0.03)


def _barnacle(c: _Customer) -> None:
    cfg, rng = c.cfg, c.rng
    start_day, end_day = cfg.start_ms // DAY_MS, cfg.end_ms // DAY_MS
    mean_gap = rng.uniform(18.0, 30.0)
    budget = rng.uniform(45.0, 80.0)  # dollars per 364 days: clearly under the $100 split
    day = _arrival_day(start_day + 1, start_day + max(1, cfg.days - _LOYAL_RAMP_DAYS), rng)
    gap_days = mean_gap
    while day < end_day:
        at = c.purchase_at(day)
        if not c.in_log(at):
            break
        cents = round(budget * 100 * gap_days / 364 * rng.uniform(0.8, 1.2))
        c.order(at, max(cents, 150))
        gap = _loyal_gap(rng, mean_gap) * (0.8 if _in_season(day) else 1.0)
        nxt = _settle(day + max(1, round(gap)), rng)
        gap_days, day = float(nxt - day), nxt
    _mark_droppable(c)
    c.refunds()
    first = c.orders[0][0] if c.orders else cfg.start_ms
    c.browse(rng.uniform(0.08, 0.2), max(cfg.start_ms, first - 14 * DAY_MS), cfg.end_ms, _no_fade)
    c.newsletter(0.12, first, _no_fade)
    c.around_orders(0.2, 0.02)


def _butterfly(c: _Customer, churner: bool) -> None:
    cfg, rng = c.cfg, c.rng
    start_day, end_day = cfg.start_ms // DAY_MS, cfg.end_ms // DAY_MS
    days: list[int] = []
    if churner:
        horizon = max(start_day, end_day - _BUTTERFLY_HORIZON_DAYS)
        first_day = _arrival_day(horizon + 1, end_day - 2, rng)
        span = rng.randint(3, 45)
        count = rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
        days = sorted({first_day, *(first_day + rng.randint(1, span) for _ in range(count - 1))})
        leave = c.at_on(first_day + span + 1, 0)  # local midnight after the burst
        c.churned_at = leave if leave < cfg.end_ms else None
    else:
        first_day = _arrival_day(start_day + 1, min(end_day - 2, start_day + 200), rng)
        day = first_day
        while day < end_day and len(days) < 3:
            days.append(day)
            day += 130 + round(rng.gammavariate(2.0, 25.0))  # never 4 orders in 364 days
    for day in days:
        at = c.purchase_at(day)
        if c.in_log(at):
            c.order(at, round(rng.uniform(150.0, 600.0) * 100))
    c.refunds(keep_above_cents=13_000)
    if not c.orders:
        return
    # browsing concentrates around the orders (10 days before to a week after each)
    windows: list[list[int]] = []
    for at, _cents, _id, _event in c.orders:
        low, high = max(cfg.start_ms, at - 10 * DAY_MS), min(cfg.end_ms, at + 7 * DAY_MS)
        if windows and low <= windows[-1][1]:
            windows[-1][1] = high
        else:
            windows.append([low, high])
    for low, high in windows:
        c.browse(1.0, low, high, _no_fade)
    first = c.orders[0][0]
    c.browse(0.04, first, cfg.end_ms, _no_fade)
    c.newsletter(0.08, first, _no_fade)
    c.around_orders(0.8, 0.05)


def _stranger(c: _Customer) -> None:
    cfg, rng = c.cfg, c.rng
    start_day, end_day = cfg.start_ms // DAY_MS, cfg.end_ms // DAY_MS
    day = _arrival_day(start_day + 1, end_day - 2, rng)
    days = [day]
    if rng.random() < 0.35:
        days.append(day + rng.randint(20, 200))
    for d in days:
        at = c.purchase_at(d)
        if c.in_log(at):
            c.order(at, rng.randint(500, 3_500))
    c.refunds()
    if not c.orders:
        return
    first = c.orders[0][0]
    c.browse(0.04, first, cfg.end_ms, _no_fade)
    c.newsletter(0.03, first, _no_fade)
    c.around_orders(0.4, 0.02)


def _mark_droppable(c: _Customer) -> None:
    """Orders that may arrive hours late (folded in as corrections) without moving the
    customer: not the first or the last (refunds then unmark the orders they refer to)."""
    for _at, _cents, _id, event in c.orders[1:-1]:
        event.droppable = True


# -------------------------------------------------------------------------------- delivery


def generate(config: PersonaConfig) -> GeneratedLog:
    """Generate the log and its ground truth (deterministic in ``config``; see module doc)."""
    collecting = gc.isenabled()
    gc.disable()  # millions of small acyclic objects: the cycle collector would only rescan them
    try:
        return _generate(config)
    finally:
        if collecting:
            gc.enable()


def _generate(config: PersonaConfig) -> GeneratedLog:
    customers = _customers(config)
    events = [e for c in customers for e in c.events]
    events.sort(key=lambda e: e.at * _SEQ_SPAN + e.seq)
    n = len(events)
    rng = random.Random(f"{config.seed}/delivery")
    part = {c.cid: partition_for(c.cid.encode(), config.partitions) for c in customers}
    streams: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(events):
        streams.setdefault((e.topic, part[e.cid]), []).append(i)
    place = [(-1, -1)] * n  # index -> (stream key number, position in that stream)
    keys = list(streams)
    for k, key in enumerate(keys):
        for pos, i in enumerate(streams[key]):
            place[i] = (k, pos)
    lanes = [streams[key] for key in keys]

    d = _Delivery(events, lanes, place, rng)
    d.reorder(round(config.late_share * n), config.allowed_lateness_seconds)
    d.delay(round(config.very_late_share * n))
    duplicated = d.duplicates(round(config.duplicate_share * n))
    invalid = _invalid_records(events, n + len(duplicated), config, rng)

    lines: list[bytes] = []
    labels: list[Label] = []
    late, reordered, after = d.late, d.reordered, d.after

    def emit(i: int) -> None:
        line = events[i].line()
        lines.append(line)
        labels.append("late" if i in late else "reordered" if i in reordered else "ok")
        if i in duplicated:
            lines.append(line)
            labels.append("duplicate")
        if i in after:
            for j in sorted(after[i], key=lambda k: (events[k].at, k)):
                emit(j)

    invalid.sort(key=lambda r: (r.at, r.seq))
    k = 0
    for i in range(n):
        if i in d.moved:
            continue
        at = events[i].at
        while k < len(invalid) and invalid[k].at <= at:
            lines.append(invalid[k].line)
            labels.append(f"invalid:{invalid[k].kind}")
            k += 1
        emit(i)
    for record in invalid[k:]:
        lines.append(record.line)
        labels.append(f"invalid:{record.kind}")
    lost = {events[i].event_id for i in late if events[i].topic == _INTERACTIONS}
    truth = sorted((_truth(c, lost) for c in customers), key=lambda t: t.customer_id)
    return GeneratedLog(config, lines, labels, truth)


def _customers(config: PersonaConfig) -> list[_Customer]:
    """Every customer built; ids are shuffled so that they say nothing about the persona."""
    plan: list[tuple[Persona, int]] = []
    for persona, count in zip(
        PERSONAS,
        (config.true_friends, config.butterflies, config.barnacles, config.strangers),
        strict=True,
    ):
        plan.extend((persona, i) for i in range(count))
    numbers = list(range(1, len(plan) + 1))
    random.Random(f"{config.seed}/ids").shuffle(numbers)
    tf_churn = round(config.churn_share * config.true_friends)
    bf_churn = round(config.butterfly_churn_share * config.butterflies)
    out = []
    for (persona, i), number in zip(plan, numbers, strict=True):
        rng = random.Random(f"{config.seed}/{persona}/{i}")
        c = _Customer(number, persona, rng, config)
        if persona == "true_friend":
            _true_friend(c, churner=i < tf_churn)
        elif persona == "butterfly":
            _butterfly(c, churner=i < bf_churn)
        elif persona == "barnacle":
            _barnacle(c)
        else:
            _stranger(c)
        out.append(c)
    return out


class _Delivery:
    """Decides which records leave their event-time place, and where they arrive.

    ``lanes`` are the records of each (topic, partition) in event-time order: Kafka orders
    records per partition, and the stream's clock (the largest event time seen) is kept per
    partition too, so displacement only means something within a lane.
    """

    def __init__(
        self,
        events: list[_Event],
        lanes: list[list[int]],
        place: list[tuple[int, int]],
        rng: random.Random,
    ) -> None:
        self.events = events
        self.lanes = lanes
        self.place = place
        self.rng = rng
        self.after: dict[int, list[int]] = {}  # index -> indices delivered right after it
        self.moved: set[int] = set()  # not delivered at their event-time place
        self.anchors: set[int] = set()  # records something is delivered right after
        self.reordered: set[int] = set()
        self.late: set[int] = set()

    def _attach(self, i: int, anchor: int) -> None:
        self.moved.add(i)
        self.anchors.add(anchor)
        self.after.setdefault(anchor, []).append(i)

    def _draws(self, count: int) -> list[int]:
        """Random record indices to try, enough for ``count`` hits when most qualify."""
        n = len(self.events)
        return [int(self.rng.random() * n) for _ in range(min(20 * count + 100, 50 * n))]

    def reorder(self, count: int, lateness_seconds: float) -> None:
        """Deliver ``count`` records just behind the next record of their lane.

        The record's event time becomes 1 to ``lateness - 1`` s before its partner's, so when
        it arrives the partition clock (the partner's time) is ahead of it but time is not
        closed past it: the stream must put it back in order, not dead-letter it. Records
        whose partner is more than a few hours away are left alone (moving them that far
        would change the customer's history, not just its delivery).
        """
        if count <= 0:
            return
        events, rng = self.events, self.rng
        max_behind = max(1, math.floor(lateness_seconds) - 1)
        for a in self._draws(count):
            if len(self.reordered) >= count:
                break
            lane, pos = self.place[a]
            if pos + 1 >= len(self.lanes[lane]):
                continue
            b = self.lanes[lane][pos + 1]
            if a in self.moved or a in self.anchors or b in self.moved:
                continue
            if events[b].at - events[a].at > _MAX_REORDER_SHIFT_MS:
                continue
            self._attach(a, b)
            self.reordered.add(a)
            behind = (1 + int(rng.random() * max_behind)) * SECOND_MS
            events[a].at = max(events[a].at, events[b].at - behind)

    def delay(self, count: int) -> None:
        """Deliver ``count`` records hours late: after a record of their lane that is more
        than a minute (far more than the allowed lateness) ahead of them, preferably the
        last one within 1-12 hours. Purchases only when losing them changes nothing
        (``droppable``)."""
        if count <= 0:
            return
        events, rng = self.events, self.rng
        for i in self._draws(count):
            if len(self.late) >= count:
                break
            e = events[i]
            if (
                i in self.moved
                or i in self.anchors
                or not (e.topic == _INTERACTIONS or e.droppable)
            ):
                continue
            lane_no, pos = self.place[i]
            lane = self.lanes[lane_no]
            due = e.at + (3_600 + int(rng.random() * 11 * 3_600)) * SECOND_MS
            beyond = e.at + 60 * SECOND_MS
            anchor = None
            for k in range(pos + 1, len(lane)):
                j = lane[k]
                if j in self.moved or events[j].at <= beyond:
                    continue
                if anchor is not None and events[j].at > due:
                    break
                anchor = j
            if anchor is not None:
                self._attach(i, anchor)
                self.late.add(i)

    def duplicates(self, count: int) -> set[int]:
        """``count`` records sent twice in a row (a producer retry); never a late one, whose
        copy would be a second late dead letter rather than a duplicate."""
        n = len(self.events)
        picked = self.rng.sample(range(n), min(n, count + len(self.late)))
        return set([i for i in picked if i not in self.late][:count])


def _invalid_records(
    events: list[_Event], total: int, config: PersonaConfig, rng: random.Random
) -> list[_Invalid]:
    """Invalid copies of real events, one kind of defect each, in the envelope form; as many
    as make them ``invalid_share`` of all lines, given ``total`` valid and duplicate lines."""
    share = config.invalid_share
    count = round(share * total / (1 - share)) if total else 0
    if count == 0:
        return []
    purchases = [e for e in events if e.topic == _PURCHASES]
    touches = [e for e in events if e.topic == _INTERACTIONS]
    kinds = list(INVALID_KINDS)
    weights = [_INVALID_WEIGHTS[k] for k in kinds]
    out = []
    for n in range(count):
        if n < len(kinds):
            kind = kinds[n]
        elif n % _OVERSIZED_EVERY == 0:
            kind = "oversized_payload"
        else:
            kind = rng.choices(kinds, weights=weights)[0]
        if kind in _PURCHASE_ONLY and purchases:
            pool = purchases
        elif kind in _INTERACTION_ONLY and touches:
            pool = touches
        else:
            pool = events
            if kind in _PURCHASE_ONLY or kind in _INTERACTION_ONLY:
                kind = "missing_field"
        template = pool[int(rng.random() * len(pool))]
        at = template.at + (1 + int(rng.random() * 900)) * SECOND_MS
        value = _corrupt(kind, template, at, n, config, rng)
        envelope = {"topic": _TOPIC_NAMES[template.topic], "key": template.cid, "value": value}
        out.append(_Invalid(at, n, kind, orjson.dumps(envelope)))
    return out


def _corrupt(
    kind: str, template: _Event, at: int, n: int, config: PersonaConfig, rng: random.Random
) -> dict[str, Any] | str:
    """A copy of ``template`` (new event id and time) with one defect of the given kind."""
    body = template.payload(at) | {"event_id": f"{template.cid}.x{n + 1}"}
    is_purchase = template.topic == _PURCHASES
    if kind == "malformed_json":
        text = orjson.dumps(body).decode()
        return text[: rng.randint(len(text) // 3, len(text) - 2)]
    if kind == "missing_field":
        required = ("amount", "currency", "order_id") if is_purchase else ("type",)
        del body[rng.choice((*required, "customer_id", "event_id", "occurred_at"))]
    elif kind == "naive_timestamp":
        body["occurred_at"] = _iso_local(at, template.offset_min, with_offset=False)
    elif kind == "epoch_timestamp":
        body["occurred_at"] = at // SECOND_MS
    elif kind == "negative_amount":
        body["amount"] = "-" + body["amount"]
    elif kind == "unsupported_schema_version":
        body = {"schema_version": 2} | body
    elif kind == "wrong_currency":
        body["currency"] = config.wrong_currency
    elif kind == "lookalike_field":
        if is_purchase:
            body["is_refund"] = body.get("type") == "refund"
        else:
            body["schemaVersion"] = 1
    elif kind in ("zero_timestamp", "future_timestamp"):
        # A producer's default date, or a clock decades off. Written as a raw string value:
        # the replay then keeps the record where it is instead of sorting it to 1970 or 2096,
        # where it would set the pace of a timed replay or the end-of-log tick.
        year = "1970" if kind == "zero_timestamp" else "2096"  # 2096: Feb 29 stays valid
        body["occurred_at"] = year + body["occurred_at"][4:]
        return orjson.dumps(body).decode()
    elif kind == "oversized_properties":
        body["properties"] = {"dom_snapshot": "<div class='product-tile'></div>" * 150}
    elif kind == "oversized_payload":
        body["receipt_pdf_b64"] = "JVBERi0xLjQK" + "A" * 65_600  # just over the 64 KiB limit
    return body


def _truth(c: _Customer, lost: set[str]) -> CustomerTruth:
    """Ground truth from what the stream will apply (hours-late purchases are, as corrections;
    ``lost`` holds the hours-late interactions, which are not)."""
    orders, net = [], 0
    for e in c.events:
        if e.topic != _PURCHASES or e.event_id in lost:
            continue
        if e.kind == "purchase":
            orders.append(e.at)
            net += e.cents
        else:
            net -= e.cents
    return CustomerTruth(
        customer_id=c.cid,
        persona=c.persona,
        quadrant=QUADRANT_OF[c.persona],
        churned_at=_utc(c.churned_at),
        first_purchase_at=_utc(min(orders)) if orders else None,
        last_purchase_at=_utc(max(orders)) if orders else None,
        orders=len(orders),
        net_spend_cents=net,
    )


# ---------------------------------------------------------------------------------- files


def write(log: GeneratedLog, events_path: Path, truth_path: Path) -> None:
    """Write the lines (one JSON object per line, delivery order) and the truth JSON lines."""
    events_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    with events_path.open("wb") as f:
        for line in log.lines:
            f.write(line + b"\n")
    with truth_path.open("wb") as f:
        for t in log.truth:
            f.write(t.to_json() + b"\n")


def read_truth(path: Path) -> list[CustomerTruth]:
    """The truth file written by :func:`write`."""
    with path.open("rb") as f:
        return [CustomerTruth.from_json(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.tools.personas",
        description="Generate a synthetic event log with ground truth (customers whose "
        "quadrant is known), in delivery order, with refunds, interactions, late, duplicate "
        "and invalid records.",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help=f"regenerate the bundled sample ({SAMPLE_EVENTS.name}, {SAMPLE_TRUTH.name} in "
        "streams/data/); other options are ignored",
    )
    parser.add_argument("--customers", type=int, default=1_000, help="20/20/20/40 %% mix")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4, help="RFM_PARTITIONS of the replay")
    parser.add_argument("--out", type=Path, default=Path("events.jsonl"))
    parser.add_argument("--truth", type=Path, default=Path("truth.jsonl"))
    args = parser.parse_args(argv)
    if args.sample:
        config, out, truth = SAMPLE_CONFIG, SAMPLE_EVENTS, SAMPLE_TRUTH
    else:
        config = PersonaConfig.for_customers(
            args.customers,
            days=args.days,
            start=args.start,
            seed=args.seed,
            partitions=args.partitions,
        )
        out, truth = args.out, args.truth
    log = generate(config)
    write(log, out, truth)
    counts = ", ".join(f"{k} {v:,}" for k, v in log.counts().items())
    print(
        f"{out} ({out.stat().st_size:,} bytes), {truth}: {config.customers:,} customers; {counts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
