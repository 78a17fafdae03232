"""Backoff: the schedule, the warning, and which errors it waits out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from redis import exceptions as redis_errors

from streams.adapters.retry import backoff_delays, redis_location, with_backoff


class FakeSleep:
    """Records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(errors: list[BaseException], result: str = "done") -> Callable[[], Awaitable[str]]:
    """An operation that raises each of ``errors`` in turn, then returns ``result``."""
    pending = list(errors)

    async def op() -> str:
        if pending:
            raise pending.pop(0)
        return result

    return op


@pytest.mark.asyncio
async def test_schedule_doubles_up_to_the_cap() -> None:
    sleep = FakeSleep()
    seen: list[tuple[int, float, str]] = []
    op = failing([redis_errors.ConnectionError("refused")] * 9)
    result = await with_backoff(
        op,
        what="test",
        initial=0.1,
        maximum=2.0,
        sleep=sleep,
        on_retry=lambda n, d, e: seen.append((n, d, type(e).__name__)),
    )
    assert result == "done"
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0])
    assert [n for n, _, _ in seen] == list(range(1, 10))
    assert [d for _, d, _ in seen] == sleep.delays
    assert {name for _, _, name in seen} == {"ConnectionError"}


def test_default_schedule_and_bounds() -> None:
    delay = backoff_delays()
    assert [delay(n) for n in (1, 2, 3, 4, 5, 8, 9, 10_000)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 10.0, 10.0, 10.0]
    )
    with pytest.raises(ValueError, match="initial <= maximum"):
        backoff_delays(0, 1)
    with pytest.raises(ValueError, match="initial <= maximum"):
        backoff_delays(2, 1)


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis_errors.TimeoutError("Timeout reading from socket"),
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    ],
)
@pytest.mark.asyncio
async def test_connection_errors_are_waited_out(error: Exception) -> None:
    sleep = FakeSleep()
    assert await with_backoff(failing([error, error]), what="test", sleep=sleep) == "done"
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ResponseError("WRONGTYPE Operation against a key"),
        redis_errors.AuthenticationError("invalid username-password pair"),
        redis_errors.DataError("Invalid input"),
        ValueError("a bug"),
    ],
)
@pytest.mark.asyncio
async def test_other_errors_propagate_at_once(error: Exception) -> None:
    sleep = FakeSleep()
    with pytest.raises(type(error)):
        await with_backoff(failing([error]), what="test", sleep=sleep)
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_cancellation_is_not_swallowed() -> None:
    async def never_returns() -> str:
        await asyncio.Event().wait()
        return "unreachable"

    task = asyncio.create_task(with_backoff(never_returns, what="test"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_warning_says_where_why_when_and_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op = failing([redis_errors.ConnectionError("Connection refused")] * 5)
    with caplog.at_level(logging.INFO, logger="streams.adapters.retry"):
        await with_backoff(
            op, what="profile views", where="redis://:s3cret@127.0.0.1:6390/2", sleep=FakeSleep()
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert warnings[4] == (
        "profile views: Redis unavailable at 127.0.0.1:6390/2 "
        "(ConnectionError: Connection refused); retrying in 1.6 s — "
        "start it with `./dev stack start redis`"
    )
    assert not any("s3cret" in r.getMessage() for r in caplog.records)
    assert any("back after 5 retries" in r.getMessage() for r in caplog.records)


def test_redis_location_hides_credentials() -> None:
    assert redis_location("redis://user:pw@cache.internal:6380/3") == "cache.internal:6380/3"
    assert redis_location("redis://127.0.0.1") == "127.0.0.1:6379"
    assert redis_location("rediss://[::1]:7000/0") == "[::1]:7000/0"
    assert redis_location("unix:///run/redis.sock?db=1") == "/run/redis.sock"
