"""Redis adapters: profile views and audiences, offer history and idempotency, retries.

The domain core stays pure; the stream's reads and writes of customer data go through these
modules (the web side keeps its own small feed keys, see :mod:`streams.web.feed`). Every write is
idempotent, so the stream may retry it (:func:`with_backoff`) after a lost reply or a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from streams.adapters.offer_store import OfferStore, keep_ms_for
from streams.adapters.redis_views import ProfileUpdate, ProfileViews
from streams.adapters.retry import redis_location, with_backoff
from streams.security import redis_options

if TYPE_CHECKING:
    from streams.config import Settings

__all__ = [
    "OfferStore",
    "ProfileUpdate",
    "ProfileViews",
    "connect",
    "keep_ms_for",
    "redis_location",
    "with_backoff",
]


def connect(target: Settings | str, *, timeout_s: float = 5.0, max_connections: int = 32) -> Redis:
    """An asyncio Redis client for the adapters.

    ``target`` is the settings (URL, password and TLS from ``RFM_REDIS_*``, see
    :func:`streams.security.redis_options`) or a bare URL (no more than the URL says).

    redis-py itself retries only twice, briefly, to ride out a single dropped connection;
    longer outages surface quickly to :func:`with_backoff`, which waits and says so in the
    log. The socket timeout turns a hung server into a retryable error instead of a stall.
    """
    url = target if isinstance(target, str) else target.redis_url
    security: dict[str, Any] = {} if isinstance(target, str) else redis_options(target)
    return Redis.from_url(
        url,
        **security,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries=2),
    )
