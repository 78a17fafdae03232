"""Offer-outcome aggregates in Redis: what lift is computed from, counted once per outcome id.

Keys (``P`` is ``Settings.redis_prefix``):

``P lift:counts`` — hash; field = JSON ``[offer_code, quadrant, arm, stat]``, value = the sum
    over closed outcomes of that group: ``n`` (outcomes), ``converted``, ``net_cents``,
    ``days_ms`` (time to the first purchase, converted ones) as integers, ``net_sq`` (squared
    net cents, for the revenue interval) as a float.
``P lift:seen:<sha256 of the outcome id>`` — string, set when an outcome was counted; expires
    after ``seen_ttl_ms`` (400 days by default, far beyond any redelivery). Hashed because an
    outcome id names its customer: no lift key holds a customer id, so erasure has nothing
    to delete here and the counters stay anonymous aggregates.

**Guarantee.** Each outcome is one Lua script: ``SET seen NX`` and, only if it was new, the
``HINCRBY``\\s, atomically. A redelivered outcome (a worker restarted before committing, or the
topic holding an id twice after a crash) finds its ``seen`` key and changes nothing, so the
counters are exactly the fold of the distinct outcome ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from streams.domain.facts import MS_PER_DAY
from streams.domain.lift import ArmCounts, Key

DEFAULT_SEEN_TTL_MS: Final = 400 * MS_PER_DAY
STATS: Final = ("n", "converted", "net_cents", "days_ms", "net_sq")

# KEYS: seen key, counts hash. ARGV: ttl ms, then 5 fields, then their 5 increments
# (the last one, net_sq, a float). Returns 1 when counted, 0 when the id was seen before.
_COUNT_LUA: Final = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
for i = 2, 5 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 5])
end
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[6], ARGV[11])
return 1
"""


def _field(key: Key, stat: str) -> str:
    return orjson.dumps([*key, stat]).decode()


class OutcomeStore:
    """Lift aggregates for the worker's ``outcomes`` agent, the API and the CLI."""

    def __init__(self, client: Redis, prefix: str, *, seen_ttl_ms: int = DEFAULT_SEEN_TTL_MS):
        if seen_ttl_ms <= 0:
            raise ValueError("seen_ttl_ms must be positive")
        self._client = client
        self.prefix = prefix
        self.counts_key = f"{prefix}lift:counts"
        self._ttl_ms = seen_ttl_ms
        self._count = client.register_script(_COUNT_LUA)

    def seen_key(self, outcome_id: str) -> str:
        digest = hashlib.sha256(outcome_id.encode()).hexdigest()
        return f"{self.prefix}lift:seen:{digest}"

    async def add(self, outcomes: Sequence[dict[str, Any]]) -> int:
        """Count each outcome (parsed ``offer-outcomes`` JSON) once; returns how many were new."""
        if not outcomes:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for o in outcomes:
            key: Key = (str(o["offer_code"]), str(o["quadrant"]), str(o["arm"]))
            net = int(o["net_revenue_cents"])
            days = o.get("days_to_first_purchase")
            days_ms = round(float(days) * MS_PER_DAY) if days is not None else 0
            values = [1, 1 if o["converted"] else 0, net, days_ms, float(net * net)]
            await self._count(
                keys=[self.seen_key(str(o["id"])), self.counts_key],
                args=[self._ttl_ms, *(_field(key, s) for s in STATS), *values],
                client=pipe,
            )
        results: list[Any] = await pipe.execute()
        return sum(int(r) for r in results)

    async def aggregates(self) -> dict[Key, ArmCounts]:
        """Every group's counts, for :func:`streams.domain.lift.lift_table`."""
        raw: dict[Any, Any] = await self._client.hgetall(self.counts_key)
        sums: dict[Key, dict[str, float]] = {}
        for field, value in raw.items():
            code, quadrant, arm, stat = orjson.loads(field)
            sums.setdefault((code, quadrant, arm), {})[stat] = float(value)
        return {
            key: ArmCounts(
                n=int(s.get("n", 0)),
                converted=int(s.get("converted", 0)),
                net_cents=int(s.get("net_cents", 0)),
                net_sq_cents=int(s.get("net_sq", 0)),
                days_to_first_sum=s.get("days_ms", 0) / MS_PER_DAY,
            )
            for key, s in sums.items()
        }
