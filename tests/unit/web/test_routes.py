"""The routes in process, through Faust's aiohttp application, with no Kafka and no Redis.

The app is never started, and Redis is a closed port: what is checked here is everything that
must not depend on them — routing, auth, status codes, JSON error shapes, what readiness
reports while nothing is up, and that bad requests are refused before any I/O.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from itertools import count
from typing import Any

import faust
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import MemoryPartitionStore, Processor
from streams.web import register_web, registered_web
from streams.web.feed import RecentFeed
from streams.web.metrics import Snapshot
from streams.web.side import WebSide

pytestmark = pytest.mark.asyncio

TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_ids = count(1)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def new_app(**conf: Any) -> tuple[faust.App, Settings, Processor]:
    settings = Settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0", topic_prefix="unit.")
    app = faust.App(f"unit-web-{next(_ids)}", broker="kafka://127.0.0.1:1", **conf)
    source = Processor(settings, load_rules(), default_model(), lambda _: MemoryPartitionStore())
    return app, settings, source


async def client_for(app: faust.App) -> TestClient[Any, Any]:
    # init_server adds Faust's own pages too: "/" must still be the dashboard
    app.web.init_server()
    client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))  # type: ignore[attr-defined]
    await client.start_server()
    return client


@pytest_asyncio.fixture
async def secured() -> AsyncIterator[TestClient[Any, Any]]:
    app, settings, source = new_app()
    register_web(app, settings, source, api_token=TOKEN)
    client = await client_for(app)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def open_api() -> AsyncIterator[TestClient[Any, Any]]:
    app, settings, source = new_app()
    register_web(app, settings, source)
    client = await client_for(app)
    yield client
    await client.close()


async def test_health_answers_while_nothing_else_does(secured: TestClient[Any, Any]) -> None:
    response = await secured.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_ready_is_503_with_a_reason_per_dependency(secured: TestClient[Any, Any]) -> None:
    response = await secured.get("/ready")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "not_ready"
    assert "not running (starting)" in body["checks"]["kafka"]
    assert "does not answer" in body["checks"]["redis"]
    assert body["checks"]["kafka"] in body["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/segments",
        "/api/segments/history",
        "/api/segments/flows",
        "/api/segments/quadrant/true_friend",
        "/api/customers/c1",
        "/api/alerts/recent",
        "/api/lift",
        "/api/anything/else",
        "/metrics",
    ],
)
async def test_data_routes_need_the_token(secured: TestClient[Any, Any], path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await secured.get(path, headers=headers)
        assert response.status == 401, (path, headers)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="rfm-stream"'
        body = await response.json()
        assert body == {"error": "unauthorized", "detail": body["detail"]}


async def test_with_the_token_redis_being_down_is_a_503(secured: TestClient[Any, Any]) -> None:
    for path in ("/api/segments", "/api/customers/c1", "/api/alerts/recent", "/api/lift"):
        response = await secured.get(path, headers=AUTH)
        assert response.status == 503, path
        body = await response.json()
        assert body["error"] == "unavailable"
        assert "redis://" not in body["detail"]  # a location, never a URL with credentials


async def test_memory_only_routes_work_without_redis(secured: TestClient[Any, Any]) -> None:
    response = await secured.get("/api/segments/history", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["points"] == []
    assert body["interval_seconds"] == 5.0
    metrics = await secured.get("/metrics", headers=AUTH)
    assert metrics.status == 200
    assert "rfm_records_consumed_total 0.0" in await metrics.text()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/customers/c1?limit=0", 400),
        ("/api/customers/%20c1", 400),
        ("/api/segments/colour/blue", 404),
        ("/api/segments/quadrant/x?limit=5000", 400),
        ("/api/segments/flows?dimension=colour", 404),
        ("/api/alerts/recent?limit=201", 400),
        ("/api/nothing", 404),
    ],
)
async def test_bad_requests_are_refused_before_redis(
    secured: TestClient[Any, Any], path: str, status: int
) -> None:
    response = await secured.get(path, headers=AUTH)
    assert response.status == status
    body = await response.json()
    assert set(body) == {"error", "detail"}


async def test_without_a_token_the_api_is_open(open_api: TestClient[Any, Any]) -> None:
    assert (await open_api.get("/metrics")).status == 200
    assert (await open_api.get("/api/segments")).status == 503  # open, but Redis is down


async def test_dashboard_at_root_and_dashboard(secured: TestClient[Any, Any]) -> None:
    for path in ("/", "/dashboard"):
        response = await secured.get(path)
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "Content-Security-Policy" in response.headers
        assert response.headers["Cache-Control"] == "no-store"
        assert "Customer segments" in await response.text()


async def test_register_once_per_app() -> None:
    app, settings, source = new_app()
    assert registered_web(app) is None
    side = register_web(app, settings, source)
    assert registered_web(app) is side
    with pytest.raises(RuntimeError, match="already"):
        register_web(app, settings, source)


async def test_refuses_an_empty_token_and_a_threaded_web_server() -> None:
    app, settings, source = new_app()
    with pytest.raises(ValueError, match="empty"):
        register_web(app, settings, source, api_token=" ")
    app, settings, source = new_app(web_in_thread=True)
    with pytest.raises(ValueError, match="web_in_thread"):
        register_web(app, settings, source)


class _Feed(RecentFeed):
    """Records what would be written instead of writing it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Sequence[bytes], Sequence[Any]]] = []

    async def record(self, alerts: Sequence[bytes], changes: Sequence[Any]) -> None:
        self.calls.append((list(alerts), list(changes)))


async def test_output_records_are_sorted_into_alerts_changes_and_offers() -> None:
    app, settings, source = new_app()
    side: WebSide = register_web(app, settings, source)
    feed = _Feed()
    side._feed = feed
    alert = b'{"type":"churn_alert","id":"ca:c1:1"}'
    change = {"type": "segment_change", "id": "sc:c1:2", "dimension": "quadrant"}
    await side.take_outputs(
        [
            alert,
            b'{"type":"segment_change","id":"sc:c1:2","dimension":"quadrant"}',
            b'{"type":"retention_offer","decision":"holdout"}',
            b"not json",
            b"[1, 2]",
        ]
    )
    assert feed.calls == [([alert], [change])]
    text = side.metrics.render(Snapshot({}, None)).decode()
    assert 'rfm_retention_offers_total{decision="holdout"} 1.0' in text


async def test_erasing_needs_the_token_and_a_valid_id(secured: TestClient[Any, Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = await secured.delete("/api/customers/c1", headers=headers)
        assert response.status == 401, headers
    response = await secured.delete("/api/customers/%20padded", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"
    # the other routes take no DELETE
    response = await secured.delete("/api/segments", headers=AUTH)
    assert response.status == 405
