"""The worker's HTTP side: JSON API, the marketing dashboard, health, readiness and metrics.

Everything is served by the Faust worker's own web server (``RFM_WEB_PORT``), so there is no
second process to deploy and the API reads exactly what the stream wrote. One call wires it::

    web = register_web(app, settings, processor, api_token=...)

Routes (all JSON except ``/``, ``/dashboard`` and ``/metrics``; errors are
``{"error": <code>, "detail": <what to do>}`` with a matching status):

=================================  ===========================================================
``GET /api/customers/{id}``        the Redis profile (typed) plus ``history`` (``?limit=``)
``GET /api/segments``              customers per RFM segment and per quadrant
``GET /api/segments/{dim}/{name}`` member ids of one audience (``?limit=``)
``GET /api/segments/history``      segment sizes sampled every few seconds (in memory)
``GET /api/segments/flows``        from → to counts over the recent segment changes
``GET /api/alerts/recent``         recent churn alerts, newest event time first (``?limit=``)
``GET /health``                    liveness: 200 while the process serves HTTP
``GET /ready``                     readiness: 200 when consuming and Redis answers, else 503
``GET /metrics``                   Prometheus text format (own registry)
``GET /`` and ``/dashboard``       the dashboard (one self-contained page, polls the API)
=================================  ===========================================================

With an API token, ``/api/*`` and ``/metrics`` need ``Authorization: Bearer <token>``; the
probes stay open (orchestrators call them without credentials) and so does the dashboard page,
which holds no data and sends the token it was opened with (``?token=``).

Recent alerts and segment changes reach :meth:`WebSide.take_outputs` from the worker's
``offers`` agent (the one reader of ``segment-changes`` and ``churn-alerts``), which keeps
two small Redis sorted sets (``P recent:alerts``, ``P recent:changes:<dimension>``), scored
by event time and capped. Redis rather than memory, because each worker consumes only some
partitions: a per-process ring would show a different slice on every worker. A sorted set
rather than a list, because the member is the record itself: a redelivered record changes
nothing, where an ``LPUSH`` would show it twice. An agent of this module counts retention
offers by decision.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import faust
import orjson
from faust.web import View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from schemas import DeadLetterReason
from schemas.common import ID_PATTERN
from streams.adapters import ProfileViews, connect, redis_location, with_backoff
from streams.adapters.redis_views import DIMENSIONS, iso_ms
from streams.batches import consume
from streams.config import Settings
from streams.processor import Counters

if TYPE_CHECKING:
    from aiohttp.web import Request as HttpRequest

log = logging.getLogger(__name__)

ALERTS_CAP: Final = 200
"""Churn alerts kept in ``P recent:alerts`` (and the most ``/api/alerts/recent`` returns)."""
CHANGES_CAP: Final = 1_000
"""Segment changes kept per dimension in ``P recent:changes:<dimension>``, for the flows."""
SAMPLE_SECONDS: Final = 5.0
HISTORY_POINTS: Final = 360
"""Samples of segment sizes kept in memory: 30 minutes at one sample every 5 s."""
OFFER_DECISIONS: Final = ("offer", "no_offer", "holdout", "capped", "cooldown")
QUADRANTS: Final = ("true_friend", "butterfly", "barnacle", "stranger")
REDIS_TIMEOUT_S: Final = 2.0
"""A probe or a scrape must answer quickly: past this, Redis counts as unavailable."""
FEED_BATCH: Final = 500
WARN_EVERY_S: Final = 30.0
BATCH_SECONDS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
BATCH_EVENTS_BUCKETS: Final = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000)

_ID: Final = re.compile(ID_PATTERN)
_SCRIPT: Final = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE: Final = re.compile(r"<style>(.*?)</style>", re.DOTALL)

# --------------------------------------------------------------------------- pure helpers


class ApiError(Exception):
    """A request that cannot be answered; becomes ``{"error", "detail"}`` with ``status``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail

    def body(self) -> dict[str, str]:
        return error_body(self.error, self.detail)


def error_body(error: str, detail: str) -> dict[str, str]:
    """The one shape of every error response: a stable code and a sentence for humans."""
    return {"error": error, "detail": detail}


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """``?limit=`` as an int in 1..maximum; absent means ``default``; anything else is a 400.

    A silent clamp would hide a client bug (asking for 10 000 and getting 200), so only an
    absent value takes the default.
    """
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= maximum:
        return int(text)
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    raise ApiError(
        400, "bad_request", f"limit must be an integer from 1 to {maximum}, got {shown!r}"
    )


def check_customer_id(customer_id: str) -> str:
    """Refuse ids no producer could have sent (the wire contract's rule), before Redis."""
    if len(customer_id) > 128 or not _ID.fullmatch(customer_id):
        raise ApiError(
            400,
            "bad_request",
            "customer ids are 1-128 printable characters without leading or trailing spaces",
        )
    return customer_id


def check_dimension(dimension: str) -> str:
    if dimension not in DIMENSIONS:
        raise ApiError(
            404, "not_found", f"unknown dimension {dimension!r}; use one of {', '.join(DIMENSIONS)}"
        )
    return dimension


def token_text(token: str | SecretStr | None) -> str | None:
    """The configured token as text; None disables authentication. An empty one is refused.

    An empty ``RFM_API_TOKEN`` is almost certainly a deployment mistake, and treating it as
    "no auth" would open the API silently, so the worker stops at start-up instead.
    """
    if token is None:
        return None
    text = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not text.strip():
        raise ValueError("api_token is empty: set a real token, or unset RFM_API_TOKEN")
    return text


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorized(expected: str | None, header: str | None) -> bool:
    """True when no token is configured, or the header carries exactly it.

    Compared in constant time, so response timing says nothing about how much of a guess was
    right.
    """
    if expected is None:
        return True
    given = bearer(header)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


_INT_FIELDS: Final = frozenset(
    {
        "at_ms",
        "recency_score",
        "frequency_score",
        "monetary_score",
        "drift_level",
        "purchase_count",
        "repeat_days",
        "frequency_window",
        "monetary_window_cents",
        "mean_order_value_cents",
        "long_frequency",
        "long_monetary_cents",
        "engagement",
    }
)
_FLOAT_FIELDS: Final = frozenset(
    {
        "p_alive",
        "churn_risk",
        "days_since_last_purchase",
        "avg_days_between_purchases",
        "gap_std_days",
        "tenure_days",
    }
)
_BOOL_FIELDS: Final = frozenset({"loyal", "profitable"})


def profile_json(fields: Mapping[str, str]) -> dict[str, Any]:
    """The ``profile:<id>`` hash (all strings in Redis) with JSON types for API clients.

    Empty strings are Redis' "none" and become null; numbers and flags get their types. A
    field this table does not know, or a value that does not parse, stays a string: the view
    contract may grow, and a newer writer must not break an older reader.
    """
    out: dict[str, Any] = {}
    for name, text in fields.items():
        value: Any = text
        if text == "":
            value = None
        elif name in _BOOL_FIELDS:
            value = text == "1" if text in ("0", "1") else text
        elif name in _INT_FIELDS:
            value = _number(text, int)
        elif name in _FLOAT_FIELDS:
            value = _number(text, float)
        out[name] = value
    return out


def _number(text: str, kind: type[int] | type[float]) -> int | float | str:
    try:
        return kind(text)
    except ValueError:
        try:
            as_float = float(text)  # an int field written as "3.0" by some other writer
        except ValueError:
            return text
        return int(as_float) if kind is int and as_float.is_integer() else as_float


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


# --------------------------------------------------------------------------- metrics


class _Versioned(Protocol):
    @property
    def version(self) -> str: ...


class CountersSource(Protocol):
    """What the metrics read from the stream processor (``streams.processor.Processor``)."""

    @property
    def counters(self) -> Counters: ...

    @property
    def model(self) -> _Versioned: ...


@dataclass
class Snapshot:
    """Values that need I/O, fetched by the scrape handler before rendering."""

    lag: Mapping[tuple[str, int], int]
    segments: Mapping[str, Mapping[str, int]] | None


class _StreamCollector(Collector):
    """Counters of the processor, read at scrape time (they live in the processor anyway)."""

    def __init__(self, source: CountersSource, snapshot: Callable[[], Snapshot]) -> None:
        self._source = source
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Counters(), Snapshot({}, None), None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._source.counters, self._snapshot(), self._source))

    def _families(
        self, c: Counters, snap: Snapshot, source: CountersSource | None
    ) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "rfm_records_consumed", "Input records consumed (valid, invalid and ticks)."
        )
        records.add_metric([], c.consumed)
        yield records
        events = CounterMetricFamily(
            "rfm_events_consumed",
            "Valid input records by kind; invalid ones are counted as dead letters.",
            labels=["kind"],
        )
        for kind, n in (("purchase", c.purchases), ("interaction", c.interactions)):
            events.add_metric([kind], n)
        events.add_metric(["tick"], c.ticks)
        yield events
        dead = CounterMetricFamily(
            "rfm_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            labels=["reason"],
        )
        reasons = {r.value: 0 for r in DeadLetterReason} | c.dead_letters
        for reason, n in sorted(reasons.items()):
            dead.add_metric([reason], n)
        yield dead
        for name, help_text, value in (
            ("rfm_duplicates", "Repeated or redelivered events (no-ops).", c.duplicates),
            ("rfm_segment_changes", "Segment changes published.", c.segment_changes),
            ("rfm_churn_alerts", "Churn alerts published.", c.churn_alerts),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
        lag = GaugeMetricFamily(
            "rfm_consumer_lag",
            "Records not yet committed by this worker: log end offset minus committed offset.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(snap.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        sizes = GaugeMetricFamily(
            "rfm_segment_customers",
            "Customers per audience (Redis views, shared by all workers).",
            labels=["dimension", "segment"],
        )
        for dimension, names in sorted((snap.segments or {}).items()):
            for name, n in sorted(names.items()):
                sizes.add_metric([dimension, name], n)
        yield sizes
        model = GaugeMetricFamily(
            "rfm_model_info", "The model this worker scores with.", labels=["version"]
        )
        if source is not None:
            model.add_metric([source.model.version], 1)
        yield model


class WebMetrics:
    """A registry of this worker's own, so tests and several apps in one process never clash."""

    def __init__(self, source: CountersSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = Snapshot({}, None)
        self.batch_seconds = Histogram(
            "rfm_batch_duration_seconds",
            "Wall-clock time to process one batch of input records and publish its outputs.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "rfm_batch_events",
            "Input records per processed batch.",
            buckets=BATCH_EVENTS_BUCKETS,
            registry=self.registry,
        )
        self.offers = Counter(
            "rfm_retention_offers",
            "Retention-offer decisions seen on the offers topic by this worker, by decision.",
            ["decision"],
            registry=self.registry,
        )
        for decision in OFFER_DECISIONS:
            self.offers.labels(decision)
        self.registry.register(_StreamCollector(source, lambda: self._snapshot))

    def observe_batch(self, seconds: float, events: int) -> None:
        self.batch_seconds.observe(max(0.0, seconds))
        self.batch_events.observe(max(0, events))

    def observe_offer(self, decision: str) -> None:
        self.offers.labels(decision).inc()

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition format. Scrapes are served one at a time by the event loop."""
        self._snapshot = snapshot
        return generate_latest(self.registry)


# --------------------------------------------------------------------------- the side


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
        page = resources.files("streams").joinpath("static", "dashboard.html")
        return cls(page.read_text(encoding="utf-8"))


def _csp_sources(directive: str, inline_blocks: list[str]) -> str:
    """Allow exactly these inline blocks by hash: injected markup could run nothing."""
    if not inline_blocks:
        return f"{directive} 'none'"
    hashes = (hashlib.sha256(block.encode("utf-8")).digest() for block in inline_blocks)
    return directive + "".join(f" 'sha256-{base64.b64encode(h).decode()}'" for h in hashes)


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
        self.history = SegmentHistory(history_points)
        self.dashboard = Dashboard.load()
        t = settings.topics
        self.consumed_topics = frozenset(
            [*t.inputs(), t.profiles, t.segment_changes, t.churn_alerts, t.retention_offers]
        )
        self._client = redis_client
        self._views: ProfileViews | None = None
        self._feed: RecentFeed | None = None
        self._warned_at = -WARN_EVERY_S

    # ---- hooks for the stream
    def observe_batch(self, seconds: float, events: int) -> None:
        """Call after each processed batch: wall-clock seconds, and how many input records."""
        self.metrics.observe_batch(seconds, events)

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
        return self.metrics.render(Snapshot(lag, segments))

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


# --------------------------------------------------------------------------- views


class _Route(View):
    """Base of every route: auth, JSON errors, and no exception escaping as an HTML 500."""

    side: ClassVar[WebSide]
    protected: ClassVar[bool] = True

    async def get(self, request: Any, **params: Any) -> Any:
        return await self.handle(request, **params)

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        raise NotImplementedError

    async def dispatch(self, request: Any) -> Any:
        try:
            if self.protected and not self.side.allowed(request):
                raise ApiError(
                    401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'"
                )
            return await super().dispatch(request)
        except ApiError as exc:
            headers = {"Cache-Control": "no-store"}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="rfm-stream"'
            return self.reply(exc.body(), status=exc.status, headers=headers)
        except (redis_errors.RedisError, TimeoutError) as exc:
            self.side.warn_redis(f"{request.method} {request.path}", exc)
            detail = f"Redis at {self.side.redis_where} does not answer; retry shortly"
            return self.reply(error_body("unavailable", detail), status=503)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            detail = "the server failed on this request; see the worker log"
            return self.reply(error_body("internal_error", detail), status=500)

    def reply(self, body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        return self.bytes(
            orjson.dumps(body),
            content_type="application/json",
            status=status,
            headers={"Cache-Control": "no-store", **(headers or {})},
        )


class HealthView(_Route):
    protected = False

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        return self.reply({"status": "ok"})


class ReadyView(_Route):
    protected = False

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        ready, checks = await self.side.readiness()
        if ready:
            return self.reply({"status": "ready", "checks": checks})
        reason = "; ".join(v for v in checks.values() if v != "ok")
        return self.reply({**error_body("not_ready", reason), "checks": checks}, status=503)


class MetricsView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        text = await self.side.scrape()
        return self.bytes(
            text,
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


class DashboardView(_Route):
    protected = False

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        page = self.side.dashboard
        return self.html(
            page.html,
            headers={
                "Content-Security-Policy": page.csp,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )


class CustomerView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        customer_id = check_customer_id(params["customer_id"])
        limit = parse_limit(request.query.get("limit"), default=20, maximum=50)
        views = self.side.views
        fields = await views.profile(customer_id)
        if fields is None:
            raise ApiError(404, "not_found", f"no profile for customer {customer_id!r} (yet)")
        history = await views.history(customer_id, limit)
        return self.reply(
            {"customer_id": customer_id, "profile": profile_json(fields), "history": history}
        )


class SegmentsView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        counts = await self.side.views.segment_counts()
        return self.reply(
            {"as_of": iso_ms(now_ms()), "dimensions": counts, "totals": totals(counts)}
        )


class AudienceView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        dimension = check_dimension(params["dimension"])
        name = params["name"]
        limit = parse_limit(request.query.get("limit"), default=100, maximum=1000)
        side = self.side
        client = side.redis()
        keys = side.views.keys
        if not await client.sismember(keys.audience_index, f"{dimension}:{name}"):
            raise ApiError(404, "not_found", f"no {dimension} audience named {name!r}")
        size = int(await client.scard(keys.audience(dimension, name)))
        members = await side.views.audience(dimension, name, limit)
        return self.reply(
            {
                "dimension": dimension,
                "name": name,
                "size": size,
                "customer_ids": members,
                "truncated": size > len(members),
            }
        )


class HistoryView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        side = self.side
        return self.reply(
            {
                "interval_seconds": side.sample_seconds,
                "capacity": side.history.capacity,
                "points": side.history.points(),
            }
        )


class FlowsView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        dimension = check_dimension(request.query.get("dimension", "quadrant"))
        limit = parse_limit(request.query.get("limit"), default=500, maximum=CHANGES_CAP)
        changes = await self.side.feed.changes(dimension, limit)
        return self.reply(
            {
                "dimension": dimension,
                "changes": len(changes),
                "since": changes[-1]["event_time"] if changes else None,
                "until": changes[0]["event_time"] if changes else None,
                "flows": flows(changes),
            }
        )


class AlertsView(_Route):
    async def handle(self, request: HttpRequest, **params: str) -> Any:
        limit = parse_limit(request.query.get("limit"), default=50, maximum=ALERTS_CAP)
        alerts = await self.side.feed.alerts(limit)
        return self.reply({"count": len(alerts), "alerts": alerts})


class ApiNotFoundView(_Route):
    """Unknown ``/api/...`` paths answer in JSON too (registered last: it matches anything)."""

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        raise ApiError(
            404,
            "not_found",
            f"no API route {request.path!r}; the API is /api/customers/{{id}}, "
            "/api/segments[/history|/flows|/{dimension}/{name}] and /api/alerts/recent",
        )


ROUTES: Final[tuple[tuple[str, type[_Route]], ...]] = (
    ("/health", HealthView),
    ("/ready", ReadyView),
    ("/metrics", MetricsView),
    ("/api/customers/{customer_id:.+}", CustomerView),
    ("/api/segments", SegmentsView),
    ("/api/segments/history", HistoryView),
    ("/api/segments/flows", FlowsView),
    ("/api/segments/{dimension}/{name}", AudienceView),
    ("/api/alerts/recent", AlertsView),
    ("/api/{tail:.*}", ApiNotFoundView),
    ("/dashboard", DashboardView),
    ("/", DashboardView),
)
"""Order matters: aiohttp takes the first match, so the catch-all follows the API routes, and
``/`` comes before Faust's own index page (which its web server adds when it starts)."""

# --------------------------------------------------------------------------- wiring

_registered: weakref.WeakKeyDictionary[faust.App, WebSide] = weakref.WeakKeyDictionary()


def registered_web(app: faust.App) -> WebSide | None:
    """The handle :func:`register_web` returned for ``app``, if it was called."""
    return _registered.get(app)


def register_web(
    app: faust.App,
    settings: Settings,
    processor: CountersSource,
    *,
    api_token: str | SecretStr | None = None,
    sample_seconds: float = SAMPLE_SECONDS,
    history_points: int = HISTORY_POINTS,
) -> WebSide:
    """Add the API, dashboard, probes and metrics to ``app``'s web server; once per app.

    Also registers two things that run with the worker: the segment-size sampler (a task) and
    the ``web_feed`` agent (recent alerts and changes, offer counts; see the module doc).
    Returns the handle whose ``observe_batch`` the stream calls after each batch.
    """
    if app in _registered:
        raise RuntimeError(f"register_web was already called for app {app.conf.id!r}")
    if app.conf.web_in_thread:
        raise ValueError(
            "web_in_thread must be off: the routes share the worker's event loop and Redis client"
        )
    side = WebSide(
        app,
        settings,
        processor,
        api_token=api_token,
        sample_seconds=sample_seconds,
        history_points=history_points,
    )
    for path, view in ROUTES:
        bound = type(view.__name__, (view,), {"side": side, "__module__": __name__})
        app.page(path, name=f"rfm-{path}")(bound)

    offers_topic = app.topic(settings.topics.retention_offers, key_type=bytes, value_type=bytes)

    async def web_feed(stream: Any) -> None:
        """Offers by decision, for /metrics. (Alerts and changes come from the ``offers``
        agent, which already reads their topics: see streams.app.)"""

        async def handle(events: list[Any]) -> None:
            await side.take_outputs([event.value for event in events])

        await consume(app, stream, handle, max_events=FEED_BATCH, within_s=0.2, what="web feed")

    async def sample_segments() -> None:
        """Segment sizes every few seconds, for the dashboard's chart."""
        await side.run_sampler()

    app.agent(offers_topic, name=f"{__name__}.web_feed")(web_feed)
    app.task(sample_segments)
    _registered[app] = side
    log.info(
        "web: API, dashboard and /metrics on port %s (API token %s)",
        settings.web_port,
        "required" if side.token else "not required",
    )
    return side
