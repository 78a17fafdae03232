"""The HTTP side against a real worker: Kafka, Redis, the Faust web server, real requests.

One worker for the module, run as a subprocess exactly like ``rfm-stream worker`` (the same
``build()``), plus ``register_web`` — which ``serve()`` below calls only while ``build()``
does not. It runs with an API token, so every data route is checked with and without it.
Redis is seeded through ``ProfileViews.apply``; recent alerts and changes are produced to
the output topics, where the worker's ``web_feed`` agent picks them up.

``python -m tests.integration.test_web`` is that worker (configured by RFM_* variables); the
browser test in tests/e2e uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from schemas.examples import CHURN_ALERT, SEGMENT_CHANGE
from schemas.outputs import parse_output
from streams.adapters import ProfileViews, connect
from streams.config import Settings
from streams.web import SAMPLE_SECONDS
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.unit.adapters.support import T, update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SAMPLE_SECONDS_VARIABLE = "RFM_TEST_WEB_SAMPLE_SECONDS"
"""How often ``serve()`` samples segment sizes (the browser test wants a denser chart)."""
TOKEN = "test-token-7c1f"
READY_TIMEOUT_S = 120.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --------------------------------------------------------------------------- the worker


def serve() -> None:
    """``rfm-stream worker`` with the web side (``build()`` will register it itself)."""
    import logging

    from faust.worker import Worker

    from streams.config import load_settings
    from streams.domain.rules import load_rules
    from streams.web import register_web, registered_web
    from streams.worker.app import build
    from streams.worker.model_watch import load_current_model
    from streams.worker.topics import ensure_topics

    logging.basicConfig(level=logging.INFO)
    settings = load_settings()
    ensure_topics(settings)
    topology = build(settings, load_rules(), load_current_model(settings))
    if registered_web(topology.app) is None:
        register_web(
            topology.app,
            settings,
            topology.processor,
            api_token=os.environ.get("RFM_API_TOKEN") or None,
            sample_seconds=float(os.environ.get(SAMPLE_SECONDS_VARIABLE, SAMPLE_SECONDS)),
        )
    Worker(topology.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Served:
    """A running worker and how to talk to it."""

    settings: Settings
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    token: str | None

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        request = urllib.request.Request(self.base_url + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())

    def api(self, path: str) -> Any:
        """GET with the worker's token; the body of a 200 response."""
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = self.get(path, auth)
        assert r.status == 200, (path, r.status, r.body[:500])
        return r.json()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, probe: Any, what: str, timeout: float = 60.0) -> Any:
        """Poll ``probe()`` until it returns a value other than None; fail with the log."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the worker exited ({self.process.returncode}):\n{self.log_tail()}",
                    pytrace=False,
                )
            found = probe()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
            time.sleep(0.25)


@contextlib.contextmanager
def web_worker(
    settings: Settings, log_path: Path, *, token: str | None, sample_seconds: float | None = None
) -> Iterator[Served]:
    """Start ``serve()`` in a subprocess; yield once /ready says 200; stop it (SIGTERM)."""
    env = {**os.environ, **settings_env(settings), "RFM_LIVE_CLOCK": "false"}
    env.pop("RFM_API_TOKEN", None)
    if token is not None:
        env["RFM_API_TOKEN"] = token
    if sample_seconds is not None:
        env[SAMPLE_SECONDS_VARIABLE] = str(sample_seconds)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_web"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{settings.web_port}"
    served = Served(settings, base_url, process, log_path, token)
    try:

        def ready() -> bool | None:
            try:
                return True if served.get("/ready").status == 200 else None
            except OSError:
                return None  # not listening yet

        served.wait_for(ready, "the worker's /ready", timeout=READY_TIMEOUT_S)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(
    settings: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    own = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.web.",
            "redis_prefix": f"{run_id}:web:",
            "app_id": f"{run_id}-web",
            "data_dir": str(tmp_path_factory.mktemp("web-worker")),
            "web_port": free_port(),
        }
    )
    with web_worker(own, Path(own.data_dir) / "worker.log", token=TOKEN) as worker:
        yield worker


# --------------------------------------------------------------------------- seeding


def seed_profiles(settings: Settings, updates: list[Any]) -> dict[str, dict[str, int]]:
    """Write view updates the way the views agent does; return the counts Redis then has."""

    async def write() -> dict[str, dict[str, int]]:
        client = connect(settings.redis_url)
        try:
            views = ProfileViews(client, settings.redis_prefix)
            await views.apply(updates)
            return await views.segment_counts()
        finally:
            await client.aclose()

    return asyncio.run(write())


def segment_counts(settings: Settings) -> dict[str, dict[str, int]]:
    return seed_profiles(settings, [])


def alert(customer_id: str, seq: int, day: int, *, drifting: bool) -> dict[str, Any]:
    """A valid churn alert (the contract's example, with our own ids and times)."""
    record = dict(CHURN_ALERT)
    record.update(
        id=f"ca:{customer_id}:{seq}",
        customer_id=customer_id,
        event_time=f"2026-03-{day:02d}T12:00:00Z",
        quadrant="true_friend" if drifting else "barnacle",
        true_friend_drifting=drifting,
        severity="critical" if drifting else "watch",
    )
    parse_output(orjson.dumps(record))  # the offers agent reads it back: it must be valid
    return record


def change(
    customer_id: str, seq: int, day: int, dimension: str, old: str | None, new: str
) -> dict[str, Any]:
    record = dict(SEGMENT_CHANGE)
    record.update(
        id=f"sc:{customer_id}:{seq}",
        customer_id=customer_id,
        event_time=f"2026-03-{day:02d}T12:00:00Z",
        dimension=dimension,
        from_value=old,
        to_value=new,
        quadrant=new if dimension == "quadrant" else "true_friend",
        rfm_segment=new if dimension == "rfm_segment" else "at_risk",
    )
    parse_output(orjson.dumps(record))
    return record


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def produce_outputs(settings: Settings, topic: str, records: list[dict[str, Any]]) -> None:
    produce(settings, topic, [(r["customer_id"].encode(), orjson.dumps(r)) for r in records])


def metrics(served: Served) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name → {sorted labels: value}, parsed by prometheus_client's own parser."""
    r = served.get("/metrics", AUTH)
    assert r.status == 200, r.body[:300]
    assert r.headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


# --------------------------------------------------------------------------- tests


def test_probes_are_open_and_say_why(served: Served) -> None:
    health = served.get("/health")
    assert health.status == 200
    assert health.json() == {"status": "ok"}
    ready = served.get("/ready")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "checks": {"kafka": "ok", "redis": "ok"}}


@pytest.mark.parametrize(
    "path", ["/api/segments", "/api/customers/c1", "/api/alerts/recent", "/metrics", "/api/x"]
)
def test_data_routes_need_the_token(served: Served, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = served.get(path, headers)
        assert r.status == 401, (path, headers)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"
        assert TOKEN not in r.body.decode()


def test_dashboard_page_is_served_with_a_strict_policy(served: Served) -> None:
    for path in ("/", "/dashboard"):
        r = served.get(path)
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert b'id="quadrants"' in r.body
        policy = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'sha256-" in policy
        assert "unsafe-inline" not in policy


def test_customer_profile_with_typed_fields_and_history(served: Served) -> None:
    settings = served.settings
    seed_profiles(
        settings,
        [update("web-c1", T, history=("c:1", "c:2", "c:3")), update("web-c1", T + 1, history=())],
    )
    body = served.api("/api/customers/web-c1?limit=2")
    assert body["customer_id"] == "web-c1"
    profile = body["profile"]
    assert profile["customer_id"] == "web-c1"
    assert profile["at_ms"] == T + 1
    assert profile["quadrant"] == "true_friend"
    assert isinstance(profile["recency_score"], int)
    assert isinstance(profile["p_alive"], float)
    assert profile["loyal"] in (True, False)
    assert [h["id"] for h in body["history"]] == ["c:3", "c:2"]  # newest first, limited

    missing = served.get("/api/customers/nobody-here", AUTH)
    assert missing.status == 404
    assert set(missing.json()) == {"error", "detail"}
    for bad in ("limit=0", "limit=51", "limit=ten"):
        r = served.get(f"/api/customers/web-c1?{bad}", AUTH)
        assert r.status == 400, bad
        assert r.json()["error"] == "bad_request"


def test_segment_counts_and_audience_members(served: Served) -> None:
    settings = served.settings
    counts = seed_profiles(
        settings,
        [
            update("web-a1", T, rfm_segment="champions", quadrant="true_friend"),
            update("web-a2", T, rfm_segment="champions", quadrant="butterfly"),
            update("web-a3", T, rfm_segment="at_risk", quadrant="barnacle"),
        ],
    )
    body = served.api("/api/segments")
    assert body["dimensions"] == counts
    assert body["totals"]["quadrant"] == sum(counts["quadrant"].values())
    assert body["as_of"].endswith("Z")

    members = served.api("/api/segments/rfm_segment/champions")
    assert {"web-a1", "web-a2"} <= set(members["customer_ids"])
    assert members["size"] == counts["rfm_segment"]["champions"]
    one = served.api("/api/segments/rfm_segment/champions?limit=1")
    assert len(one["customer_ids"]) == 1
    assert one["truncated"] is True
    assert served.get("/api/segments/colour/champions", AUTH).status == 404
    assert served.get("/api/segments/quadrant/unicorns", AUTH).status == 404


def test_segment_history_is_sampled_from_redis(served: Served) -> None:
    settings = served.settings
    seed_profiles(settings, [update("web-h1", T, rfm_segment="loyal", quadrant="stranger")])
    now = segment_counts(settings)

    def sampled() -> Any:
        body = served.api("/api/segments/history")
        points = body["points"]
        if points and points[-1]["rfm_segment"] == now["rfm_segment"]:
            return body
        return None

    body = served.wait_for(sampled, "a sample with the seeded segment", timeout=30)
    assert body["interval_seconds"] > 0
    times = [p["at_ms"] for p in body["points"]]
    assert times == sorted(times)
    assert body["points"][-1]["quadrant"] == now["quadrant"]


def test_recent_alerts_and_flows_come_from_the_output_topics(served: Served) -> None:
    settings = served.settings
    topics = settings.topics
    alerts = [
        alert("web-f1", 1, 3, drifting=True),
        alert("web-f2", 1, 5, drifting=False),
        alert("web-f3", 1, 4, drifting=True),
    ]
    # the middle one twice: a redelivery must not show twice
    produce_outputs(settings, topics.churn_alerts, [*alerts, alerts[1]])
    produce_outputs(
        settings,
        topics.segment_changes,
        [
            change("web-f1", 2, 3, "quadrant", "true_friend", "barnacle"),
            change("web-f3", 2, 4, "quadrant", "true_friend", "barnacle"),
            change("web-f4", 1, 4, "quadrant", None, "true_friend"),
            change("web-f4", 2, 4, "rfm_segment", "champions", "at_risk"),
        ],
    )

    def all_alerts() -> Any:
        body = served.api("/api/alerts/recent")
        return body if body["count"] >= 3 else None

    body = served.wait_for(all_alerts, "the alerts on /api/alerts/recent")
    assert [a["id"] for a in body["alerts"]] == ["ca:web-f2:1", "ca:web-f3:1", "ca:web-f1:1"]
    assert [a["true_friend_drifting"] for a in body["alerts"]] == [False, True, True]
    assert body["alerts"][0]["profile"] == CHURN_ALERT["profile"]  # as published
    assert served.api("/api/alerts/recent?limit=1")["count"] == 1

    def quadrant_flows() -> Any:
        body = served.api("/api/segments/flows?dimension=quadrant")
        return body if body["changes"] >= 3 else None

    flows = served.wait_for(quadrant_flows, "the quadrant changes")
    assert flows["flows"] == [
        {"from": "true_friend", "to": "barnacle", "count": 2},
        {"from": None, "to": "true_friend", "count": 1},
    ]
    assert flows["since"] == "2026-03-03T12:00:00Z"
    rfm = served.api("/api/segments/flows?dimension=rfm_segment")
    assert rfm["flows"] == [{"from": "champions", "to": "at_risk", "count": 1}]
    assert served.get("/api/segments/flows?dimension=colour", AUTH).status == 404


def test_metrics_parse_and_follow_the_stream(served: Served) -> None:
    settings = served.settings
    purchase = {
        "schema_version": 1,
        "type": "purchase",
        "event_id": "web-e1",
        "customer_id": "web-m1",
        "occurred_at": "2026-03-01T10:00:00Z",
        "order_id": "web-o1",
        "amount": 42.5,
        "currency": settings.currency,
    }
    produce(
        settings,
        settings.topics.purchases,
        [(b"web-m1", orjson.dumps(purchase)), (b"web-m2", b"this is not json")],
    )
    produce_outputs(settings, settings.topics.churn_alerts, [alert("web-m3", 1, 9, drifting=True)])

    def counted() -> Any:
        found = metrics(served)
        offers = sum(found.get("rfm_retention_offers_total", {}).values())
        dead = found["rfm_dead_letters_total"].get((("reason", "invalid_json"),), 0)
        return found if dead >= 1 and offers >= 1 else None

    found = served.wait_for(counted, "the dead letter and the offer in /metrics")
    assert found["rfm_records_consumed_total"][()] >= 2
    assert found["rfm_events_consumed_total"][(("kind", "purchase"),)] >= 1
    assert set(found["rfm_retention_offers_total"]) >= {
        (("decision", d),) for d in ("offer", "no_offer", "holdout", "capped", "cooldown")
    }
    for name in ("rfm_duplicates_total", "rfm_segment_changes_total", "rfm_churn_alerts_total"):
        assert () in found[name], name
    assert "rfm_batch_duration_seconds_count" in found
    assert "rfm_batch_events_bucket" in found
    assert len(found["rfm_model_info"]) == 1

    counts = segment_counts(settings)
    sizes = found["rfm_segment_customers"]
    for dimension, names in counts.items():
        for name, n in names.items():
            assert sizes[(("dimension", dimension), ("segment", name))] == n

    def caught_up() -> Any:
        lag = metrics(served).get("rfm_consumer_lag", {})
        topics = {dict(labels)["topic"] for labels in lag}
        done = settings.topics.purchases in topics and all(v == 0 for v in lag.values())
        return lag if done else None

    served.wait_for(caught_up, "consumer lag 0 on every consumed partition", timeout=60)


if __name__ == "__main__":
    serve()
