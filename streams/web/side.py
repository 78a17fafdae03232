"""The state behind the routes: Redis handles, the feed, metrics, readiness and consumer lag."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import faust
import orjson
from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from streams.adapters import ProfileViews, connect, redis_location, with_backoff
from streams.adapters.outcome_store import OutcomeStore
from streams.adapters.redis_views import DIMENSIONS
from streams.config import Settings
from streams.domain.lift import LiftRow, lift_table
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.erasure import erase_request
from streams.web.auth import authorized, token_text
from streams.web.feed import Dashboard, RecentFeed, SegmentHistory, now_ms
from streams.web.freshness import ReadTimeSource
from streams.web.metrics import CountersSource, Snapshot, WebMetrics

if TYPE_CHECKING:
    from aiohttp.web import Request as HttpRequest

log = logging.getLogger(__name__)


REDIS_TIMEOUT_S: Final = 2.0
"""A probe or a scrape must answer quickly: past this, Redis counts as unavailable."""
WARN_EVERY_S: Final = 30.0
ERASE_TIMEOUT_S: Final = 10.0
"""How long DELETE /api/customers/{id} waits for the broker to take the erasure request."""


class WebSide:
    """The state behind the routes; the hooks the stream calls are its ``observe_*`` methods."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        source: CountersSource,
        *,
        api_token: str | SecretStr | None,
        sample_seconds: float,
        history_points: int,
        redis_client: Redis | None = None,
    ) -> None:
        if sample_seconds <= 0:
            raise ValueError(f"sample_seconds must be positive, got {sample_seconds}")
        self.app = app
        self.settings = settings
        self.token = token_text(api_token)
        self.sample_seconds = sample_seconds
        self.metrics = WebMetrics(source)
        self._read_time = source if isinstance(source, ReadTimeSource) else None
        self.history = SegmentHistory(history_points)
        self.dashboard = Dashboard.load()
        t = settings.topics
        self.consumed_topics = frozenset(
            [
                *t.inputs(),
                t.profiles,
                t.segment_changes,
                t.churn_alerts,
                t.retention_offers,
                t.offer_outcomes,
            ]
        )
        self._client = redis_client
        self._views: ProfileViews | None = None
        self._feed: RecentFeed | None = None
        self._outcomes: OutcomeStore | None = None
        self._warned_at = -WARN_EVERY_S

    # ---- hooks for the stream
    def observe_batch(self, seconds: float, events: int) -> None:
        """Call after each processed batch: wall-clock seconds, and how many input records."""
        self.metrics.observe_batch(seconds, events)

    async def request_erasure(self, customer_id: str) -> tuple[int, int]:
        """Produce the customer's erasure request; (partition, offset) once the broker has it.

        The worker owning the partition erases the customer in order with their events (see
        :mod:`streams.erasure`); this worker only asks.
        """
        request = erase_request(
            self.settings.topics.purchases, self.settings.partitions, customer_id, now_ms()
        )
        sent = await asyncio.wait_for(
            self.app.producer.send_and_wait(
                request.topic,
                request.key,
                request.value,
                request.partition,
                None,
                list(request.headers),
            ),
            ERASE_TIMEOUT_S,
        )
        return request.partition, int(sent.offset)

    def read_time(self, customer_id: str) -> tuple[int, Model, Rules] | None:
        """(now, model, rules) for a profile's time-dependent figures; None without a clock."""
        return None if self._read_time is None else self._read_time.read_time(customer_id)

    # ---- Redis, created inside the worker's event loop on first use
    def redis(self) -> Redis:
        if self._client is None:
            self._client = connect(self.settings, timeout_s=REDIS_TIMEOUT_S)
        return self._client

    @property
    def views(self) -> ProfileViews:
        if self._views is None:
            self._views = ProfileViews(self.redis(), self.settings.redis_prefix)
        return self._views

    @property
    def feed(self) -> RecentFeed:
        if self._feed is None:
            self._feed = RecentFeed(self.redis(), self.settings.redis_prefix)
        return self._feed

    @property
    def outcomes(self) -> OutcomeStore:
        if self._outcomes is None:
            self._outcomes = OutcomeStore(self.redis(), self.settings.redis_prefix)
        return self._outcomes

    async def lift(self) -> list[LiftRow]:
        """Lift per strategy, per quadrant and overall, from the outcome counters in Redis."""
        return lift_table(await self.outcomes.aggregates())

    @property
    def redis_where(self) -> str:
        return redis_location(self.settings.redis_url)

    def warn_redis(self, what: str, error: BaseException) -> None:
        """At most one warning per interval: a dashboard polling a dead Redis must not flood."""
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        reason = str(error) or type(error).__name__
        log.warning("%s: Redis at %s unavailable: %s", what, self.redis_where, reason)

    # ---- background work
    async def sample_segments(self) -> None:
        """One sample for the history chart (and the gauges); skipped while Redis is away."""
        try:
            counts = await asyncio.wait_for(self.views.segment_counts(), REDIS_TIMEOUT_S)
        except (redis_errors.RedisError, TimeoutError) as exc:
            self.warn_redis("segment sizes not sampled", exc)
            return
        self.history.add(now_ms(), counts)

    async def run_sampler(self) -> None:
        while True:
            await self.sample_segments()
            await asyncio.sleep(self.sample_seconds)

    async def take_outputs(self, batch: Sequence[bytes]) -> None:
        """Feed recent alerts/changes to Redis and count offers; waits while Redis is down."""
        alerts: list[bytes] = []
        changes: list[dict[str, Any]] = []
        for raw in batch:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("ignoring an output record that is not JSON (%d bytes)", len(raw))
                continue
            if not isinstance(record, dict):
                continue
            kind = record.get("type")
            if kind == "churn_alert":
                alerts.append(bytes(raw))
            elif kind == "segment_change":
                changes.append(record)
            elif kind == "retention_offer":
                self.metrics.observe_offer(str(record.get("decision", "unknown")))
        await with_backoff(
            lambda: self.feed.record(alerts, changes),
            what="recent alerts feed",
            where=self.settings.redis_url,
        )

    # ---- probes
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this worker is consuming and can read Redis, with a reason for each."""
        checks = {"kafka": self._stream_state(), "redis": await self._redis_state()}
        return all(v == "ok" for v in checks.values()), checks

    def _stream_state(self) -> str:
        app = self.app
        if app.state != "running":
            return f"the worker is not running ({_STATES.get(app.state, app.state)})"
        if app.rebalancing:
            return "the consumer group is rebalancing"
        if app.in_recovery or not _recovered(app):
            return "tables are being recovered from their changelogs"
        if not app.consumer.assignment():
            return "no partitions are assigned to this worker"
        return "ok"

    async def _redis_state(self) -> str:
        try:
            await asyncio.wait_for(self.redis().ping(), REDIS_TIMEOUT_S)
        except (redis_errors.RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            return f"Redis at {self.redis_where} does not answer: {reason}"
        return "ok"

    async def scrape(self) -> bytes:
        lag = self.consumer_lag()
        try:
            segments: Mapping[str, Mapping[str, int]] | None = await asyncio.wait_for(
                self.views.segment_counts(), REDIS_TIMEOUT_S
            )
        except (redis_errors.RedisError, TimeoutError):
            latest = self.history.latest()  # a stale value beats a gap in the graph
            segments = {d: latest[d] for d in DIMENSIONS if d in latest} if latest else None
        try:
            lift: list[LiftRow] | None = await asyncio.wait_for(self.lift(), REDIS_TIMEOUT_S)
        except (redis_errors.RedisError, TimeoutError):
            lift = None
        return self.metrics.render(Snapshot(lag, segments, lift))

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition of the topics this worker consumes: end minus committed.

        From Faust's monitor (the sensor that tracks the end offset of every fetch and every
        commit), so a scrape costs no broker round trip. A partition appears once something
        was fetched from it.
        """
        app = self.app
        if app.state != "running":
            return {}
        monitor = app.monitor
        ends = monitor.tp_end_offsets or {}
        committed = monitor.tp_committed_offsets or {}
        lag: dict[tuple[str, int], int] = {}
        for tp in app.consumer.assignment():
            if tp.topic not in self.consumed_topics or tp not in ends:
                continue
            end, done = ends[tp], committed.get(tp)
            if end is None:
                continue
            lag[(tp.topic, tp.partition)] = max(0, int(end) - int(done or 0))
        return lag

    def allowed(self, request: HttpRequest) -> bool:
        """Whether the request may read data (see :func:`authorized`)."""
        return authorized(self.token, request.headers.get("Authorization"))


_STATES: Final = {"init": "starting", "stopping": "stopping", "shutdown": "stopped"}


def _recovered(app: faust.App) -> bool:
    """Whether Faust finished restoring tables after the latest assignment.

    ``recovery`` is on Faust's table manager but not on its declared type, hence the lookup.
    """
    recovery = getattr(app.tables, "recovery", None)
    completed = getattr(recovery, "completed", None)
    return completed is None or bool(completed.is_set())
