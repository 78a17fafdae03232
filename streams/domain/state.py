"""Per-customer state: one compact, bounded, serializable record.

What it keeps, and why:

* **BG/NBD inputs** — first and last purchase, ``repeat_days`` (x: distinct purchase days after
  the first), so ``t_x`` and ``T`` follow; spend on the first day and on repeat days, so the mean
  repeat spend matches the usual summary of a transaction log.
* **Rolling windows** — sparse buckets (``bucket_days`` wide) of orders and net spend, pruned
  past the longest window: memory is bounded by the window, not by the number of orders.
* **Purchase rhythm** — the sum of squared gaps between consecutive purchase days; with
  ``t_x / x`` (the mean gap) it gives the variance of the customer's own gap.
* **Pending purchases** — purchases whose event time is not yet *closed* (partition watermark
  minus allowed lateness). They are folded into the aggregates when time closes past them.
* **Recent purchase days** — the distinct purchase days inside the late horizon, plus the one
  before them: what a *late* purchase (older than closed time, within the horizon) needs to be
  folded in as if it had come in order (is its day new? which days are its neighbours?). Every
  aggregate above is a function of the *set* of folded purchases (x = distinct days − 1, the
  squared gaps of the sorted days, spend on the first day and on the others, bucket sums), so
  :func:`fold_purchase` gives the same state whatever the order it is called in.
* **Redelivery guards** — the highest source offset applied per input partition, and the ids of
  events that could still legally arrive again (pending ones, and folded ones inside the late
  horizon).
* **Offer outcomes** — the open outcome windows of the customer's offer and holdout decisions,
  and the times of their recent decisions (cooldown and cap history), see
  :mod:`streams.domain.outcomes`; few and bounded.
* **Classification** — current scores, segment, quadrant, drift level, when each began, the
  output sequence number (output ids are ``customer:seq``), and the next time-driven due time.
"""

from __future__ import annotations

import bisect
from typing import Any, Final

import orjson

from streams.domain.facts import MS_PER_DAY, day_of
from streams.domain.outcomes import PendingOutcome

_FORMAT: Final = 4
# format 1 (before late corrections), 2 (before offer outcomes) and 3 (before the index head)
# are upgraded on read
_FORMATS: Final = (1, 2, 3, 4)
# Format 4 is format 3 with an index head after the format: [4, next due, partition, <format
# 3 from the customer id on, without its next due>], so a restart reads the due index from each
# row's first bytes, and the row is no longer than format 3 but for the partition.
_HEAD: Final = 2
_HEAD_PREFIX: Final = b"[4,"
# positions in a format 1-3 row read without decoding the whole state
_OFFSETS_AT: Final = 20
_NEXT_DUE_AT: Final = 28

REFUND: Final = -1
PURCHASE: Final = 1

# (event time ms, event id, PURCHASE | REFUND, cents, order id)
PendingPurchase = tuple[int, str, int, int, str]


class CustomerState:
    """Mutable on purpose: the stream's hot path cannot afford a fresh object per event.

    Use :meth:`copy` where an unchanged original is needed (tests, what-if runs).
    """

    __slots__ = (
        "buckets",
        "customer_id",
        "days",
        "drift_level",
        "evaluated_ms",
        "first_day_cents",
        "first_ms",
        "folded_ids",
        "folded_ms",
        "gap_sq_days",
        "interactions",
        "last_ms",
        "last_touch_ms",
        "model_version",
        "next_due_ms",
        "offer_ms",
        "offsets",
        "orders",
        "outcomes",
        "pending",
        "quadrant",
        "quadrant_since_ms",
        "refunded_cents",
        "refunds",
        "repeat_cents",
        "repeat_days",
        "scores",
        "segment",
        "segment_since_ms",
        "seq",
        "touch_ids",
        "touches",
    )

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.seq = 0
        # purchases folded so far (all with event time <= folded_ms)
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.repeat_days = 0
        self.orders = 0
        self.refunds = 0
        self.first_day_cents = 0
        self.repeat_cents = 0
        self.refunded_cents = 0
        self.gap_sq_days = 0
        self.buckets: dict[int, list[int]] = {}  # bucket -> [orders, net cents]
        self.pending: list[PendingPurchase] = []
        # ids of folded purchases and refunds inside the late horizon -> their event day
        self.folded_ids: dict[str, int] = {}
        # the latest event time folded
        self.folded_ms: int | None = None
        # distinct purchase days folded: every one from days[0] on (days[0] is the first
        # purchase day unless older days were forgotten past the late horizon)
        self.days: list[int] = []
        # interactions
        self.touches: dict[int, int] = {}  # bucket -> interactions
        self.interactions = 0
        self.last_touch_ms: int | None = None
        self.touch_ids: dict[str, int] = {}  # id -> event time, while a duplicate may arrive
        # redelivery guard: "stream/partition" -> highest offset applied
        self.offsets: dict[str, int] = {}
        # classification
        self.scores: tuple[int, int, int] | None = None
        self.segment: str | None = None
        self.segment_since_ms: int | None = None
        self.quadrant: str | None = None
        self.quadrant_since_ms: int | None = None
        self.drift_level = 0
        self.evaluated_ms: int | None = None
        self.next_due_ms: int | None = None
        self.model_version: str | None = None
        # offer outcomes: open windows, and the times of recent recorded decisions
        self.outcomes: list[PendingOutcome] = []
        self.offer_ms: list[int] = []

    # ------------------------------------------------------------------ derived quantities
    @property
    def has_purchased(self) -> bool:
        return self.first_ms is not None

    @property
    def first_day(self) -> int | None:
        return None if self.first_ms is None else day_of(self.first_ms)

    @property
    def t_x_days(self) -> int:
        """BG/NBD t_x: whole days from the first to the last purchase day."""
        if self.first_ms is None or self.last_ms is None:
            return 0
        return day_of(self.last_ms) - day_of(self.first_ms)

    def age_days(self, now_ms: int) -> float:
        """BG/NBD T: days from the start of the first purchase day to ``now_ms``."""
        if self.first_ms is None:
            return 0.0
        return now_ms / MS_PER_DAY - day_of(self.first_ms)

    @property
    def mean_gap_days(self) -> float | None:
        """The customer's own mean time between purchase days (t_x / x)."""
        return self.t_x_days / self.repeat_days if self.repeat_days else None

    @property
    def gap_std_days(self) -> float | None:
        if self.repeat_days < 2:
            return None
        mean = self.t_x_days / self.repeat_days
        var = max(self.gap_sq_days / self.repeat_days - mean * mean, 0.0)
        return float(var**0.5)

    @property
    def mean_repeat_spend_cents(self) -> float:
        """Mean spend per repeat purchase day (0 with no repeat day), net of nothing."""
        return self.repeat_cents / self.repeat_days if self.repeat_days else 0.0

    def window_totals(self, now_ms: int, bucket_days: int, buckets: int) -> tuple[int, int]:
        """(orders, net cents) in the ``buckets`` buckets ending with the one holding ``now``."""
        newest = now_ms // (bucket_days * MS_PER_DAY)
        oldest = newest - buckets
        orders = cents = 0
        for bucket, (n, c) in self.buckets.items():
            if oldest < bucket <= newest:
                orders += n
                cents += c
        return orders, cents

    def engagement(self, now_ms: int, bucket_days: int, buckets: int) -> int:
        newest = now_ms // (bucket_days * MS_PER_DAY)
        oldest = newest - buckets
        return sum(n for b, n in self.touches.items() if oldest < b <= newest)

    # ------------------------------------------------------------------ serialization
    def to_list(self) -> list[Any]:
        # Sorted by key (unique, so the same order as sorting the pairs): comparing ints and
        # strings is several times cheaper than comparing lists, and a flush serializes
        # every changed state.
        buckets, folded_ids, touches = self.buckets, self.folded_ids, self.touches
        touch_ids, offsets = self.touch_ids, self.offsets
        first_stream = min(offsets) if offsets else None
        return [
            _FORMAT,
            self.next_due_ms,
            None if first_stream is None else int(first_stream.rsplit("/", 1)[1]),
            self.customer_id,
            self.seq,
            self.first_ms,
            self.last_ms,
            self.repeat_days,
            self.orders,
            self.refunds,
            self.first_day_cents,
            self.repeat_cents,
            self.refunded_cents,
            self.gap_sq_days,
            [[b, *buckets[b]] for b in sorted(buckets)],
            [list(p) for p in self.pending],
            [[i, folded_ids[i]] for i in sorted(folded_ids)],
            self.folded_ms,
            [[b, touches[b]] for b in sorted(touches)],
            self.interactions,
            self.last_touch_ms,
            [[i, touch_ids[i]] for i in sorted(touch_ids)],
            [[k, offsets[k]] for k in sorted(offsets)],
            list(self.scores) if self.scores else None,
            self.segment,
            self.segment_since_ms,
            self.quadrant,
            self.quadrant_since_ms,
            self.drift_level,
            self.evaluated_ms,
            # format 3 had the next due time here: format 4 has it in the head only
            self.model_version,
            self.days,
            [o.to_list() for o in self.outcomes],
            self.offer_ms,
        ]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_list())

    @staticmethod
    def index_entry(raw: bytes) -> tuple[str, int | None, int | None]:
        """(customer id, input partition, next due time) of a serialized state, cheaply.

        A restarted worker needs only these to schedule time-driven work; building every
        state object up front would cost ~6 µs and ~2.5 KB per customer (see table_store).
        """
        row = orjson.loads(raw)
        if not row or row[0] not in _FORMATS:
            raise ValueError(f"unknown customer state format {row[:1]!r}; expected {_FORMAT}")
        if row[0] >= 4:
            return row[_HEAD + 1], row[2], row[1]
        offsets = row[_OFFSETS_AT]
        partition = int(offsets[0][0].rsplit("/", 1)[1]) if offsets else None
        return row[1], partition, row[_NEXT_DUE_AT]

    @staticmethod
    def index_head(raw: bytes) -> tuple[int | None, int | None] | None:
        """(input partition, next due time) from a format-4 row's first bytes, without parsing
        the rest; None for an older row (use :meth:`index_entry`).

        Why: a worker that takes over a partition rebuilds its due index from every row; the
        full parse of :meth:`index_entry` (~4 µs a row) was most of its wait at a million.
        The customer id is the row's table key, so the caller has it already.
        """
        if not raw.startswith(_HEAD_PREFIX):
            return None
        due_end = raw.index(b",", 3)
        partition_end = raw.index(b",", due_end + 1)
        due = raw[3:due_end]
        partition = raw[due_end + 1 : partition_end]
        return (
            None if partition == b"null" else int(partition),
            None if due == b"null" else int(due),
        )

    @classmethod
    def from_list(cls, row: list[Any]) -> CustomerState:
        if not row or row[0] not in _FORMATS:
            raise ValueError(f"unknown customer state format {row[:1]!r}; expected {_FORMAT}")
        if row[0] >= 4:  # the body is format 3 without its next due time, which is the head's
            row = [
                row[0],
                *row[_HEAD + 1 : _HEAD + _NEXT_DUE_AT],
                row[1],
                *row[_HEAD + _NEXT_DUE_AT :],
            ]
        s = cls(row[1])
        (
            s.seq,
            s.first_ms,
            s.last_ms,
            s.repeat_days,
            s.orders,
            s.refunds,
            s.first_day_cents,
            s.repeat_cents,
            s.refunded_cents,
            s.gap_sq_days,
        ) = row[2:12]
        s.buckets = {b: [n, c] for b, n, c in row[12]}
        s.pending = [(p[0], p[1], p[2], p[3], p[4]) for p in row[13]]
        s.folded_ms = row[15]
        if row[0] == 1:
            # Format 1 kept only the ids at the fold edge, and no purchase days: late data
            # before the last purchase day is then beyond what this state can fold.
            s.folded_ids = dict.fromkeys(row[14], day_of(s.folded_ms or 0))
            s.days = [] if s.last_ms is None else [day_of(s.last_ms)]
        else:
            s.folded_ids = dict(row[14])
            s.days = list(row[30])
        s.touches = dict(row[16])
        s.interactions = row[17]
        s.last_touch_ms = row[18]
        s.touch_ids = dict(row[19])
        s.offsets = dict(row[20])
        s.scores = (row[21][0], row[21][1], row[21][2]) if row[21] else None
        (
            s.segment,
            s.segment_since_ms,
            s.quadrant,
            s.quadrant_since_ms,
            s.drift_level,
            s.evaluated_ms,
            s.next_due_ms,
            s.model_version,
        ) = row[22:30]
        if row[0] >= 3:
            s.outcomes = [PendingOutcome.from_list(o) for o in row[31]]
            s.offer_ms = list(row[32])
        return s

    @classmethod
    def from_bytes(cls, raw: bytes) -> CustomerState:
        return cls.from_list(orjson.loads(raw))

    def copy(self) -> CustomerState:
        return CustomerState.from_list(orjson.loads(self.to_bytes()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomerState) and self.to_list() == other.to_list()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"CustomerState({self.customer_id!r}, orders={self.orders}, x={self.repeat_days}, "
            f"segment={self.segment!r}, quadrant={self.quadrant!r}, seq={self.seq})"
        )


def can_fold(state: CustomerState, at_ms: int) -> bool:
    """Whether the state still holds what folding a purchase at ``at_ms`` needs to know."""
    if not state.days or state.first_ms is None:
        return True
    day = day_of(at_ms)
    return day >= state.days[0] or state.days[0] == day_of(state.first_ms)


def fold_purchase(state: CustomerState, purchase: PendingPurchase, bucket_days: int) -> None:
    """Add one purchase or refund to the aggregates, in any order.

    The result depends on the set of purchases folded, not on the order: the purchase's day is
    placed among the known purchase days (``state.days``), so x, t_x, the squared gaps and the
    first-day / repeat spend come out as if the purchases had been folded sorted. A day before
    ``days[0]`` is foldable only when ``days[0]`` is the first purchase day (see
    :func:`can_fold`; the engine's late horizon guarantees it).
    """
    at_ms, _event_id, sign, cents, _order = purchase
    bucket = state.buckets.setdefault(at_ms // (bucket_days * MS_PER_DAY), [0, 0])
    if sign == REFUND:
        state.refunds += 1
        state.refunded_cents += cents
        bucket[1] -= cents
        return
    state.orders += 1
    bucket[0] += 1
    bucket[1] += cents
    day = day_of(at_ms)
    days = state.days
    if state.first_ms is None or state.last_ms is None:
        state.first_ms = state.last_ms = at_ms
        state.first_day_cents = cents
        days.append(day)
        return
    if at_ms > state.last_ms:
        state.last_ms = at_ms
    if day > days[-1]:  # the common case: a new latest purchase day
        state.repeat_days += 1
        state.gap_sq_days += (day - days[-1]) ** 2
        state.repeat_cents += cents
        days.append(day)
        return
    first_day = day_of(state.first_ms)
    if at_ms < state.first_ms:
        state.first_ms = at_ms
    if day == first_day:
        state.first_day_cents += cents
        return
    if day < first_day:
        # a new first purchase day: the old one becomes a repeat day
        state.repeat_days += 1
        state.gap_sq_days += (first_day - day) ** 2
        state.repeat_cents += state.first_day_cents
        state.first_day_cents = cents
        days.insert(0, day)
        return
    i = bisect.bisect_left(days, day)
    if days[i] == day:  # days[-1] >= day, so i is in range
        state.repeat_cents += cents
        return
    if i == 0:
        raise ValueError(f"purchase day {day} is before the days this state still holds")
    before, after = days[i - 1], days[i]
    state.repeat_days += 1
    state.gap_sq_days += (day - before) ** 2 + (after - day) ** 2 - (after - before) ** 2
    state.repeat_cents += cents
    days.insert(i, day)


def forget_before(state: CustomerState, oldest_ms: int) -> None:
    """Forget purchase days and event ids older than the late horizon (bounded state).

    The latest purchase day before ``oldest_ms``'s day is kept: a late purchase after it needs
    it as its neighbour.
    """
    oldest = oldest_ms // MS_PER_DAY
    days = state.days
    if len(days) > 1 and days[1] < oldest:
        del days[: bisect.bisect_left(days, oldest) - 1]
    ids = state.folded_ids
    if ids:
        stale = [event_id for event_id, day in ids.items() if day < oldest]
        for event_id in stale:
            del ids[event_id]


def prune_buckets(state: CustomerState, now_ms: int, bucket_days: int, keep: int) -> None:
    """Forget purchase buckets older than the longest window: bounded memory per customer."""
    oldest = now_ms // (bucket_days * MS_PER_DAY) - keep
    stale = [b for b in state.buckets if b <= oldest]
    for b in stale:
        del state.buckets[b]
