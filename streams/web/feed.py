"""The dashboard's live feed and page.

Recent alerts and segment changes live in Redis, segment sizes over time in memory; the page is
served with a Content-Security-Policy that allows exactly its own code.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from streams.adapters.redis_views import DIMENSIONS, iso_ms

ALERTS_CAP: Final = 200
"""Churn alerts kept in ``P recent:alerts`` (and the most ``/api/alerts/recent`` returns)."""
CHANGES_CAP: Final = 1_000
"""Segment changes kept per dimension in ``P recent:changes:<dimension>``, for the flows."""
HISTORY_POINTS: Final = 360
"""Samples of segment sizes kept in memory: 30 minutes at one sample every 5 s."""
_SCRIPT: Final = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE: Final = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def event_ms(record: Mapping[str, Any]) -> int:
    """Event time of an output record in epoch ms (0 when it has none: oldest)."""
    raw = record.get("event_time")
    if not isinstance(raw, str):
        return 0
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def slim_change(change: Mapping[str, Any]) -> dict[str, Any]:
    """What the flows need from a segment change; the profile snapshot stays in Kafka.

    Deterministic in its input, so the same change always gives the same sorted-set member.
    """
    return {
        "id": change.get("id"),
        "customer_id": change.get("customer_id"),
        "event_time": change.get("event_time"),
        "dimension": change.get("dimension"),
        "from": change.get("from_value"),
        "to": change.get("to_value"),
        "cause": change.get("cause"),
    }


def flows(changes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``from → to`` counts, largest first (ties by name); ``from`` is None for newcomers."""
    counted: dict[tuple[str | None, str], int] = {}
    for change in changes:
        to = change.get("to")
        if not isinstance(to, str):
            continue
        source = change.get("from")
        key = (source if isinstance(source, str) else None, to)
        counted[key] = counted.get(key, 0) + 1
    ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1]))
    return [{"from": f, "to": t, "count": n} for (f, t), n in ordered]


def totals(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Customers per dimension: everyone classified is in exactly one audience of each."""
    return {dimension: sum(names.values()) for dimension, names in counts.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- state


class SegmentHistory:
    """The last few hundred samples of segment sizes, in memory, oldest first.

    Memory, not Redis: the series only feeds this worker's dashboard chart, losing it on a
    restart costs a few minutes of curve, and every worker samples the same shared counts.
    """

    def __init__(self, capacity: int = HISTORY_POINTS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._points: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.capacity = capacity

    def add(self, at_ms: int, counts: Mapping[str, Mapping[str, int]]) -> None:
        point: dict[str, Any] = {"at": iso_ms(at_ms), "at_ms": at_ms}
        point.update({dimension: dict(names) for dimension, names in counts.items()})
        self._points.append(point)

    def points(self) -> list[dict[str, Any]]:
        return list(self._points)

    def latest(self) -> dict[str, Any] | None:
        return self._points[-1] if self._points else None


class RecentFeed:
    """Recent churn alerts and segment changes in Redis sorted sets (see the module doc).

    Scored by event time, so "recent" means what happened last, also in a replay of old
    events; trimmed to a fixed size after every write, so the keys never grow.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        alerts_cap: int = ALERTS_CAP,
        changes_cap: int = CHANGES_CAP,
    ) -> None:
        self._client = client
        self.alerts_key = f"{prefix}recent:alerts"
        self.changes_prefix = f"{prefix}recent:changes:"
        self.alerts_cap = alerts_cap
        self.changes_cap = changes_cap

    def changes_key(self, dimension: str) -> str:
        return f"{self.changes_prefix}{dimension}"

    async def record(self, alerts: Sequence[bytes], changes: Sequence[Mapping[str, Any]]) -> None:
        """Add alerts (their JSON as published) and changes; one round trip; idempotent."""
        if not alerts and not changes:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            if alerts:
                pipe.zadd(self.alerts_key, {raw: event_ms(orjson.loads(raw)) for raw in alerts})
                pipe.zremrangebyrank(self.alerts_key, 0, -(self.alerts_cap + 1))
            by_dimension: dict[str, dict[bytes, int]] = {}
            for change in changes:
                dimension = change.get("dimension")
                if dimension in DIMENSIONS:
                    member = orjson.dumps(slim_change(change), option=orjson.OPT_SORT_KEYS)
                    by_dimension.setdefault(str(dimension), {})[member] = event_ms(change)
            for dimension, members in by_dimension.items():
                key = self.changes_key(dimension)
                pipe.zadd(key, members)
                pipe.zremrangebyrank(key, 0, -(self.changes_cap + 1))
            await pipe.execute()

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        """Newest event time first."""
        raw: list[Any] = await self._client.zrevrange(self.alerts_key, 0, limit - 1)
        return [orjson.loads(entry) for entry in raw]

    async def changes(self, dimension: str, limit: int) -> list[dict[str, Any]]:
        raw: list[Any] = await self._client.zrevrange(self.changes_key(dimension), 0, limit - 1)
        return [orjson.loads(entry) for entry in raw]


class Dashboard:
    """The dashboard page and the Content-Security-Policy that allows exactly its code."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.csp = "; ".join(
            [
                "default-src 'none'",
                _csp_sources("script-src", _SCRIPT.findall(html)),
                _csp_sources("style-src", _STYLE.findall(html)),
                "connect-src 'self'",
                "img-src 'self' data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )

    @classmethod
    def load(cls) -> Dashboard:
        page = resources.files("streams.web").joinpath("static", "dashboard.html")
        return cls(page.read_text(encoding="utf-8"))


def _csp_sources(directive: str, inline_blocks: list[str]) -> str:
    """Allow exactly these inline blocks by hash: injected markup could run nothing."""
    if not inline_blocks:
        return f"{directive} 'none'"
    hashes = (hashlib.sha256(block.encode("utf-8")).digest() for block in inline_blocks)
    return directive + "".join(f" 'sha256-{base64.b64encode(h).decode()}'" for h in hashes)
