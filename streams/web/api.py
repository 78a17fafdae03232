"""The HTTP routes: the JSON API, the probes, /metrics and the dashboard page.

Every route answers JSON errors (``{"error", "detail"}``) and lets no exception escape as an
HTML 500; see :class:`_Route`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson
from aiokafka.errors import KafkaError
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST
from redis import exceptions as redis_errors

from schemas.common import ID_PATTERN
from streams.adapters.redis_views import DIMENSIONS, iso_ms
from streams.domain.lift import lift_body
from streams.web.feed import ALERTS_CAP, CHANGES_CAP, flows, now_ms, totals
from streams.web.freshness import fresh_profile
from streams.web.side import WebSide

if TYPE_CHECKING:
    from aiohttp.web import Request as HttpRequest

log = logging.getLogger(__name__)


_ID: Final = re.compile(ID_PATTERN)


# --------------------------------------------------------------------------- request helpers


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
        profile = fresh_profile(profile_json(fields), self.side.read_time(customer_id))
        return self.reply({"customer_id": customer_id, "profile": profile, "history": history})

    async def delete(self, request: Any, **params: Any) -> Any:
        return await self.remove(request, **params)

    async def remove(self, request: HttpRequest, **params: str) -> Any:
        """Erase the customer (right to be forgotten): 202 once the request is on the broker.

        The worker owning the customer's partition does the erasing, in order with their
        events; the profile answers 404 once it has (usually within a batch or two).
        """
        customer_id = check_customer_id(params["customer_id"])
        try:
            partition, offset = await self.side.request_erasure(customer_id)
        except (TimeoutError, KafkaError) as exc:
            detail = f"the erasure request did not reach Kafka ({type(exc).__name__}); retry"
            raise ApiError(503, "unavailable", detail) from exc
        return self.reply(
            {
                "customer_id": customer_id,
                "status": "erasure_requested",
                "partition": partition,
                "offset": offset,
            },
            status=202,
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


class LiftView(_Route):
    """Lift of the retention offers: treated against holdout, per strategy and quadrant."""

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        rows = await self.side.lift()
        return self.reply(lift_body(rows, iso_ms(now_ms())))


class ApiNotFoundView(_Route):
    """Unknown ``/api/...`` paths answer in JSON too (registered last: it matches anything)."""

    async def handle(self, request: HttpRequest, **params: str) -> Any:
        raise ApiError(
            404,
            "not_found",
            f"no API route {request.path!r}; the API is /api/customers/{{id}}, "
            "/api/segments[/history|/flows|/{dimension}/{name}], /api/alerts/recent and "
            "/api/lift",
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
    ("/api/lift", LiftView),
    ("/api/{tail:.*}", ApiNotFoundView),
    ("/dashboard", DashboardView),
    ("/", DashboardView),
)
"""Order matters: aiohttp takes the first match, so the catch-all follows the API routes, and
``/`` comes before Faust's own index page (which its web server adds when it starts)."""
