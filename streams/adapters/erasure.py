"""Erasing a customer from Redis: every key the product writes about them, and a marker.

Keys deleted (``P`` is ``Settings.redis_prefix``): ``P profile:<id>``, ``P history:<id>``,
``P history:ids:<id>``, ``P offers:<id>``, every ``P offer:decision:offer:<id>:<seq>``, the
customer's membership of every audience listed in ``P audiences``, and the entries of the
dashboard's ``P recent:alerts`` and ``P recent:changes:<dimension>`` that name them.

``P erased:<marker hash>`` (a string, no expiry; a hash of the salted hash) is set in the
same script: it names no one,
and lets the offers agent refuse a trigger of an erased customer that was still in flight
(and clean up after one it had already decided, see :meth:`RedisEraser.erased_among`).
Erasing is idempotent, so it is safe to repeat after a lost reply or a redelivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio import Redis

from streams.adapters.offer_store import OfferKeys
from streams.adapters.redis_views import DIMENSIONS, ViewKeys
from streams.domain.erasure import marker_hash

# KEYS: profile, history, history ids, offers, audience index, recent alerts, marker,
#       then the recent changes of each dimension.
# ARGV: prefix, customer id.
# Returns the number of keys and members removed.
_ERASE_LUA: Final = """
local prefix, cid = ARGV[1], ARGV[2]
local removed = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
for _, name in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  removed = removed + redis.call('SREM', prefix .. 'audience:' .. name, cid)
end
local function purge(key)
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local ok, record = pcall(cjson.decode, member)
    if ok and type(record) == 'table' and record['customer_id'] == cid then
      removed = removed + redis.call('ZREM', key, member)
    end
  end
end
purge(KEYS[6])
for i = 8, #KEYS do
  purge(KEYS[i])
end
redis.call('SET', KEYS[7], '1')
return removed
"""


class RedisEraser:
    """Deletes an erased customer's keys; tells which customers of a batch are erased."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self.views = ViewKeys(prefix)
        self.offers = OfferKeys(prefix)
        self._erase = client.register_script(_ERASE_LUA)

    def marker(self, hashed: str) -> str:
        """The marker of an erased customer: keyed by a hash of the salted hash, so that no
        key holds the id or the hash the table and the ``customer-erased`` event carry."""
        return f"{self.prefix}erased:{marker_hash(hashed)}"

    def recent_keys(self) -> list[str]:
        """The dashboard feed's keys (spelt as :class:`streams.web.feed.RecentFeed` does)."""
        return [f"{self.prefix}recent:alerts"] + [
            f"{self.prefix}recent:changes:{d}" for d in DIMENSIONS
        ]

    async def erase(self, customer_id: str, hashed: str) -> int:
        """Delete every key and membership of the customer; returns how many went."""
        v, recent = self.views, self.recent_keys()
        removed = int(
            await self._erase(
                keys=[
                    v.profile(customer_id),
                    v.history(customer_id),
                    v.history_ids(customer_id),
                    self.offers.offers(customer_id),
                    v.audience_index,
                    recent[0],
                    self.marker(hashed),
                    *recent[1:],
                ],
                args=[self.prefix, customer_id],
            )
        )
        return removed + await self._erase_decisions(customer_id)

    async def _erase_decisions(self, customer_id: str) -> int:
        """The offer decisions of the customer's triggers (``offer:<id>:<seq>``): a SCAN of the
        keyspace, so an erasure costs time in proportion to the number of keys (erasures are
        rare)."""
        head = self.offers.decision(f"offer:{customer_id}:")
        found: list[Any] = []
        async for key in self._client.scan_iter(match=_glob_escape(head) + "*", count=1000):
            text = key.decode() if isinstance(key, bytes) else key
            if text[len(head) :].isdigit():  # the seq, not another customer's "<id>:x:seq"
                found.append(key)
        if not found:
            return 0
        return int(await self._client.delete(*found))

    async def erased_among(self, hashes: Iterable[str]) -> set[str]:
        """Which of these salted hashes belong to erased customers."""
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        found: list[Any] = []
        # markers are strings: one MGET per chunk is one reply for thousands of customers
        # (an EXISTS each cost ~30 µs of client CPU per reply at an import's scale)
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            found += await self._client.mget([self.marker(hashed) for hashed in chunk])
        return {h for h, value in zip(wanted, found, strict=True) if value is not None}


_LOOKUP_CHUNK: Final = 10_000


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
