"""The demo: a worker, the bundled sample log replayed live, outputs shown as they happen.

It uses its own topic prefix, app id and Redis prefix per run (``demo<timestamp>.``), so it
can run again and again on the same local stack without seeing an earlier run's records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import orjson
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from schemas import ChurnAlert, DeadLetter, RetentionOffer, SegmentChange, parse_output
from streams.config import Settings, load_rule_book
from streams.domain.facts import MS_PER_DAY
from streams.security import redis_options, security_env
from streams.tools.replay import plan, produce, read_lines
from streams.worker.topics import ensure_topics

QUIET_S = 6.0  # no new output for this long after the last tick: the demo is done
READY_TIMEOUT_S = 180.0  # a cold worker on a busy machine


def sample_log() -> Path:
    return Path(str(resources.files("streams.data").joinpath("sample.jsonl")))


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RFM_REDIS_URL": settings.redis_url,
            "RFM_TOPIC_PREFIX": settings.topic_prefix,
            "RFM_REDIS_PREFIX": settings.redis_prefix,
            "RFM_APP_ID": settings.app_id,
            "RFM_DATA_DIR": settings.data_dir,
            "RFM_WEB_PORT": str(settings.web_port),
            "RFM_LIVE_CLOCK": "false",
            "RFM_PARTITIONS": str(settings.partitions),
        }
    )
    env.update(security_env(settings))  # TLS / SASL / Redis AUTH, as the demo connects
    return env


def _describe(event: object) -> tuple[str, str] | None:
    """A one-line story of an output, and its colour."""
    if isinstance(event, SegmentChange):
        when = event.event_time.date().isoformat()
        arrow = f"{event.from_value or '—'} → {event.to_value}"
        style = "bold green" if event.to_value == "true_friend" else "cyan"
        return (
            f"{when}  {event.customer_id:<14} {event.dimension:<11} {arrow}  ({event.cause})",
            style,
        )
    if isinstance(event, ChurnAlert):
        when = event.event_time.date().isoformat()
        flag = "  TRUE FRIEND DRIFTING" if event.true_friend_drifting else ""
        style = "bold red" if event.true_friend_drifting else "yellow"
        return (
            f"{when}  {event.customer_id:<14} churn {event.severity:<8} "
            f"P(alive) {event.p_alive:.2f}, {event.elapsed_days:.0f} days since last purchase "
            f"(usual gap {event.typical_gap_days or 0:.0f}){flag}",
            style,
        )
    if isinstance(event, RetentionOffer) and event.decision == "offer":
        when = event.event_time.date().isoformat()
        return (
            f"{when}  {event.customer_id:<14} offer {event.offer_code} ({event.reason})",
            "magenta",
        )
    return None


def _follow(
    settings: Settings, stop: threading.Event, on_event: Callable[[str, object], None]
) -> None:
    topics = [
        settings.topics.segment_changes,
        settings.topics.churn_alerts,
        settings.topics.retention_offers,
        settings.topics.dead_letters,
        settings.topics.profiles,
    ]
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **settings.kafka_client_options(),
    )
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=300).values():
                for r in records:
                    if r.topic == settings.topics.profiles:
                        on_event(r.topic, orjson.loads(r.value))
                    else:
                        on_event(r.topic, parse_output(r.value))
    finally:
        consumer.close()


def run_demo(
    base: Settings, console: Console, log_path: Path | None = None, speed: float = 0.0
) -> int:
    """Run the whole demo; returns a process exit code."""
    stamp = time.strftime("%Y%m%d%H%M%S")
    settings = base.model_copy(
        update={
            "topic_prefix": f"demo{stamp}.",
            "app_id": f"rfm-demo-{stamp}",
            "redis_prefix": f"demo{stamp}:",
            "data_dir": f".local/demo/{stamp}",
            "live_clock": False,
        }
    )
    log_path = log_path or sample_log()
    lines = read_lines(log_path)
    lateness_ms = load_rule_book(settings).allowed_lateness_ms
    planned = plan(lines, settings, "jsonl", order="delivery", lateness_ms=lateness_ms)
    last_ms = max(p.at_ms for p in planned if p.at_ms is not None)
    ticks = plan([], settings, end_tick_ms=last_ms + 60 * MS_PER_DAY)
    console.rule(f"rfm-stream demo — {log_path.name}: {len(lines):,} events")
    console.print(f"topics {settings.topic_prefix}*  ·  Redis keys {settings.redis_prefix}*")
    ensure_topics(settings)
    log_file = Path(settings.data_dir) / "worker.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=_env(settings),
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )
    counts: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    last_output = [time.monotonic()]

    newest_profile: dict[str, int] = {}

    def on_event(topic: str, event: object) -> None:
        last_output[0] = time.monotonic()
        if isinstance(event, dict):  # a profile update: what Redis must catch up with
            p = event["profile"]
            newest_profile[p["customer_id"]] = max(
                p["at_ms"], newest_profile.get(p["customer_id"], 0)
            )
            return
        counts[type(event).__name__] += 1
        if isinstance(event, DeadLetter):
            dead[str(event.reason_code)] += 1
            return
        line = _describe(event)
        if line is not None:
            console.print(line[0], style=line[1], highlight=False)

    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(settings, stop, on_event), daemon=True)
    follower.start()
    snapshots: list[dict[tuple[str, str], int]] = []
    try:
        console.print(f"worker started (log: {log_file}); waiting until it is ready…")
        if not _wait_ready(settings, worker, console, log_file):
            return 1
        console.print("replaying…")
        produce(planned, settings, speed=speed)
        last_output[0] = max(last_output[0], time.monotonic())  # quiet counts from here
        if not _settle(worker, last_output, console, log_file):
            return 1
        _wait_for_views(settings, newest_profile, console)
        snapshots.append(_counts(settings))
        console.rule("[bold]log replayed; now 60 days pass with no new event[/bold]")
        produce(ticks, settings)
        last_output[0] = max(last_output[0], time.monotonic())
        if not _settle(worker, last_output, console, log_file):
            return 1
        _wait_for_views(settings, newest_profile, console)
        snapshots.append(_counts(settings))
    finally:
        stop.set()
        follower.join(timeout=5)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    _summary(console, snapshots, counts, dead)
    return 0


def _wait_ready(
    settings: Settings, worker: subprocess.Popen[bytes], console: Console, log_file: Path
) -> bool:
    """Wait until the worker's /ready answers 200 (consuming, Redis up); False if it died.

    Replaying before the worker consumes would let ``_settle`` see the silence of a worker
    still starting as the end of the run, and the demo would end with nothing to show.
    """
    import urllib.request

    host = "127.0.0.1" if settings.web_host in ("", "0.0.0.0") else settings.web_host
    url = f"http://{host}:{settings.web_port}/ready"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            console.print(f"[red]the worker stopped (exit {worker.returncode}); see {log_file}")
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:  # not listening yet, or 503 (HTTPError) while it starts
            pass
        time.sleep(0.5)
    console.print(f"[red]the worker was not ready after {READY_TIMEOUT_S:.0f} s; see {log_file}")
    return False


def _settle(
    worker: subprocess.Popen[bytes], last_output: list[float], console: Console, log_file: Path
) -> bool:
    """Wait until no output has arrived for a while; False if the worker died."""
    time.sleep(1.0)
    while time.monotonic() - last_output[0] < QUIET_S:
        if worker.poll() is not None:
            console.print(f"[red]the worker stopped (exit {worker.returncode}); see {log_file}")
            return False
        time.sleep(0.5)
    return True


def _counts(settings: Settings) -> dict[tuple[str, str], int]:
    """Customers per (dimension, segment) from the Redis audiences, now."""
    import redis

    client = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, **redis_options(settings)
    )
    prefix = settings.redis_prefix
    sizes: dict[tuple[str, str], int] = {}
    for member in client.smembers(f"{prefix}audiences"):
        dimension, _, name = str(member).partition(":")
        sizes[(dimension, name)] = int(client.scard(f"{prefix}audience:{dimension}:{name}"))
    client.close()
    return sizes


def _wait_for_views(settings: Settings, newest: dict[str, int], console: Console) -> None:
    """Redis views are written by their own agent: wait until they show the newest profiles."""
    import redis

    client = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, **redis_options(settings)
    )
    deadline = time.monotonic() + 30
    behind = len(newest)
    while time.monotonic() < deadline:
        behind = 0
        for customer_id, at_ms in newest.items():
            stored = client.hget(f"{settings.redis_prefix}profile:{customer_id}", "at_ms")
            if stored is None or int(stored) < at_ms:
                behind += 1
        if not behind:
            return
        time.sleep(0.5)
    console.print(f"[yellow]{behind} Redis profiles still behind after 30 s[/yellow]")


def _summary(
    console: Console,
    snapshots: list[dict[tuple[str, str], int]],
    counts: Counter[str],
    dead: Counter[str],
) -> None:
    if len(snapshots) == 2:
        at_end, later = snapshots
        table = Table(title="customers per segment (Redis audiences)")
        table.add_column("dimension")
        table.add_column("segment")
        table.add_column("end of log", justify="right")
        table.add_column("+60 silent days", justify="right")
        keys = sorted(
            {k for k in at_end | later if at_end.get(k) or later.get(k)},
            key=lambda k: (k[0] != "quadrant", -at_end.get(k, 0), k[1]),
        )
        for dimension, name in keys:
            before, after = at_end.get((dimension, name), 0), later.get((dimension, name), 0)
            style = "bold red" if name == "true_friend" and after < before else None
            table.add_row(dimension, name, str(before), str(after), style=style)
        console.print(table)
    outputs = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    console.print(f"outputs: {outputs or 'none'}")
    if dead:
        console.print("dead letters: " + ", ".join(f"{n} {k}" for k, n in sorted(dead.items())))
