"""Helpers for the topology tests: real workers, output collection, the reference, comparison.

The topology tests run ``rfm-stream worker`` as a subprocess against the real broker, produce a
log with :func:`streams.tools.replay.produce`, read the output topics back, and compare them with
:func:`streams.tools.reference.run_reference` over the same plan (the pure Processor without
Kafka or Faust). The comparison is by output id: nothing missing, nothing unexpected, and a
repeated id (a redelivery after a crash) only with byte-identical content.

The reading and comparison logic lives in :mod:`streams.tools.verify` (the product's verifier, which
also checks retention offers and the final state); the names are re-exported here. Tests that
only need the Processor's own outputs compare :func:`compared_topics`: dead letters, segment
changes and churn alerts.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson
import pytest
from kafka import KafkaAdminClient

from schemas import OutputEvent
from streams.config import Settings
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.processor import TICK_HEADER, OutRecord, tick_record
from streams.tools.reference import ReferenceRun, run_reference
from streams.tools.replay import Planned, as_consumed, produce
from streams.tools.verify import Comparison as Comparison
from streams.tools.verify import Out as Out
from streams.tools.verify import OutputReader as OutputReader
from streams.tools.verify import compare as compare
from streams.tools.verify import compared_topics as compared_topics
from streams.tools.verify import outs_of as verify_outs_of
from streams.tools.verify import read_inputs as read_inputs
from streams.tools.verify import read_table_states as read_table_states
from tests.integration.conftest import REPO_ROOT, settings_env

# A SIGKILLed worker stays a member of its consumer group until its session times out, and no
# one (its replacement included) gets its partitions before that: Faust's default is 60 s.
# Faust reads these variables from the environment; 6 s is the broker's minimum session.
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}

T = TypeVar("T")

READY_LINE = "Worker ready"  # Faust, after the recovery that follows each assignment
ASSIGNED_LINE = "Executing _on_partitions_assigned"
LOG_TAIL_LINES = 60


# --------------------------------------------------------------------------- outputs


def collect(
    settings: Settings,
    topics: Sequence[str],
    until: Callable[[list[Out]], bool],
    timeout: float,
    *,
    settle: float = 1.0,
    idle: float | None = None,
    alive: Callable[[], None] | None = None,
) -> list[Out]:
    """Read ``topics`` from the beginning until ``until(records)`` holds or ``timeout`` passes.

    Once the predicate holds it keeps reading for ``settle`` seconds (and to the end offsets),
    so records that should not be there are seen too. On timeout, or after ``idle`` seconds
    without a new record, it returns what it has: the comparison then says what is missing.
    ``alive`` is called on every round (e.g. :meth:`WorkerProcess.check_alive`) to fail early
    when a worker died.
    """
    with OutputReader(settings, topics) as reader:
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while not until(reader.records) and time.monotonic() < deadline:
            if alive is not None:
                alive()
            if reader.poll(timeout_ms=250):
                last_new = time.monotonic()
            elif idle is not None and time.monotonic() - last_new > idle:
                break
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            reader.poll(timeout_ms=100)
        reader.read_to_end()
        return reader.records


def collect_expected(
    settings: Settings,
    expected: Sequence[Out],
    timeout: float = 90.0,
    *,
    idle: float = 20.0,
    alive: Callable[[], None] | None = None,
) -> list[Out]:
    """:func:`collect` on the compared topics until every expected id has been read.

    Gives up after ``idle`` seconds without any new output (a worker that stopped producing
    will not catch up), so a broken topology fails in seconds rather than at the timeout.
    """
    return collect(
        settings, compared_topics(settings), ids_seen(expected), timeout, idle=idle, alive=alive
    )


def ids_seen(expected: Iterable[Out]) -> Callable[[list[Out]], bool]:
    """A predicate for :func:`collect`: every expected id has been read."""
    wanted = {o.id for o in expected}

    def check(records: list[Out]) -> bool:
        return wanted <= {r.id for r in records}

    return check


# --------------------------------------------------------------------------- expectations


def reference(
    settings: Settings, rules: Rules, model: Model, planned: Sequence[Planned]
) -> ReferenceRun:
    """The pure Processor over the plan, with the offsets fresh topics will give."""
    return run_reference(settings, rules, model, as_consumed(list(planned)))


def outs_of(settings: Settings, records: Iterable[OutRecord]) -> list[Out]:
    """The reference's records of the compared topics."""
    return verify_outs_of(records, compared_topics(settings))


def expected_outputs(
    settings: Settings, rules: Rules, model: Model, planned: Sequence[Planned]
) -> list[Out]:
    """What the worker must publish for ``planned`` on the compared topics."""
    return outs_of(settings, reference(settings, rules, model, planned).outputs)


def tick_plan(settings: Settings, at: datetime) -> list[Planned]:
    """The records ``rfm-stream tick AT`` produces: one clock tick per purchase partition."""
    at_ms = int(at.timestamp() * 1000)
    planned = []
    for p in range(settings.partitions):
        t = tick_record(settings.topics.purchases, p, at_ms)
        planned.append(Planned(t.topic, p, t.key, t.value, at_ms, ((TICK_HEADER, b"1"),)))
    return planned


# --------------------------------------------------------------------------- comparison


def assert_same_outputs(expected: Sequence[Out], actual: Sequence[Out], what: str = "") -> None:
    result = compare(expected, actual)
    if not result.ok:
        pytest.fail(f"{what}: outputs differ from the reference\n{result.report()}", pytrace=False)


def last_output_per_customer(outs: Iterable[Out]) -> dict[str, OutputEvent]:
    """The customer's profile output with the highest sequence number (ids are customer:seq).

    Offer outcomes are left out: their id is ``outcome:<trigger id>``, so the number in it is
    the trigger's, the same as a profile output's, and which of the two came last depended on
    the order they were read in.
    """
    best: dict[str, tuple[int, OutputEvent]] = {}
    for o in outs:
        event = o.event
        if event.type == "dead_letter" or event.type == "offer_outcome":
            continue
        seq = int(o.id.rsplit(":", 1)[1])
        if event.customer_id not in best or seq > best[event.customer_id][0]:
            best[event.customer_id] = (seq, event)
    return {c: e for c, (_, e) in best.items()}


# --------------------------------------------------------------------------- workers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """``python -m streams.cli worker`` as a subprocess, configured by the test's settings.

    Replay mode (``RFM_LIVE_CLOCK=false``), its own data directory and a free web port; stdout
    and stderr go to ``log_path``. Use as a context manager: the process is always ended.
    Restart a killed worker with a new :class:`WorkerProcess` on the same ``data_dir``.
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        name: str = "worker",
        *,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.data_dir = data_dir or workdir / f"{name}-data"
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.web_port = 0

    def start(self) -> WorkerProcess:
        self.web_port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **settings_env(self.settings),
            "RFM_LIVE_CLOCK": "false",
            "RFM_DATA_DIR": str(self.data_dir),
            "RFM_WEB_PORT": str(self.web_port),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        noise = ("kafka.net.", "kafka.cluster ", "kafka.conn")
        kept = [line for line in self.log_text().splitlines() if not any(n in line for n in noise)]
        return "\n".join(kept[-lines:])

    def check_alive(self) -> None:
        """Fail the test with the log tail if the worker has exited."""
        assert self.process is not None, "worker not started"
        code = self.process.poll()
        if code is not None:
            pytest.fail(
                f"{self.name} exited with {code}; log {self.log_path}:\n{self.log_tail()}",
                pytrace=False,
            )

    def is_ready(self) -> bool:
        """Faust said "Worker ready" after its latest partition assignment (and recovery)."""
        text = self.log_text()
        ready = text.rfind(READY_LINE)
        return ready >= 0 and ready > text.rfind(ASSIGNED_LINE)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name} not ready after {timeout:.0f} s; log {self.log_path}:\n"
                    f"{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.2)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait (SIGKILL if it does not end in time). Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            # also when the wait is interrupted (a test timeout): never leave a worker behind
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def rss_mb(self) -> float | None:
        """Resident memory of the worker process (VmRSS), None once it has exited."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples on the worker's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def __enter__(self) -> WorkerProcess:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PacedProducer(threading.Thread):
    """Produces a plan in chunks with pauses, so that faults can land in the middle of it.

    With ``hold_at=N`` it stops after N chunks until :meth:`release`: the rest of the log is
    held back until the fault (an outage, a worker joining) has happened, so the fault lands
    mid-stream by construction rather than by a race between sleeps.
    """

    def __init__(
        self,
        planned: Sequence[Planned],
        settings: Settings,
        *,
        chunks: int = 20,
        pause: float = 0.4,
        hold_at: int | None = None,
    ) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.planned = list(planned)
        self.settings = settings
        self.chunk_count = chunks
        self.pause = pause
        self.hold_at = hold_at
        self.released = threading.Event()
        self.holding = threading.Event()
        self.error: BaseException | None = None
        self.produced = 0
        self.chunks = 0

    def run(self) -> None:
        try:
            size = -(-len(self.planned) // self.chunk_count)
            for start in range(0, len(self.planned), size):
                if self.chunks == self.hold_at:
                    self.holding.set()
                    self.released.wait()
                self.produced += produce(self.planned[start : start + size], self.settings)
                self.chunks += 1
                time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc

    def release(self) -> None:
        """Let the held-back rest of the log flow."""
        self.released.set()

    def finish(self, timeout: float = 90.0) -> None:
        self.release()
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error
        assert self.produced == len(self.planned)


def wait_for_workers(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *workers: WorkerProcess,
    interval: float = 0.3,
) -> T:
    """Poll ``probe`` until it returns a value; on timeout fail with the workers' log tails."""
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            w.check_alive()
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name} ({w.log_path}):\n{w.log_tail(25)}" for w in workers)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}", False)
        time.sleep(interval)


def group_assignment(settings: Settings, topic: str) -> list[set[int]] | None:
    """Each member's partitions of ``topic`` in the worker group, as the broker has them.

    None while the group is not stable (joining, rebalancing, or gone).
    """
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-probe",
        **settings.kafka_client_options(),
    )
    quiet = logging.getLogger("kafka.admin._groups")  # cannot decode Faust's member metadata
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        described: Mapping[str, Any] = admin.describe_groups([settings.app_id])
    finally:
        quiet.setLevel(level)
        admin.close()
    group = described.get(settings.app_id) or {}
    if group.get("group_state") != "Stable":
        return None
    members = []
    for member in group.get("members") or ():
        assignment = member.get("member_assignment") or {}
        partitions: set[int] = set()
        for entry in assignment.get("assigned_partitions") or ():
            if entry.get("topic") == topic:
                partitions |= set(entry.get("partitions") or ())
        members.append(partitions)
    return members


def is_split(assignment: list[set[int]] | None, members: int, partitions: int) -> bool:
    """Every member has some partitions, none has another's, and together they have all."""
    if assignment is None or len(assignment) != members or not all(assignment):
        return False
    return sum(len(a) for a in assignment) == partitions == len(set().union(*assignment))


def run_cli(settings: Settings, *args: str, timeout: float = 60.0) -> str:
    """Run ``rfm-stream ARGS`` with the settings' environment; fail with its output."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"rfm-stream {' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}",
            pytrace=False,
        )
    return done.stdout + done.stderr


# --------------------------------------------------------------------------- logs


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class LogBuilder:
    """JSON lines in the replay format (see :mod:`streams.tools.replay`)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def purchase(
        self,
        event_id: str,
        customer: str,
        at: datetime | str,
        amount: str,
        *,
        currency: str = "USD",
        order_id: str | None = None,
        **extra: Any,
    ) -> bytes:
        line = orjson.dumps(
            {
                "event_id": event_id,
                "customer_id": customer,
                "occurred_at": at if isinstance(at, str) else iso(at),
                "order_id": order_id or f"o-{event_id}",
                "amount": amount,
                "currency": currency,
                **extra,
            }
        )
        self.lines.append(line)
        return line

    def refund(
        self, event_id: str, customer: str, at: datetime, amount: str, order_id: str
    ) -> bytes:
        return self.purchase(event_id, customer, at, amount, order_id=order_id, type="refund")

    def interaction(
        self, event_id: str, customer: str, at: datetime, kind: str = "page_view"
    ) -> bytes:
        line = orjson.dumps(
            {"event_id": event_id, "customer_id": customer, "occurred_at": iso(at), "type": kind}
        )
        self.lines.append(line)
        return line

    def raw(self, line: bytes) -> bytes:
        self.lines.append(line)
        return line

    def envelope(self, topic: str, key: str, value: str | dict[str, Any]) -> bytes:
        return self.raw(orjson.dumps({"topic": topic, "key": key, "value": value}))


# The small log: a few customers whose behaviour is known.
# In the past (inputs more than a day ahead of the worker's wall clock are refused).
SMALL_T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
TRUE_FRIEND = "ann"  # $300 every 14 days for 8 months, then silent
TRUE_FRIEND_PURCHASES = 18
ONE_OFF = "bob"  # one $15 order
REFUNDER = "cat"  # two orders, the second refunded in full
DUPLICATOR = "dan"  # the same event id sent twice
LATECOMER = "eve"  # invalid events first, then one valid order
TRUE_FRIEND_LAST = SMALL_T0 + timedelta(days=14 * (TRUE_FRIEND_PURCHASES - 1))


@dataclass(frozen=True)
class Invalid:
    """An invalid input line of the small log and the dead letter it must give."""

    line: bytes
    reason_code: str
    reason_contains: str


def small_log() -> tuple[list[bytes], list[Invalid]]:
    """The small deterministic log (valid and invalid lines) and its invalid lines."""
    b = LogBuilder()
    t0 = SMALL_T0
    for i in range(TRUE_FRIEND_PURCHASES):
        b.interaction(f"ann-v{i}", TRUE_FRIEND, t0 + timedelta(days=14 * i, hours=-1))
        b.purchase(f"ann-{i}", TRUE_FRIEND, t0 + timedelta(days=14 * i), "300.00")
    b.purchase("bob-1", ONE_OFF, t0 + timedelta(days=30), "15.00")
    b.interaction("bob-v1", ONE_OFF, t0 + timedelta(days=31), "email_open")
    b.purchase("cat-1", REFUNDER, t0 + timedelta(days=40), "200.00")
    b.purchase("cat-2", REFUNDER, t0 + timedelta(days=70), "120.00")
    b.refund("cat-r2", REFUNDER, t0 + timedelta(days=75), "120.00", order_id="o-cat-2")
    b.purchase("dan-1", DUPLICATOR, t0 + timedelta(days=100), "50.00")
    b.purchase("dan-1", DUPLICATOR, t0 + timedelta(days=100), "50.00")  # a retry: same id

    invalid: list[Invalid] = []
    # eve's invalid records are keyed "eve": they share a partition with her valid order, which
    # comes after them.
    when = t0 + timedelta(days=150)
    invalid.append(
        Invalid(
            b.envelope("purchases", LATECOMER, "{this is not json"),
            "invalid_json",
            "not valid JSON",
        )
    )
    naive = when.replace(tzinfo=None).isoformat()  # no offset: refused
    invalid.append(
        Invalid(
            b.purchase("eve-naive", LATECOMER, naive, "10.00"),
            "invalid_event",
            "no timezone offset",
        )
    )
    invalid.append(
        Invalid(
            b.purchase("eve-eur", LATECOMER, when + timedelta(hours=1), "25.00", currency="EUR"),
            "invalid_event",
            "currency EUR is not the reporting currency",
        )
    )
    invalid.append(
        Invalid(
            b.purchase("eve-v2", LATECOMER, when + timedelta(hours=2), "25.00", schema_version=2),
            "unsupported_schema_version",
            "schema_version 2",
        )
    )
    invalid.append(
        Invalid(
            b.envelope("interactions", LATECOMER, '{"event_id": "eve-cut'),
            "invalid_json",
            "not valid JSON",
        )
    )
    # A bare line that is not JSON at all: replay sends it to purchases, keyed by its content.
    invalid.append(Invalid(b.raw(b"<html>502 Bad Gateway</html>"), "invalid_json", "JSON"))
    b.purchase("eve-1", LATECOMER, when + timedelta(days=1), "40.00")
    return b.lines, invalid


def large_log(customers: int = 200, seed: int = 20260105) -> list[bytes]:
    """A deterministic log of a few thousand events over ``customers`` customers.

    Regular, occasional and one-off buyers, some who stop, interactions, refunds, and a few
    retried (duplicate) events.
    """
    rng = random.Random(seed)
    b = LogBuilder()
    start = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
    end = start + timedelta(days=300)
    for c in range(customers):
        cid = f"c{c:03d}"
        kind = rng.choice(("regular", "regular", "occasional", "one_off", "stopper"))
        at = start + timedelta(days=rng.uniform(0, 90), seconds=rng.randrange(86_400))
        stop = end
        if kind == "stopper":
            stop = at + timedelta(days=rng.uniform(60, 180))
        gap = {"regular": (5, 20), "occasional": (25, 70), "one_off": (0, 0), "stopper": (6, 15)}[
            kind
        ]
        n = 0
        while at < stop:
            n += 1
            eid = f"{cid}-{n}"
            amount = f"{rng.choice((9, 19, 35, 60, 120, 250, 480))}.{rng.randrange(100):02d}"
            line = b.purchase(eid, cid, at, amount)
            if rng.random() < 0.03:
                b.raw(line)  # a producer retry
            if rng.random() < 0.05:
                b.refund(
                    f"{eid}-r", cid, at + timedelta(days=rng.uniform(1, 10)), amount, f"o-{eid}"
                )
            for k in range(rng.randrange(3)):
                b.interaction(f"{eid}-v{k}", cid, at - timedelta(hours=rng.uniform(0.1, 48)))
            if kind == "one_off":
                break
            at += timedelta(days=rng.uniform(*gap), seconds=rng.randrange(3600))
    return b.lines
