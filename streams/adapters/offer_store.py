"""Offer decisions in Redis: idempotency by decision id, and the history that caps count.

Keys (``P`` is ``Settings.redis_prefix``):

``P offer:decision:<decision id>`` — string, the decision as JSON, expiring after
    ``decision_ttl_ms`` (400 days by default): the one decision ever made for a trigger.
``P offers:<customer_id>`` — sorted set, member = decision id, score = event time (ms) of
    every recorded decision (offers and holdouts); entries older than ``keep_ms`` before the
    customer's newest one are dropped, and the key expires ``decision_ttl_ms`` after the
    last record.

**Guarantee.** The offers agent handles a trigger as ``existing → history → decide → record
→ send``. ``record`` is one Lua script: it stores the decision only if its id is new and, in
the same step, adds it to the customer's history; if the id already exists it changes nothing
and returns the stored decision. Decision ids derive from trigger ids, so whichever step a
crash interrupts, the redelivered trigger ends with the same decision id and the same decision:
before ``record`` nothing was stored and the decision is made afresh; after it, ``existing``
(or ``record`` itself) returns what was stored. The agent sends what ``record`` returned, and
consumers drop repeated ids, so nothing is offered twice and nothing is lost. The agent takes
these steps for a whole batch of triggers at once (``decide_batch``: one round trip each),
deciding the batch's triggers in order against the history as the earlier ones left it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar, get_args

import orjson
from redis.asyncio import Redis

from streams.domain.facts import MS_PER_DAY
from streams.domain.offers import Decision, OfferDecision, OfferHistory, Trigger, decide
from streams.domain.rules import OfferRules

DEFAULT_DECISION_TTL_MS: Final = 400 * MS_PER_DAY
DECISIONS: Final[frozenset[str]] = frozenset(get_args(Decision))

V = TypeVar("V")


class OfferKeys:
    """Names of the offer keys under a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def decision(self, decision_id: str) -> str:
        return f"{self.prefix}offer:decision:{decision_id}"

    def offers(self, customer_id: str) -> str:
        return f"{self.prefix}offers:{customer_id}"


def keep_ms_for(rules: OfferRules, *, slack_days: float = 30) -> int:
    """How much offer history decisions need: the longer of cooldown and cap window.

    ``slack_days`` covers triggers that arrive out of event-time order (segment changes and
    churn alerts come from different topics).
    """
    return math.ceil((max(rules.cooldown_days, rules.cap_days) + slack_days) * MS_PER_DAY)


def decision_to_json(decision: OfferDecision) -> bytes:
    """The stored form of a decision: a JSON object of its fields."""
    return orjson.dumps(decision)


def decision_from_json(data: bytes | str) -> OfferDecision:
    """Read a stored decision back; unknown fields are ignored, wrong types refused."""
    raw = orjson.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("a stored offer decision must be a JSON object")
    decision = _field(raw, "decision", str)
    if decision not in DECISIONS:
        raise ValueError(f"unknown offer decision {decision!r}")
    return OfferDecision(
        id=_field(raw, "id", str),
        customer_id=_field(raw, "customer_id", str),
        trigger_id=_field(raw, "trigger_id", str),
        at_ms=_field(raw, "at_ms", int),
        decision=decision,  # type: ignore[arg-type]  # checked against DECISIONS above
        offer_code=_optional(raw, "offer_code", str),
        channel=_optional(raw, "channel", str),
        reason=_field(raw, "reason", str),
        quadrant=_field(raw, "quadrant", str),
        expires_at_ms=_optional(raw, "expires_at_ms", int),
    )


def _field(raw: dict[str, Any], name: str, kind: type[V]) -> V:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"stored offer decision: {name} must be {kind.__name__}, got {value!r}")
    return value


def _optional(raw: dict[str, Any], name: str, kind: type[V]) -> V | None:
    return None if raw.get(name) is None else _field(raw, name, kind)


# KEYS: decision key, the customer's offers sorted set.
# ARGV: decision JSON, TTL (ms), records ('1'/'0'), at_ms, keep_ms, decision id.
# Returns the stored JSON when the id already existed, else nil (and the decision is stored).
_RECORD_LUA: Final = """
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local floor = tonumber(top[2]) - tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', floor))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return false
"""


class OfferStore:
    """Frequency-cap history and one-decision-per-trigger idempotency for the offers agent.

    ``keep_ms``: offer history older than this before the customer's newest decision is
    dropped (see :func:`keep_ms_for`). Works with or without ``decode_responses``.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        keep_ms: int,
        decision_ttl_ms: int = DEFAULT_DECISION_TTL_MS,
    ) -> None:
        if keep_ms <= 0 or decision_ttl_ms <= 0:
            raise ValueError("keep_ms and decision_ttl_ms must be positive")
        self._client = client
        self.keys = OfferKeys(prefix)
        self._keep_ms = keep_ms
        self._ttl_ms = decision_ttl_ms
        self._record = client.register_script(_RECORD_LUA)

    async def existing(self, decision_id: str) -> OfferDecision | None:
        """The decision already recorded under this id, if any."""
        stored: bytes | str | None = await self._client.get(self.keys.decision(decision_id))
        return None if stored is None else decision_from_json(stored)

    async def history(self, customer_id: str) -> OfferHistory:
        """Event times of the customer's recorded offers and holdouts, oldest first."""
        entries: list[Any] = await self._client.zrange(
            self.keys.offers(customer_id), 0, -1, withscores=True
        )
        return OfferHistory(tuple(sorted(int(score) for _, score in entries)))

    async def record(self, decision: OfferDecision) -> OfferDecision:
        """Store the decision if its id is new (and count it if it records); atomic.

        Returns the decision that is now stored: ``decision`` itself, or the one recorded
        earlier under the same id. Send the returned one.
        """
        keys, args = self._record_call(decision)
        stored: bytes | str | None = await self._record(keys=keys, args=args)
        return decision if stored is None else decision_from_json(stored)

    def _record_call(self, decision: OfferDecision) -> tuple[list[str], list[bytes | str | int]]:
        """The record script's keys and arguments for a decision."""
        return (
            [self.keys.decision(decision.id), self.keys.offers(decision.customer_id)],
            [
                decision_to_json(decision),
                self._ttl_ms,
                "1" if decision.records else "0",
                decision.at_ms,
                self._keep_ms,
                decision.id,
            ],
        )

    # --- a batch of triggers in three round trips (the offers agent's path) ---------------

    @property
    def keep_ms(self) -> int:
        return self._keep_ms

    async def existing_many(self, decision_ids: Sequence[str]) -> list[OfferDecision | None]:
        """``existing`` of each id, in one round trip."""
        if not decision_ids:
            return []
        stored: list[Any] = await self._client.mget(
            [self.keys.decision(decision_id) for decision_id in decision_ids]
        )
        return [None if raw is None else decision_from_json(raw) for raw in stored]

    async def histories(self, customer_ids: Iterable[str]) -> dict[str, OfferHistory]:
        """``history`` of each customer, in one round trip."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for customer_id in ids:
                pipe.zrange(self.keys.offers(customer_id), 0, -1, withscores=True)
            found: list[Any] = await pipe.execute()
        return {
            customer_id: OfferHistory(tuple(sorted(int(score) for _, score in entries)))
            for customer_id, entries in zip(ids, found, strict=True)
        }

    async def record_many(self, decisions: Sequence[OfferDecision]) -> list[OfferDecision]:
        """``record`` of each decision, in order, in one round trip (each one atomic)."""
        if not decisions:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for decision in decisions:
                keys, args = self._record_call(decision)
                await self._record(keys=keys, args=args, client=pipe)
            stored: list[Any] = await pipe.execute()
        return [
            decision if raw is None else decision_from_json(raw)
            for decision, raw in zip(decisions, stored, strict=True)
        ]

    async def decide_batch(
        self, triggers: Sequence[Trigger], rules: OfferRules
    ) -> list[OfferDecision | None]:
        """The stored decision of each trigger, as handling them one by one would give.

        existing → history → decide → record, each step once for the whole batch: triggers
        recorded earlier keep their decision; the others are decided in order, each seeing the
        decisions made before it in the batch (the history is updated and trimmed as the
        record script does); a trigger twice in the batch gets one decision. Safe to retry
        whole: a retry finds what the first attempt recorded.
        """
        ids = [f"offer:{t.id}" for t in triggers]
        found = dict(zip(ids, await self.existing_many(ids), strict=True))
        todo = [t for t, i in zip(triggers, ids, strict=True) if found[i] is None]
        made: dict[str, OfferDecision | None] = {}
        if todo:
            histories = await self.histories(t.customer_id for t in todo)
            for trigger in todo:
                decision_id = f"offer:{trigger.id}"
                if decision_id in made:
                    continue
                history = histories[trigger.customer_id]
                decision = decide(trigger, history, rules)
                made[decision_id] = decision
                if decision is not None and decision.records:
                    histories[trigger.customer_id] = recorded_into(
                        history, decision.at_ms, self._keep_ms
                    )
            to_record = [d for d in made.values() if d is not None]
            for decision in await self.record_many(to_record):
                made[decision.id] = decision
        return [found[i] if found[i] is not None else made[i] for i in ids]


def recorded_into(history: OfferHistory, at_ms: int, keep_ms: int) -> OfferHistory:
    """The history after the record script adds ``at_ms``: entries ≤ newest − keep_ms go."""
    times = sorted((*history.recorded_ms, at_ms))
    floor = times[-1] - keep_ms
    return OfferHistory(tuple(t for t in times if t > floor))
