"""Wait for Redis instead of dropping work: retry connection failures with capped backoff.

The stream must not lose a batch because Redis restarted, so an operation that fails with a
connection-type error is retried forever, at 0.1, 0.2, 0.4 … seconds up to a cap, with one
warning per attempt that says where Redis was expected and how to start it. Anything else
(a script error, a wrong type, bad credentials) is a bug or a configuration mistake, and
retrying would only hide it, so it propagates at once.

Retrying is safe only because every adapter operation is idempotent: a command whose reply
was lost may already have run on the server, and running it again must change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

from redis import exceptions as redis_errors

T = TypeVar("T")

log = logging.getLogger(__name__)

RETRYABLE: Final[tuple[type[BaseException], ...]] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
)
"""Errors that mean "Redis is not there right now": waiting can fix them."""

NOT_RETRYABLE: Final[tuple[type[BaseException], ...]] = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.ExternalAuthProviderError,
)
"""Subclasses of ConnectionError that waiting cannot fix: wrong or missing credentials."""

START_HINT: Final = "start it with `./dev stack start redis`"

OnRetry = Callable[[int, float, BaseException], None]
Sleep = Callable[[float], Awaitable[object]]


def is_retryable(error: BaseException) -> bool:
    """True for connection-type failures, false for everything else (including auth errors)."""
    return isinstance(error, RETRYABLE) and not isinstance(error, NOT_RETRYABLE)


def backoff_delays(initial: float = 0.1, maximum: float = 10.0) -> Callable[[int], float]:
    """The delay before retry ``n`` (1-based): ``initial * 2**(n-1)``, never above ``maximum``."""
    if initial <= 0 or maximum < initial:
        raise ValueError(f"need 0 < initial <= maximum, got initial={initial}, maximum={maximum}")

    def delay(attempt: int) -> float:
        # past the cap the exponent no longer matters; bounding it avoids float overflow
        return min(maximum, initial * 2.0 ** min(attempt - 1, 64))

    return delay


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without user name or password (safe to log)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.lstrip("/")
    return f"{host}:{port}/{db}" if db else f"{host}:{port}"


async def with_backoff(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    initial: float = 0.1,
    maximum: float = 10.0,
    on_retry: OnRetry | None = None,
    where: str | None = None,
    hint: str = START_HINT,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run ``op`` until it succeeds, retrying only connection-type Redis errors, forever.

    ``what`` names the operation in the log; ``where`` is the Redis URL or address (a URL is
    shown without credentials); ``on_retry(attempt, delay_s, error)`` is called before each
    wait (metrics, tests); ``sleep`` is injectable so tests need not wait. Cancellation is
    never swallowed. ``op`` must be idempotent: a failed attempt may have been applied.
    """
    delay_for = backoff_delays(initial, maximum)
    location = "an unknown address" if where is None else _shown(where)
    attempt = 0
    while True:
        try:
            result = await op()
        except Exception as error:
            if not is_retryable(error):
                raise
            attempt += 1
            delay = delay_for(attempt)
            log.warning(
                "%s: Redis unavailable at %s (%s); retrying in %.2g s — %s",
                what,
                location,
                _describe(error),
                delay,
                hint,
            )
            if on_retry is not None:
                on_retry(attempt, delay, error)
            await sleep(delay)
            continue
        if attempt:
            log.info("%s: Redis at %s is back after %d retries", what, location, attempt)
        return result


def _shown(where: str) -> str:
    return redis_location(where) if "://" in where else where


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
