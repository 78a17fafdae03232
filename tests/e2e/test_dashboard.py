"""The dashboard in a real browser, over the whole pipeline.

A worker (the one tests/integration/test_web.py runs) with an API token consumes a
synthetic year of purchases replayed into Kafka, then a silent week: customers are
classified, the true friends who stopped buying drift, Redis fills up. Headless Chromium
opens the dashboard with ``?token=`` and must show the same segment counts as the API; a
screenshot is kept in ``tests/artifacts/`` (gitignored) for a human to look at.

``./dev test`` installs Debian's Chromium when none is found, and without one the tests fail
there (a skip would hide that the dashboard went untested); a bare ``pytest`` skips, saying
how to get one (see ``tests.conftest.missing_tool``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import Settings
from streams.domain.facts import MS_PER_DAY
from streams.domain.rules import load_rules
from streams.tools.replay import plan, produce
from tests.conftest import missing_tool
from tests.integration.conftest import REPO_ROOT, run_id, settings, stack  # noqa: F401
from tests.integration.test_web import Served, free_port, web_worker

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(300)]

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
TOKEN = "e2e-token-52b0"
END = datetime(2026, 6, 30, tzinfo=UTC)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REPLAY_SECONDS = 15.0  # the year is spread over this long, so the chart has a shape


@pytest.fixture(scope="module")
def browser() -> str:
    """The browser to drive, or a failure (a skip outside the test command) that says how to
    get one, before any worker starts."""
    configured = os.environ.get("RFM_CHROMIUM")
    found = configured or next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if not found:
        how = (
            "install Debian's with `apt-get install -y chromium` (as root; `./dev test` does "
            "it when it can), or point RFM_CHROMIUM at a Chromium/Chrome binary"
        )
        missing_tool("a headless Chromium", how)
    return found


def synthetic_log(seed: int = 7) -> list[bytes]:
    """A year of purchases by five kinds of customer (every quadrant gets someone).

    Regulars buy every two weeks all year; "drifters" buy like regulars and then stop two
    or three months before the end (the true friends who drift); big spenders buy once or twice;
    "barnacles" buy often and little; strangers buy once, a little.
    """
    rng = random.Random(seed)
    start = END - timedelta(days=365)
    lines: list[bytes] = []

    def buy(customer: str, at: datetime, amount: float) -> None:
        n = len(lines) + 1
        event = {
            "schema_version": 1,
            "type": "purchase",
            "event_id": f"e2e-e{n}",
            "customer_id": customer,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "order_id": f"e2e-o{n}",
            "amount": round(amount, 2),
            "currency": "USD",
        }
        lines.append(orjson.dumps(event))

    def every(customer: str, gap: float, until: datetime, low: float, high: float) -> None:
        at = start + timedelta(days=rng.uniform(0, 40))
        while at < until:
            buy(customer, at, rng.uniform(low, high))
            at += timedelta(days=max(2.0, rng.gauss(gap, gap / 5)))

    for i in range(16):
        every(f"regular-{i:02d}", 14, END, 60, 180)
    for i in range(9):
        every(f"drifter-{i:02d}", 12, END - timedelta(days=rng.uniform(45, 90)), 80, 200)
    for i in range(10):
        first = start + timedelta(days=rng.uniform(150, 360))
        buy(f"bigspender-{i:02d}", first, rng.uniform(400, 900))
        if i % 2:
            buy(f"bigspender-{i:02d}", first + timedelta(days=3), rng.uniform(300, 600))
    for i in range(10):
        every(f"barnacle-{i:02d}", 9, END, 1, 3.5)  # about $80 a year: below the median
    for i in range(14):
        buy(f"stranger-{i:02d}", start + timedelta(days=rng.uniform(0, 360)), rng.uniform(8, 30))
    return lines


class DashboardDom(HTMLParser):
    """What the rendered page shows: quadrant tiles, RFM bars, alerts, page state."""

    def __init__(self) -> None:
        super().__init__()
        self.quadrants: dict[str, int] = {}
        self.segments: dict[str, int] = {}
        self.alert_ids: list[str] = []
        self.drifting_ids: list[str] = []
        self.total: int | None = None
        self.lift_rows: list[tuple[str, str, int, int]] = []
        self.state: str | None = None
        self._tile: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "body":
            self.state = a.get("data-state")
        if "data-quadrant" in a:
            self._tile = a["data-quadrant"]
        if "count" in classes and self._tile is not None:
            self.quadrants[self._tile] = int(a["data-count"])
            self._tile = None
        if "data-segment" in a:
            self.segments[a["data-segment"]] = int(a["data-count"])
        if "data-alert-id" in a:
            self.alert_ids.append(a["data-alert-id"])
            if "drifting" in classes:
                self.drifting_ids.append(a["data-alert-id"])
        if "data-lift-offer" in a:
            self.lift_rows.append(
                (
                    a["data-lift-offer"],
                    a["data-lift-quadrant"],
                    int(a["data-treated"]),
                    int(a["data-holdout"]),
                )
            )
        if a.get("id") == "total" and a.get("data-count"):
            self.total = int(a["data-count"])


def browse(browser: str, url: str, profile_dir: Path, *extra: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{browser} failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings,  # noqa: F811
    run_id: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """A worker that has consumed the synthetic year and a silent week; views settled."""
    own = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.e2e.",
            "redis_prefix": f"{run_id}:e2e:",
            "app_id": f"{run_id}-e2e",
            "data_dir": str(tmp_path_factory.mktemp("e2e-worker")),
            "web_port": free_port(),
        }
    )
    log_path = Path(own.data_dir) / "worker.log"
    with web_worker(own, log_path, token=TOKEN, sample_seconds=1.0) as served:
        lateness = load_rules().allowed_lateness_ms
        end_ms = int(END.timestamp() * 1000)
        planned = plan(synthetic_log(), own, "jsonl", end_tick_ms=end_ms, lateness_ms=lateness)
        produce(planned, own, speed=365 * 86_400 / REPLAY_SECONDS)
        for days in (3, 7):  # a week with no purchase at all: time alone moves customers
            produce(plan([], own, end_tick_ms=end_ms + days * MS_PER_DAY), own)
        settled(served)
        yield served


def settled(served: Served, quiet_s: float = 4.0) -> None:
    """Wait until the counts and alerts stop changing (the views agent has caught up)."""
    import time

    last: Any = None
    since = time.monotonic()

    def steady() -> bool | None:
        nonlocal last, since
        now = (served.api("/api/segments")["dimensions"], served.api("/api/alerts/recent")["count"])
        if now != last:
            last, since = now, time.monotonic()
            return None
        return True if time.monotonic() - since >= quiet_s and now[0]["quadrant"] else None

    served.wait_for(steady, "segment counts to settle", timeout=120)


def test_dashboard_shows_the_api_counts(browser: str, pipeline: Served, tmp_path: Path) -> None:
    url = f"{pipeline.base_url}/?token={TOKEN}"
    before = pipeline.api("/api/segments")["dimensions"]
    alerts = pipeline.api("/api/alerts/recent?limit=30")["alerts"]
    lift = pipeline.api("/api/lift")["rows"]

    dom = DashboardDom()
    dom.feed(browse(browser, url, tmp_path / "profile-dom", "--dump-dom"))
    after = pipeline.api("/api/segments")["dimensions"]
    assert lift == pipeline.api("/api/lift")["rows"], "the lift moved while the browser read it"
    assert before == after, "the counts moved while the browser read them"

    assert dom.state == "live", f"the page is {dom.state!r}, not live (token not sent?)"
    quadrants = after["quadrant"]
    assert dom.quadrants == {q: quadrants.get(q, 0) for q in dom.quadrants}
    assert set(dom.quadrants) == {"true_friend", "butterfly", "barnacle", "stranger"}
    assert dom.segments == after["rfm_segment"]
    assert dom.total == sum(quadrants.values())
    assert dom.alert_ids == [a["id"] for a in alerts]
    assert dom.drifting_ids == [a["id"] for a in alerts if a["true_friend_drifting"]]
    assert dom.drifting_ids, "the synthetic drifters should raise true-friend alerts"
    # the lift panel: one row per strategy and the overall one, as the API says
    shown = [r for r in lift if r["offer_code"] != "*" or r["quadrant"] == "*"]
    assert dom.lift_rows == [
        (r["offer_code"], r["quadrant"], r["treated"]["outcomes"], r["holdout"]["outcomes"])
        for r in shown
    ]
    assert dom.lift_rows, "the regulars' recognition offers should have closed outcomes"
    assert dom.lift_rows[-1][:2] == ("*", "*")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    browse(browser, url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"\ndashboard screenshot: {shot}")


def test_dashboard_can_open_on_the_drifting_true_friends(
    browser: str, pipeline: Served, tmp_path: Path
) -> None:
    alerts = pipeline.api("/api/alerts/recent?limit=30")["alerts"]
    url = f"{pipeline.base_url}/?alerts=drifting&token={TOKEN}"
    dom = DashboardDom()
    dom.feed(browse(browser, url, tmp_path / "profile", "--dump-dom"))
    assert dom.state == "live"
    assert dom.alert_ids == [a["id"] for a in alerts if a["true_friend_drifting"]]
    assert dom.alert_ids == dom.drifting_ids


def test_dashboard_without_the_token_says_so(
    browser: str, pipeline: Served, tmp_path: Path
) -> None:
    dom = DashboardDom()
    dom.feed(browse(browser, pipeline.base_url + "/", tmp_path / "profile", "--dump-dom"))
    assert dom.state == "auth"
    assert dom.quadrants == {}
