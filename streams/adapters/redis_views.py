"""Customer views in Redis: what marketing tools and the HTTP API read.

Every key starts with ``Settings.redis_prefix`` (``P`` below, e.g. ``rfm:``).

``P profile:<customer_id>`` — hash, the customer's current profile
    Flat string fields (Redis hashes are flat); an unknown value is the empty string, so every
    profile has the same fields. Times are ISO-8601 UTC with milliseconds
    (``2024-06-26T06:00:00.000Z``); numbers are decimal text; booleans are ``1`` / ``0``.
    Values that depend on "now" (days since the last purchase, …) are as of ``updated_at``.

    ============================  ======================================================
    customer_id                   the customer
    at_ms                         event time of this profile, epoch ms (ordering guard)
    updated_at                    the same time, ISO-8601
    model_version                 scoring / churn model version
    recency_score                 1-5, 5 best (``frequency_score``, ``monetary_score``)
    rfm_segment                   RFM segment name
    segment_since                 when the customer entered ``rfm_segment``
    quadrant                      loyalty x profitability quadrant
    quadrant_since                when the customer entered ``quadrant``
    loyal, profitable             the two quadrant axes, 1 / 0
    p_alive                       BG/NBD P(alive), 0..1
    churn_risk                    P(no purchase within the drift horizon), 0..1
    churn_risk_band               low / medium / high
    drift_level                   0 none, 1 watch, 2 warning, 3 critical
    drift_severity                none / watch / warning / critical
    first_purchase_at             first purchase
    last_purchase_at              last purchase
    days_since_last_purchase      days, as of ``updated_at``
    avg_days_between_purchases    the customer's mean gap between purchase days
    gap_std_days                  spread of those gaps
    expected_next_purchase_at     when the next purchase is due
    tenure_days                   days since the first purchase
    purchase_count                lifetime distinct orders
    repeat_days                   distinct repeat purchase days (BG/NBD x)
    frequency_window              orders in the scoring window
    monetary_window_cents         spend in the scoring window, net of refunds
    mean_order_value_cents        lifetime mean order value
    long_frequency                orders in the long window
    long_monetary_cents           spend in the long window
    engagement                    recent interactions (empty when not tracked)
    last_interaction_at           last interaction
    ============================  ======================================================

``P audience:rfm_segment:<name>``, ``P audience:quadrant:<name>`` — sets of customer ids
    A customer is in exactly one set per dimension (none while unclassified).
``P audiences`` — set of ``<dimension>:<name>``: every audience ever used, for counts.
``P history:<customer_id>`` — list, newest first, of the customer's recent segment changes
    and churn alerts (their JSON as published), capped (50 by default).
``P history:ids:<customer_id>`` — sorted set of the ids in that list, for de-duplication.

Writes go through one Lua script, so a customer's hash, audience moves and history change
together (atomically) and counts never double-count. A script run takes a chunk of up to
``APPLY_CHUNK`` (200) updates, so readers wait at most ~10 ms (about 50 µs of server time per
update); a batch is one pipeline of such runs (one round trip), not one MULTI/EXEC:
per-customer atomicity is all readers need, and a transaction would stall every reader for
the whole batch.
The script keeps the profile with the newest event time: an update older than the stored one
changes nothing, and applying the same update again leaves the same contents, so a replayed
or redelivered batch is harmless. With equal event times the later write wins. The script
builds audience keys from the prefix, so it needs a single Redis (not Redis Cluster).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Final, get_args

import orjson
from redis.asyncio import Redis

from streams.domain.events import Dimension, Profile
from streams.domain.rules import SEVERITIES

log = logging.getLogger(__name__)

DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)
DEFAULT_HISTORY_CAP: Final = 50
_EPOCH_DATE: Final = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """One customer's new profile for the views, with what it moved from and what to log.

    ``previous_*`` is what the stream believes the customer left (the stored profile is
    consulted too); ``*_since_ms`` is when the customer entered the current segment /
    quadrant; ``history`` holds ``(id, json)`` of segment changes and churn alerts to append.
    """

    profile: Profile
    previous_segment: str | None = None
    previous_quadrant: str | None = None
    segment_since_ms: int | None = None
    quadrant_since_ms: int | None = None
    history: tuple[tuple[str, str | bytes], ...] = ()
    history_checked: bool = field(default=False, compare=False, repr=False)
    """True when the history entries are this process's own JSON (the import keeps the
    processor's outputs): they are not parsed again (a tenth of an import's write phase)."""

    def __post_init__(self) -> None:
        # a bad entry would break every later read of the history, so refuse it here
        if self.history_checked:
            return
        for entry_id, entry in self.history:
            if not entry_id:
                raise ValueError("history entry ids must not be empty")
            try:
                parsed = orjson.loads(entry)
            except orjson.JSONDecodeError as error:
                raise ValueError(f"history entry {entry_id!r} is not valid JSON: {error}") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"history entry {entry_id!r} is not a JSON object")


class ViewKeys:
    """Names of the view keys under a prefix: one place spells each name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.audience_index = f"{prefix}audiences"

    def profile(self, customer_id: str) -> str:
        return f"{self.prefix}profile:{customer_id}"

    def history(self, customer_id: str) -> str:
        return f"{self.prefix}history:{customer_id}"

    def history_ids(self, customer_id: str) -> str:
        return f"{self.prefix}history:ids:{customer_id}"

    def audience(self, dimension: str, name: str) -> str:
        # the Lua script spells the same name: P .. 'audience:' .. dim .. ':' .. name
        return f"{self.prefix}audience:{dimension}:{name}"


def iso_ms(ms: int | None) -> str:
    """Epoch milliseconds as ISO-8601 UTC (``…T06:00:00.000Z``); None as the empty string.

    Written for every timestamp of every profile update (seven per customer, a million
    customers in an import), so everything up to the minute is cached and the rest is plain
    arithmetic (``datetime.isoformat`` was a tenth of a view write's CPU); equal to
    ``isoformat(timespec="milliseconds")`` for every instant.
    """
    if ms is None:
        return ""
    minute, rest = divmod(ms, 60_000)
    second, milli = divmod(rest, 1000)
    return f"{_iso_minute(minute)}{second:02d}.{milli:03d}Z"


@lru_cache(maxsize=1 << 16)
def _iso_minute(minute: int) -> str:
    """``YYYY-MM-DDTHH:MM:`` of an epoch minute (45 days of distinct minutes fit)."""
    day, of_day = divmod(minute, 1440)
    hour, minute_of_hour = divmod(of_day, 60)
    return f"{(_EPOCH_DATE + timedelta(days=day)).isoformat()}T{hour:02d}:{minute_of_hour:02d}:"


def drift_severity(level: int) -> str:
    """The name of a drift level: 0 is "none", then watch / warning / critical."""
    return "none" if level <= 0 else SEVERITIES[min(level, len(SEVERITIES)) - 1]


def profile_fields(update: ProfileUpdate) -> dict[str, str]:
    """The ``profile:<id>`` hash for an update: the view's contract (see module docstring)."""
    flat = profile_field_list(update)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def profile_field_list(update: ProfileUpdate) -> list[str]:
    """:func:`profile_fields` as ``[field, value, …]``, the arguments of ``HSET``.

    Built for every customer a view write touches (a million in an import), so each field is
    converted by its declared type instead of one generic conversion per value (None empty,
    bools 1/0, floats by ``repr``, the rest by ``str``); a unit test holds the two equal.
    """
    p = update.profile
    scores = p.scores
    return [
        "customer_id", p.customer_id,
        "at_ms", str(p.at_ms),
        "updated_at", iso_ms(p.at_ms),
        "model_version", p.model_version,
        "recency_score", "" if scores is None else str(scores[0]),
        "frequency_score", "" if scores is None else str(scores[1]),
        "monetary_score", "" if scores is None else str(scores[2]),
        "rfm_segment", p.rfm_segment or "",
        "segment_since", iso_ms(update.segment_since_ms),
        "quadrant", p.quadrant or "",
        "quadrant_since", iso_ms(update.quadrant_since_ms),
        "loyal", "1" if p.loyal else "0",
        "profitable", "1" if p.profitable else "0",
        "p_alive", _number(p.p_alive),
        "churn_risk", _number(p.churn_risk),
        "churn_risk_band", p.churn_risk_band or "",
        "drift_level", str(p.drift_level),
        "drift_severity", drift_severity(p.drift_level),
        "first_purchase_at", iso_ms(p.first_purchase_ms),
        "last_purchase_at", iso_ms(p.last_purchase_ms),
        "days_since_last_purchase", _number(p.days_since_last_purchase),
        "avg_days_between_purchases", _number(p.avg_days_between_purchases),
        "gap_std_days", _number(p.gap_std_days),
        "expected_next_purchase_at", iso_ms(p.expected_next_purchase_ms),
        "tenure_days", _number(p.tenure_days),
        "purchase_count", str(p.purchase_count),
        "repeat_days", str(p.repeat_days),
        "frequency_window", str(p.frequency_window),
        "monetary_window_cents", str(p.monetary_window_cents),
        "mean_order_value_cents", _number(p.mean_order_value_cents),
        "long_frequency", str(p.long_frequency),
        "long_monetary_cents", str(p.long_monetary_cents),
        "engagement", _number(p.engagement),
        "last_interaction_at", iso_ms(p.last_interaction_ms),
    ]  # fmt: skip


def _number(value: float | None) -> str:
    """An optional int or float: empty when unknown, else ``repr`` (``str`` for ints)."""
    return "" if value is None else repr(value)


APPLY_CHUNK: Final = 200
"""Updates per script run: Redis runs ~50 µs per update, so a chunk holds readers ~10 ms."""

_LOAD_MANY_LUA: Final = """
-- KEYS per customer: profile hash, history list, history ids; then the audience index.
-- ARGV[1]: history cap; ARGV[2]: key prefix; ARGV[3]: a JSON array with, per customer,
--   [customer id, [field, value, ...], history entries, [seq, entry id, ...],
--    new segment, new quadrant, previous segment, previous quadrant ('' = none), skip];
-- ARGV[4...]: the history entries themselves, customer after customer, oldest first.
-- The entries (~800 bytes of JSON each) travel as plain arguments: inside the JSON array
-- they were strings in a string, and decoding them was half of the script's CPU.
-- A customer with a stored profile or history, or with skip = 1 (twice in the batch), is
-- left alone and its position returned: the caller applies those with the apply script.
-- One JSON argument and one reply for a whole batch: redis-py packs every argument and
-- reads every reply in Python (~70 arguments per profile, ~75 µs per reply). Each audience
-- gets one SREM / SADD for the whole batch.
local cap, prefix = tonumber(ARGV[1]), ARGV[2]
local rows = cjson.decode(ARGV[3])
local index = KEYS[#KEYS]
local dims = {'rfm_segment', 'quadrant'}
local leave, join, left = {}, {}, {}
local next_entry = 4
local function add(sets, name, member)
  local members = sets[name]
  if not members then
    members = {}
    sets[name] = members
  end
  members[#members + 1] = member
end
for i, row in ipairs(rows) do
  local profile, history, ids = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local first, count = next_entry, row[3]
  next_entry = next_entry + count
  if row[9] == 1 or redis.call('EXISTS', profile, ids) > 0 then
    left[#left + 1] = i
  else
    redis.call('HSET', profile, unpack(row[2]))
    if count > 0 then
      redis.call('LPUSH', history, unpack(ARGV, first, first + count - 1))
      redis.call('ZADD', ids, unpack(row[4]))
      if count > cap then
        redis.call('LTRIM', history, 0, cap - 1)
        redis.call('ZREMRANGEBYRANK', ids, 0, -(cap + 1))
      end
    end
    for d = 1, 2 do
      local new, old = row[4 + d], row[6 + d]
      if old ~= '' and old ~= new then
        add(leave, dims[d] .. ':' .. old, row[1])
      end
      if new ~= '' then
        add(join, dims[d] .. ':' .. new, row[1])
      end
    end
  end
end
for name, members in pairs(leave) do
  redis.call('SREM', prefix .. 'audience:' .. name, unpack(members))
end
for name, members in pairs(join) do
  redis.call('SADD', prefix .. 'audience:' .. name, unpack(members))
  redis.call('SADD', index, name)
end
return left
"""

# Updates in chunks: one JSON argument and one reply per chunk, because redis-py packs every
# argument (~70 per profile) and reads every reply (~75 µs of CPU each) in Python.
_APPLY_LUA: Final = """
-- KEYS per update: profile hash, history list, history ids, audience index.
-- ARGV[1]: a JSON array with, per update, [prefix, customer id, at_ms, history cap,
--   new segment, new quadrant, previous segment, previous quadrant ('' = none),
--   [field, value, ...], then (id, json) history pairs].
-- Returns per update 1 when applied, 0 when the stored profile is newer (nothing changed).
local function apply(profile, history, ids, index, a)
  local prefix, cid = a[1], a[2]
  local at, cap = tonumber(a[3]), tonumber(a[4])
  local stored = redis.call('HMGET', profile, 'at_ms', 'rfm_segment', 'quadrant')
  if stored[1] and tonumber(stored[1]) > at then
    return 0
  end
  local dims = {'rfm_segment', 'quadrant'}
  for d = 1, 2 do
    local new = a[4 + d]
    local olds = {stored[1 + d], a[6 + d]}
    for o = 1, 2 do
      local old = olds[o]
      if old and old ~= '' and old ~= new then
        redis.call('SREM', prefix .. 'audience:' .. dims[d] .. ':' .. old, cid)
      end
    end
    if new ~= '' then
      redis.call('SADD', prefix .. 'audience:' .. dims[d] .. ':' .. new, cid)
      redis.call('SADD', index, dims[d] .. ':' .. new)
    end
  end
  redis.call('DEL', profile)
  redis.call('HSET', profile, unpack(a[9]))
  local pushed = 0
  for i = 10, #a - 1, 2 do
    if not redis.call('ZSCORE', ids, a[i]) then
      local top = redis.call('ZREVRANGE', ids, 0, 0, 'WITHSCORES')
      local seq = 1
      if top[2] then seq = tonumber(top[2]) + 1 end
      redis.call('ZADD', ids, seq, a[i])
      redis.call('LPUSH', history, a[i + 1])
      pushed = pushed + 1
    end
  end
  if pushed > 0 then
    redis.call('LTRIM', history, 0, cap - 1)
    redis.call('ZREMRANGEBYRANK', ids, 0, -(cap + 1))
  end
  return 1
end
local updates = cjson.decode(ARGV[1])
local applied = {}
for i, a in ipairs(updates) do
  applied[i] = apply(KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i], a)
end
return applied
"""


class ProfileViews:
    """Profiles, audiences and recent history in Redis, written per batch, read by the API.

    Works with clients built with or without ``decode_responses``.
    """

    def __init__(
        self, client: Redis, prefix: str, *, history_cap: int = DEFAULT_HISTORY_CAP
    ) -> None:
        if history_cap < 1:
            raise ValueError(f"history_cap must be at least 1, got {history_cap}")
        self._client = client
        self._history_cap = history_cap
        self.keys = ViewKeys(prefix)
        self._apply = client.register_script(_APPLY_LUA)
        self._load_many = client.register_script(_LOAD_MANY_LUA)

    async def apply(self, updates: Sequence[ProfileUpdate]) -> None:
        """Write a batch of updates in one pipeline; idempotent, older updates are ignored.

        Updates for the same customer are applied in the given order. Safe to retry whole
        (e.g. under ``with_backoff``) after a lost reply.
        """
        if not updates:
            return
        keys = self.keys
        chunks: list[tuple[list[str], list[list[Any]]]] = []
        for start in range(0, len(updates), APPLY_CHUNK):
            chunk_keys: list[str] = []
            rows: list[list[Any]] = []
            for update in updates[start : start + APPLY_CHUNK]:
                p = update.profile
                row: list[Any] = [
                    keys.prefix,
                    p.customer_id,
                    p.at_ms,
                    self._history_cap,
                    p.rfm_segment or "",
                    p.quadrant or "",
                    update.previous_segment or "",
                    update.previous_quadrant or "",
                    profile_field_list(update),
                ]
                for entry_id, entry in update.history:
                    row += (entry_id, entry if isinstance(entry, str) else entry.decode())
                rows.append(row)
                chunk_keys += (
                    keys.profile(p.customer_id),
                    keys.history(p.customer_id),
                    keys.history_ids(p.customer_id),
                    keys.audience_index,
                )
            chunks.append((chunk_keys, rows))
        async with self._client.pipeline(transaction=False) as pipe:
            for chunk_keys, rows in chunks:
                await self._apply(keys=chunk_keys, args=[orjson.dumps(rows)], client=pipe)
            replies = await pipe.execute()
        applied = [result for reply in replies for result in reply]
        stale = sum(1 for result in applied if int(result) == 0)
        if stale:
            log.debug("ignored %d profile updates older than the stored profiles", stale)

    async def load(self, updates: Sequence[ProfileUpdate]) -> None:
        """Write a batch of whole profiles for a bulk load (``rfm-stream import``).

        Leaves Redis as ``apply`` would, with about half of Redis's CPU and in one round trip:
        a customer with no stored profile and no history is written by one script run for
        the whole batch, each audience with one ``SADD`` for the batch, instead of one run of
        the apply script (~200 µs of the single-threaded server, which bounds an import of a
        million customers) per customer. Customers stored already (an import run again after
        a crash) and customers twice in the batch are left to ``apply``, so retrying a batch
        whole stays safe. Every row is built before the first await, so a caller that keeps
        two batches in flight builds one while Redis writes the other. Not for use beside
        another writer of the same customers (the import refuses to run while workers
        consume).
        """
        if not updates:
            return
        keys, cap = self.keys, self._history_cap
        seen = Counter(update.profile.customer_id for update in updates)
        row_keys: list[str] = []
        rows: list[list[Any]] = []
        texts: list[str | bytes] = []
        for update in updates:
            p = update.profile
            cid = p.customer_id
            entries: dict[str, str | bytes] = {}
            for entry_id, entry in update.history:  # the first of a repeated id counts
                entries.setdefault(entry_id, entry)
            scored: list[int | str] = [
                x for seq, i in enumerate(entries, start=1) for x in (seq, i)
            ]
            row_keys += (keys.profile(cid), keys.history(cid), keys.history_ids(cid))
            rows.append(
                [
                    cid,
                    profile_field_list(update),
                    len(entries),
                    scored,
                    p.rfm_segment or "",
                    p.quadrant or "",
                    update.previous_segment or "",
                    update.previous_quadrant or "",
                    1 if seen[cid] > 1 else 0,
                ]
            )
            texts += entries.values()
        row_keys.append(keys.audience_index)
        left: list[Any] = await self._load_many(
            keys=row_keys, args=[cap, keys.prefix, orjson.dumps(rows), *texts]
        )
        if left:  # positions are 1-based, in batch order: apply keeps that order
            await self.apply([updates[int(i) - 1] for i in left])

    async def profile(self, customer_id: str) -> dict[str, str] | None:
        """The customer's profile hash, or None if the customer has none."""
        raw: dict[Any, Any] = await self._client.hgetall(self.keys.profile(customer_id))
        if not raw:
            return None
        return {_decoded(k): _decoded(v) for k, v in raw.items()}

    async def history(self, customer_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The customer's latest segment changes and churn alerts, newest first."""
        if limit <= 0:
            return []
        entries: list[Any] = await self._client.lrange(self.keys.history(customer_id), 0, limit - 1)
        return [orjson.loads(entry) for entry in entries]

    async def segment_counts(self) -> dict[str, dict[str, int]]:
        """Customers per audience: ``{"rfm_segment": {name: n}, "quadrant": {name: n}}``.

        Audiences that emptied stay listed with 0.
        """
        counts: dict[str, dict[str, int]] = {dimension: {} for dimension in DIMENSIONS}
        members: set[Any] = await self._client.smembers(self.keys.audience_index)
        audiences = sorted(_decoded(member).split(":", 1) for member in members)
        audiences = [a for a in audiences if len(a) == 2 and a[0] in counts]
        if not audiences:
            return counts
        async with self._client.pipeline(transaction=False) as pipe:
            for dimension, name in audiences:
                pipe.scard(self.keys.audience(dimension, name))
            sizes = await pipe.execute()
        for (dimension, name), size in zip(audiences, sizes, strict=True):
            counts[dimension][name] = int(size)
        return counts

    async def audience(self, dimension: str, name: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` customer ids of an audience, sorted (which ones: arbitrary)."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}; expected one of {DIMENSIONS}")
        if limit <= 0:
            return []
        found: set[str] = set()  # SSCAN may return a member twice
        async for member in self._client.sscan_iter(
            self.keys.audience(dimension, name), count=min(limit, 1000)
        ):
            found.add(_decoded(member))
            if len(found) >= limit:
                break
        return sorted(found)


def _decoded(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def profile_update(raw: bytes) -> ProfileUpdate:
    """Read a record of the profiles topic (see ``Processor._profiles``)."""
    return profile_update_of(orjson.loads(raw))


def profile_update_of(data: dict[str, Any], *, own_history: bool = False) -> ProfileUpdate:
    """A profiles-topic record already parsed, or as the processor built it (with the
    ``Profile`` itself: the import keeps them in memory); takes it over.

    ``own_history``: the history entries are JSON this process's processor wrote, so they are
    not checked again (a record read from the topic always is)."""
    fields = data["profile"]
    if isinstance(fields, Profile):
        profile = fields
    else:
        if fields.get("scores") is not None:
            fields["scores"] = tuple(fields["scores"])
        profile = Profile(**fields)
    return ProfileUpdate(
        profile=profile,
        segment_since_ms=data.get("segment_since_ms"),
        quadrant_since_ms=data.get("quadrant_since_ms"),
        history=tuple((i, j) for i, j in data.get("history", [])),
        history_checked=own_history,
    )
