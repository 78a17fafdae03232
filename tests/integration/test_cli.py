"""Every ``rfm-stream`` command, end to end: a subprocess against the real Kafka and Redis.

Each command runs as the installed console script (``.venv/bin/rfm-stream``; ``run_cli``'s
``python -m streams.cli`` where a run only has to succeed) with the test's settings in its
environment, and each test checks what the command did where it did it: records read back
from the topics, keys in Redis, bytes in files, the exit code and what it said.

One worker serves the module (``live``, with names of its own like ``isolated_settings``
gives): it consumes the small log, replayed with ``rfm-stream replay`` and moved 60 days on
with ``rfm-stream tick``, and ``inspect``, ``segments`` and ``calibrate`` then run against
what it wrote. ``rfm-stream demo`` starts alongside it and is checked last: both spend most of
their time waiting. The tests that need no worker use ``isolated_settings``; the quick failure
paths (a closed port, bad usage) run at the same time in one batch, so the module stays short.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient
from typer.testing import CliRunner

from schemas import ChurnAlert, SegmentChange
from streams.cli import app
from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.tools.personas import PersonaConfig
from streams.tools.personas import generate as personas_generate
from streams.tools.replay import as_consumed, plan, read_lines
from streams.worker.model_watch import load_current_model
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.integration.topology import (
    ONE_OFF,
    TRUE_FRIEND,
    TRUE_FRIEND_LAST,
    TRUE_FRIEND_PURCHASES,
    Out,
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    expected_outputs,
    free_port,
    iso,
    last_output_per_customer,
    read_inputs,
    read_table_states,
    run_cli,
    small_log,
    tick_plan,
    wait_for_workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()  # what a worker uses while no model has been published
COMMANDS = (
    "health",
    "worker",
    "replay",
    "tick",
    "calibrate",
    "generate",
    "quality",
    "demo",
    "inspect",
    "segments",
)
NOT_YET_HERE = {
    "verify": "added alongside this file (streams/tools/verify.py): its end-to-end test",
    "import": "tests/integration/test_import.py runs it end to end, then a live worker",
    "forget": "tests/integration/test_erasure.py erases through it and the DELETE route",
    "lift": "tests/integration/test_lift.py reads a worker's lift counters through it (--json)",
}
"""Commands registered but tested end to end elsewhere (--help is checked for every command)."""
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
CLI_TIMEOUT_S = 120.0
TICK_AT = TRUE_FRIEND_LAST + timedelta(days=60)  # the true friend has drifted by then
SCRIPT = Path(sys.executable).with_name("rfm-stream")  # the console script pip installed
# rich wraps at the terminal width, 80 columns in a pipe: ask for wide lines, and compare
# messages with their whitespace collapsed anyway
WIDE = {"COLUMNS": "200"}


# --------------------------------------------------------------------------- running it


@dataclass(frozen=True)
class Ran:
    """A finished ``rfm-stream`` run."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout and stderr with runs of whitespace collapsed (rich wraps long lines)."""
        return " ".join((self.stdout + "\n" + self.stderr).split())

    def why(self) -> str:
        return (
            f"rfm-stream {' '.join(self.args)} exited with {self.code}\n"
            f"--- stdout:\n{self.stdout[-3000:]}\n--- stderr:\n{self.stderr[-3000:]}"
        )


def cli_env(settings: Settings | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``run_cli`` gives the command (settings may be None: none needed)."""
    base = {**os.environ, **(settings_env(settings) if settings else {})}
    return {**base, "PYTHONPATH": str(REPO_ROOT), **WIDE, **(extra or {})}


def start(
    settings: Settings | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> tuple[tuple[str, ...], subprocess.Popen[str]]:
    if not SCRIPT.is_file():
        pytest.fail(f"no {SCRIPT}: install the project (`./dev setup`)", pytrace=False)
    process = subprocess.Popen(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=cli_env(settings, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return args, process


def finish(started: tuple[tuple[str, ...], subprocess.Popen[str]], timeout: float) -> Ran:
    args, process = started
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(
            f"rfm-stream {' '.join(args)} still running after {timeout:.0f} s\n{stdout}{stderr}",
            pytrace=False,
        )
    return Ran(args, process.returncode, stdout, stderr)


def cli(
    settings: Settings | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = CLI_TIMEOUT_S,
) -> Ran:
    """Run ``rfm-stream ARGS`` whatever its exit code (``run_cli`` when it must succeed)."""
    return finish(start(settings, *args, env=env, cwd=cwd), timeout)


def cli_batch(
    runs: Mapping[str, tuple[Settings | None, Sequence[str], Mapping[str, str]]],
    timeout: float = CLI_TIMEOUT_S,
) -> dict[str, Ran]:
    """Run several commands at the same time: name -> (settings, args, extra environment)."""
    started = {name: start(s, *args, env=env) for name, (s, args, env) in runs.items()}
    return {name: finish(run, timeout) for name, run in started.items()}


def closed_port() -> int:
    """A local TCP port with no listener (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """(status, body) of GET http://127.0.0.1:PORT/PATH; None while nothing listens.

    Sends the RFM_API_TOKEN the worker inherited from this environment, if any.
    """
    token = os.environ.get("RFM_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None


def write_log(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def audience_sizes(client: redis.Redis, prefix: str) -> dict[str, dict[str, int]]:
    """Customers per non-empty audience, read from the Redis keys themselves."""
    sizes: dict[str, dict[str, int]] = {}
    for member in client.smembers(f"{prefix}audiences"):
        dimension, _, name = str(member).partition(":")
        size = int(client.scard(f"{prefix}audience:{dimension}:{name}"))
        if size:
            sizes.setdefault(dimension, {})[name] = size
    return sizes


def nonzero(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {
        d: {n: c for n, c in sizes.items() if c}
        for d, sizes in counts.items()
        if any(sizes.values())
    }


# --------------------------------------------------------------------------- --help


def registered_commands() -> dict[str, str]:
    """Command name -> its docstring, as typer registered them."""
    found: dict[str, str] = {}
    for info in app.registered_commands:
        callback = info.callback
        assert callback is not None
        found[info.name or callback.__name__] = callback.__doc__ or ""
    return found


def test_the_tests_cover_every_command() -> None:
    registered = set(registered_commands())
    assert set(COMMANDS) <= registered, "a command is gone: drop its tests"
    untested = registered - set(COMMANDS) - set(NOT_YET_HERE)
    assert not untested, f"new commands without an end-to-end test here: {sorted(untested)}"


@pytest.fixture(scope="module")
def helps() -> dict[str, Ran]:
    """``rfm-stream --help`` (the console script), and ``rfm-stream COMMAND --help`` for every
    command (in this process: the same typer app, without ten more interpreter start-ups)."""
    helps = {"": cli(None, "--help")}
    runner = CliRunner()
    for command in registered_commands():
        result = runner.invoke(app, [command, "--help"], prog_name="rfm-stream", env=WIDE)
        helps[command] = Ran((command, "--help"), result.exit_code, result.stdout, "")
    return helps


def _description(command: str) -> str:
    """The command's docstring, whitespace collapsed, as --help must show it."""
    return " ".join(registered_commands()[command].split())


@pytest.mark.parametrize("command", sorted(registered_commands()))
def test_help_explains_the_command(helps: dict[str, Ran], command: str) -> None:
    ran = helps[command]
    assert ran.code == 0, ran.why()
    assert f"Usage: rfm-stream {command}" in ran.text
    description = _description(command)
    assert len(description.split()) >= 8, f"{command} explains nothing: {description!r}"
    assert description in ran.text, ran.text


def test_help_lists_every_command(helps: dict[str, Ran]) -> None:
    ran = helps[""]
    assert ran.code == 0, ran.why()
    assert "Real-time customer segmentation over Kafka" in ran.text
    for command in registered_commands():
        assert re.search(rf"\b{command}\b", ran.stdout), f"{command} is not listed"


# --------------------------------------------------------------------------- health, exit codes


def test_health_with_the_stack_up(isolated_settings: Settings) -> None:
    ran = cli(isolated_settings, "health")
    assert ran.code == 0, ran.why()
    kafka, redis_url = isolated_settings.kafka_bootstrap, isolated_settings.redis_url
    assert re.search(rf"kafka: ok at {re.escape(kafka)} \([1-9]\d* broker", ran.text), ran.why()
    assert f"redis: ok at {redis_url} (redis " in ran.text, ran.why()


@dataclass(frozen=True)
class Offline:
    """A run that must stop early with an exit code and a message."""

    args: tuple[str, ...]
    down: str | None  # "kafka" or "redis": pointed at a closed port
    code: int
    says: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


OFFLINE: dict[str, Offline] = {
    "health, kafka down": Offline(("health",), "kafka", EXIT_UNAVAILABLE, ()),
    "health, redis down": Offline(("health",), "redis", EXIT_UNAVAILABLE, ()),
    "segments, redis down": Offline(("segments",), "redis", EXIT_UNAVAILABLE, ()),
    "replay, no such file": Offline(
        ("replay", "{tmp}/missing.jsonl"), None, EXIT_USAGE, ("no such log file:",)
    ),
    "tick, not a time": Offline(("tick", "yesterday"), None, EXIT_USAGE, ("not an ISO time",)),
    "worker, bad rules": Offline(
        ("worker", "--rules", "{bad_rules}"), None, EXIT_USAGE, ("allowed_lateness_seconds",)
    ),
    "generate, bad setting": Offline(
        ("generate", "{tmp}/bad.jsonl"),
        None,
        EXIT_USAGE,
        ("bad setting RFM_PARTITIONS",),
        env=(("RFM_PARTITIONS", "many"),),
    ),
}


@pytest.fixture(scope="module")
def offline(
    settings: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Ran, int | None]]:
    """Every ``OFFLINE`` case, run at the same time: name -> (run, the closed port if any)."""
    tmp = tmp_path_factory.mktemp("offline")
    own = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.offline.",
            "redis_prefix": f"{run_id}:offline:",
            "app_id": f"{run_id}-offline",
        }
    )
    log = write_log(tmp / "small.jsonl", small_log()[0])
    default_rules = (REPO_ROOT / "streams" / "domain" / "rules.toml").read_text()
    bad_rules = tmp / "bad-rules.toml"
    bad_rules.write_text(
        default_rules.replace("allowed_lateness_seconds = 5.0", "allowed_lateness_seconds = -5.0")
    )
    assert bad_rules.read_text() != default_rules
    places = {"{log}": str(log), "{tmp}": str(tmp), "{bad_rules}": str(bad_rules)}
    ports: dict[str, int | None] = {}
    runs: dict[str, tuple[Settings | None, Sequence[str], Mapping[str, str]]] = {}
    for name, case in OFFLINE.items():
        args = []
        for arg in case.args:
            for place, value in places.items():
                arg = arg.replace(place, value)
            args.append(arg)
        env = dict(case.env)
        port = closed_port() if case.down else None
        if case.down == "kafka":
            env["RFM_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
        elif case.down == "redis":
            env["RFM_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        ports[name] = port
        runs[name] = (own, args, env)
    ran = cli_batch(runs)
    return {name: (ran[name], ports[name]) for name in OFFLINE}


@pytest.mark.parametrize("case", list(OFFLINE))
def test_exit_codes_and_messages(offline: dict[str, tuple[Ran, int | None]], case: str) -> None:
    ran, port = offline[case]
    expected = OFFLINE[case]
    assert ran.code == expected.code, ran.why()
    if expected.down is not None:
        # the service, where it was looked for, and the command that starts it
        assert f"{expected.down} is not reachable at" in ran.text, ran.why()
        assert f"127.0.0.1:{port}" in ran.text
        assert f"`./dev stack start {expected.down}`" in ran.text, ran.why()
    for words in expected.says:
        assert words in ran.text, ran.why()
    assert "Traceback" not in ran.text, ran.why()


# --------------------------------------------------------------------------- generate, quality

PERSONAS = {"true_friend": 6, "butterfly": 4, "barnacle": 4, "stranger": 8}
PERSONA_COUNTS = {"true_friends": 6, "butterflies": 4, "barnacles": 4, "strangers": 8}
GENERATE_ARGS = tuple(
    arg for field, n in PERSONA_COUNTS.items() for arg in ("--" + field.replace("_", "-"), str(n))
)


@dataclass(frozen=True)
class Generated:
    """Where the ``generate`` runs wrote, and the runs: a, and b with --truth (same seed)."""

    dir: Path
    runs: dict[str, Ran]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    tmp = tmp_path_factory.mktemp("generated")
    b_truth = ("--truth", str(tmp / "b-truth.jsonl"))
    runs: dict[str, tuple[Settings | None, Sequence[str], Mapping[str, str]]] = {
        "a": (None, ["generate", str(tmp / "a.jsonl"), *GENERATE_ARGS, "--seed", "5"], {}),
        "b": (
            None,
            ["generate", str(tmp / "b.jsonl"), *GENERATE_ARGS, "--seed", "5", *b_truth],
            {},
        ),
    }
    return Generated(tmp, cli_batch(runs))


def test_generate_writes_a_reproducible_log_with_its_truth(generated: Generated) -> None:
    for ran in generated.runs.values():
        assert ran.code == 0, ran.why()
    tmp = generated.dir
    a_events, a_truth = tmp / "a.jsonl", tmp / "a_truth.jsonl"  # default: OUT with _truth
    b_events, b_truth = tmp / "b.jsonl", tmp / "b-truth.jsonl"
    assert not (tmp / "b_truth.jsonl").exists(), "--truth was not honoured"

    # same seed, same bytes (the generator's own, see streams/tools/personas.py); another seed,
    # another log (made in this process: a third run would only cost time)
    assert a_events.read_bytes() == b_events.read_bytes()
    assert a_truth.read_bytes() == b_truth.read_bytes()

    def library_log(seed: int) -> bytes:
        counts = PERSONA_COUNTS
        config = PersonaConfig(
            true_friends=counts["true_friends"],
            butterflies=counts["butterflies"],
            barnacles=counts["barnacles"],
            strangers=counts["strangers"],
            seed=seed,
            partitions=Settings().partitions,  # what the command read from the environment
        )
        return b"".join(line + b"\n" for line in personas_generate(config).lines)

    assert a_events.read_bytes() == library_log(5)
    assert a_events.read_bytes() != library_log(6)

    truth = [json.loads(line) for line in a_truth.read_text().splitlines()]
    personas = Counter(t["persona"] for t in truth)
    assert personas == PERSONAS
    assert all(t["quadrant"] == t["persona"] for t in truth)
    assert all(t["orders"] >= 1 for t in truth)
    assert any(t["churned_at"] for t in truth if t["persona"] == "true_friend")

    lines = a_events.read_bytes().splitlines()
    said = generated.runs["a"].text
    assert f"wrote {len(lines):,} events to {a_events}" in said
    assert f"and {len(truth):,} customers' truth to {a_truth}" in said
    customers = set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # some of the invalid lines are not JSON at all
        body = event.get("value", event) if isinstance(event, dict) else None
        if isinstance(body, dict) and "customer_id" in body:
            customers.add(body["customer_id"])
    assert {t["customer_id"] for t in truth} <= customers, "a customer of the truth has no event"


def test_quality_scores_a_generated_log(generated: Generated) -> None:
    tmp = generated.dir
    assert generated.runs["a"].code == 0, generated.runs["a"].why()
    truth = [json.loads(line) for line in (tmp / "a_truth.jsonl").read_text().splitlines()]
    ran = cli(None, "quality", str(tmp / "a.jsonl"))  # the truth file found by its name
    assert ran.code == 0, ran.why()
    out = ran.stdout

    # the confusion matrix: one row per true quadrant, as many as the truth has active ones
    active = Counter(t["quadrant"] for t in truth if t["churned_at"] is None)
    names = ("true_friend", "butterfly", "barnacle", "stranger", "unclassified")
    rows: dict[str, dict[str, int]] = {}
    for quadrant in names[:4]:
        row = re.search(rf"│ {quadrant} +((?:│ +\d+ )+)│", out)
        assert row, (quadrant, out)
        rows[quadrant] = dict(zip(names, map(int, re.findall(r"\d+", row.group(1))), strict=True))
        assert sum(rows[quadrant].values()) == active[quadrant], (quadrant, rows[quadrant])
    total = sum(active.values())
    right = sum(rows[q][q] for q in rows)
    assert f"quadrant at the end of the log ({total:,} active customers)" in ran.text
    assert f"quadrant accuracy: {right / total:.1%}" in ran.text
    # the personas sit well inside their quadrants (tests/unit/tools/test_quality.py has the floors)
    assert right / total >= 0.8, rows

    churned = sum(1 for t in truth if t["persona"] == "true_friend" and t["churned_at"])
    recall = re.search(
        r"drifting-true-friend alerts: recall ([\d.]+)% \((\d+)/(\d+) churned true friends\), "
        r"precision ([\d.]+)% \((\d+)/(\d+) alerted customers had stopped\)",
        ran.text,
    )
    assert recall, ran.text
    detected, of = int(recall.group(2)), int(recall.group(3))
    assert of == churned and 0 <= detected <= of
    assert float(recall.group(1)) == pytest.approx(100 * detected / of if of else 0.0, abs=0.05)
    stopped, alerted = int(recall.group(5)), int(recall.group(6))
    assert 0 <= stopped <= alerted
    assert float(recall.group(4)) == pytest.approx(
        100 * stopped / alerted if alerted else 0.0, abs=0.05
    )


# --------------------------------------------------------------------------- replay, tick


def _event_ms(value: bytes | None) -> int | None:
    """The event time of a record with a valid, timezone-aware ``occurred_at``; else None."""
    try:
        body = json.loads(value or b"")
        at = datetime.fromisoformat(str(body["occurred_at"]).replace("Z", "+00:00"))
    except (ValueError, TypeError, KeyError):
        return None
    return ms(at) if at.tzinfo is not None else None


def test_replay_produces_the_log_in_event_time_order(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    log = write_log(tmp_path / "small.jsonl", small_log()[0])
    end = TRUE_FRIEND_LAST + timedelta(days=30)
    out = run_cli(settings, "replay", str(log), "--end-at", iso(end), timeout=CLI_TIMEOUT_S)

    planned = plan(
        read_lines(log), settings, end_tick_ms=ms(end), lateness_ms=RULES.allowed_lateness_ms
    )
    assert f"produced {len(planned):,} records into {settings.topic_prefix}" in out
    records = read_inputs(settings)
    wanted = sorted(as_consumed(planned), key=lambda r: (r.topic, r.partition, r.offset))
    assert records == wanted
    ticks = [r for r in records if r.headers]
    assert len(ticks) == settings.partitions
    assert {r.partition for r in ticks} == set(range(settings.partitions))
    assert all(r.topic == settings.topics.purchases for r in ticks)
    assert any(r.topic == settings.topics.interactions for r in records)
    # event-time order within every partition (what makes a replay deterministic)
    for topic in settings.topics.inputs():
        for partition in range(settings.partitions):
            times = [
                at
                for r in records
                if r.topic == topic and r.partition == partition
                if (at := _event_ms(r.value)) is not None
            ]
            assert times == sorted(times), (topic, partition)


def test_tick_moves_every_partition_clock(isolated_settings: Settings) -> None:
    """On topics that do not exist yet, too (tick creates them, like replay)."""
    settings = isolated_settings
    at = datetime(2025, 12, 1, tzinfo=UTC)
    out = run_cli(settings, "tick", iso(at), timeout=CLI_TIMEOUT_S)
    assert f"ticked {settings.partitions} partitions to {iso(at)}" in out
    assert read_inputs(settings) == as_consumed(tick_plan(settings, at))


# --------------------------------------------------------------------------- demo


@dataclass
class DemoRun:
    """``rfm-stream demo`` running in a directory of its own (its data directory is relative)."""

    started: tuple[tuple[str, ...], subprocess.Popen[str]]
    cwd: Path
    ran: Ran | None = None

    def finish(self, timeout: float) -> Ran:
        if self.ran is None:
            self.ran = finish(self.started, timeout)
        return self.ran

    @property
    def stamp(self) -> str | None:
        """The demo names its topics, group and keys after a timestamp, not the run id."""
        found = re.search(r"topics demo(\d{14})\.\*", self.ran.stdout if self.ran else "")
        return found.group(1) if found else None


def _delete_demo_resources(settings: Settings, stamp: str) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="cli-demo-cleanup"
    )
    try:
        prefixes = (f"demo{stamp}.", f"rfm-demo-{stamp}")
        topics = [t for t in admin.list_topics() if t.startswith(prefixes)]
        if topics:
            admin.delete_topics(topics, raise_errors=False)
        group = f"rfm-demo-{stamp}"
        if any(g["group_id"] == group for g in admin.list_groups()):
            admin.delete_groups([group])
    finally:
        admin.close()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"demo{stamp}:*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def demo(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo on the small log, as fast as it goes, started and left running: it mostly
    waits (for its worker, then for quiet), so other tests run meanwhile (``live`` starts it
    first). Its topics and keys are deleted at the end."""
    cwd = tmp_path_factory.mktemp("demo")
    log = write_log(cwd / "small.jsonl", small_log()[0])
    env = {"RFM_WEB_PORT": str(free_port())}  # its worker's HTTP port must be free
    run = DemoRun(start(settings, "demo", str(log), "--speed", "0", env=env, cwd=cwd), cwd)
    yield run
    _, process = run.started
    if run.ran is None and process.poll() is None:
        process.send_signal(signal.SIGINT)  # the demo stops its worker on the way out
    try:
        run.finish(90)
    finally:
        if run.stamp:
            _delete_demo_resources(settings, run.stamp)


# --------------------------------------------------------------------------- one worker


@dataclass(frozen=True)
class Live:
    """The module's worker after it consumed the small log and the 60 silent days."""

    settings: Settings
    worker: WorkerProcess
    port: int
    expected: list[Out]
    actual: list[Out]
    ready: tuple[int, bytes]


def expected_counts(expected: Sequence[Out]) -> dict[str, dict[str, int]]:
    """Customers per segment and quadrant after the reference's last output of each."""
    last = last_output_per_customer(expected)
    counts: dict[str, dict[str, int]] = {"rfm_segment": {}, "quadrant": {}}
    for event in last.values():
        assert isinstance(event, SegmentChange | ChurnAlert)
        for dimension, name in (("rfm_segment", event.rfm_segment), ("quadrant", event.quadrant)):
            counts[dimension][name] = counts[dimension].get(name, 0) + 1
    return counts


@pytest.fixture(scope="module")
def live(
    settings: Settings,
    run_id: str,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
    demo: DemoRun,
) -> Iterator[Live]:
    """``rfm-stream worker``, ready at /ready, fed by ``rfm-stream replay`` and ``tick``.

    Asks for ``demo`` only to start it now: both spend most of their time waiting.
    """
    workdir = tmp_path_factory.mktemp("cli-worker")
    port = free_port()
    own = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.cli.",
            "redis_prefix": f"{run_id}:cli:",
            "app_id": f"{run_id}-cli",
            "data_dir": str(workdir / "worker-data"),
            "web_port": port,
        }
    )
    log = write_log(workdir / "small.jsonl", small_log()[0])
    planned = plan(read_lines(log), own, lateness_ms=RULES.allowed_lateness_ms)
    expected = expected_outputs(own, RULES, MODEL, planned + tick_plan(own, TICK_AT))

    with WorkerProcess(own, workdir, env={"RFM_WEB_PORT": str(port)}) as worker:

        def ready() -> tuple[int, bytes] | None:
            got = http_get(port, "/ready")
            return got if got is not None and got[0] == 200 else None

        answer = wait_for_workers(ready, 180, "the worker's /ready to say 200", worker)
        run_cli(own, "replay", str(log), timeout=CLI_TIMEOUT_S)
        run_cli(own, "tick", iso(TICK_AT), timeout=CLI_TIMEOUT_S)
        actual = collect_expected(own, expected, timeout=120, idle=40, alive=worker.check_alive)

        wanted = expected_counts(expected)

        def views_settled() -> bool | None:
            return True if audience_sizes(redis_client, own.redis_prefix) == wanted else None

        wait_for_workers(views_settled, 60, "the Redis audiences to match", worker)
        yield Live(own, worker, port, expected, actual, answer)


def test_worker_becomes_ready_and_turns_events_into_segment_changes(live: Live) -> None:
    status, body = live.ready
    assert status == 200 and json.loads(body)["status"] == "ready"
    health = http_get(live.port, "/health")
    assert health is not None and health[0] == 200
    settings = live.settings
    said = " ".join(live.worker.log_text().split())
    assert f"worker {settings.app_id}: model {MODEL.version}," in said
    assert f"topics {settings.topic_prefix}*" in said
    # everything the reference predicts for the replayed log and the tick, and nothing else
    assert_same_outputs(live.expected, live.actual, "rfm-stream worker")
    bob = [
        e
        for e in (o.event for o in live.actual)
        if isinstance(e, SegmentChange) and e.customer_id == ONE_OFF
    ]
    assert bob and bob[0].to_value == "new" and bob[0].cause == "purchase"
    drifting = [
        e
        for e in (o.event for o in live.actual)
        if isinstance(e, ChurnAlert) and e.customer_id == TRUE_FRIEND and e.true_friend_drifting
    ]
    assert drifting and all(a.cause == "time" for a in drifting), "the tick moved no one"


def _ann_history_ids(live: Live) -> list[str]:
    """The true friend's segment changes and churn alerts, newest first."""
    ids = [o.id for o in live.expected if o.event.type != "dead_letter"]
    mine = [i for i in ids if i.rsplit(":", 1)[0] == TRUE_FRIEND]
    return sorted(mine, key=lambda i: -int(i.rsplit(":", 1)[1]))


def test_inspect_shows_the_profile_the_worker_wrote(live: Live, redis_client: redis.Redis) -> None:
    settings = live.settings
    key = f"{settings.redis_prefix}profile:{TRUE_FRIEND}"
    stored = {str(k): str(v) for k, v in redis_client.hgetall(key).items()}
    as_json = cli(settings, "inspect", TRUE_FRIEND, "--json", "--history", "3")
    assert as_json.code == 0, as_json.why()
    shown = json.loads(as_json.stdout)
    assert stored, f"no {key} in Redis"
    assert shown["profile"] == stored == redis_client.hgetall(key)

    last = last_output_per_customer(live.expected)[TRUE_FRIEND]
    assert isinstance(last, SegmentChange | ChurnAlert)
    assert shown["profile"]["quadrant"] == last.quadrant
    assert shown["profile"]["rfm_segment"] == last.rfm_segment
    assert shown["profile"]["purchase_count"] == str(TRUE_FRIEND_PURCHASES)
    assert [h["id"] for h in shown["history"]] == _ann_history_ids(live)[:3]

    as_text = cli(settings, "inspect", TRUE_FRIEND)
    assert as_text.code == 0, as_text.why()
    assert f"customer {TRUE_FRIEND}" in as_text.text
    for field in ("quadrant", "rfm_segment", "p_alive", "churn_risk_band", "purchase_count"):
        assert re.search(rf"│ {field} +│ {re.escape(stored[field])} ", as_text.stdout), field
    # the newest 10 changes and alerts (--history defaults to 10), one line each, newest first
    lines = [line for line in as_text.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d", line)]
    entries = [
        json.loads(e)
        for e in redis_client.lrange(f"{settings.redis_prefix}history:{TRUE_FRIEND}", 0, 9)
    ]
    assert [e["id"] for e in entries] == _ann_history_ids(live)[:10]
    assert len(lines) == len(entries)
    for line, entry in zip(lines, entries, strict=True):
        assert line.startswith(entry["event_time"]), (line, entry)
        if entry["type"] == "segment_change":
            move = f"{entry['dimension']}: {entry['from_value']} → {entry['to_value']}"
            assert move in line, (line, entry)
        else:
            assert f"churn {entry['severity']}" in line, (line, entry)


def test_inspect_an_unknown_customer_exits_1(live: Live) -> None:
    ran = cli(live.settings, "inspect", "nobody-like-this")
    assert ran.code == EXIT_FAILED, ran.why()
    assert "no profile for customer 'nobody-like-this'" in ran.text
    assert f"(prefix {live.settings.redis_prefix})" in ran.text
    assert ran.stdout == ""


def test_segments_prints_the_redis_audiences(live: Live, redis_client: redis.Redis) -> None:
    settings = live.settings
    in_redis = audience_sizes(redis_client, settings.redis_prefix)
    wanted = expected_counts(live.expected)
    assert in_redis == wanted and sum(wanted["quadrant"].values()) == 5

    as_json = cli(settings, "segments", "--json")
    assert as_json.code == 0, as_json.why()
    assert nonzero(json.loads(as_json.stdout)) == in_redis

    as_text = cli(settings, "segments")
    assert as_text.code == 0, as_text.why()
    for dimension, sizes in in_redis.items():
        assert dimension in as_text.stdout
        for name, size in sizes.items():
            assert re.search(rf"│ {name} +│ +{size} │", as_text.stdout), (name, as_text.stdout)

    empty = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}empty:"})
    nothing = cli(empty, "segments")
    assert nothing.code == EXIT_FAILED, nothing.why()
    assert f"no customers yet under Redis prefix {empty.redis_prefix}" in nothing.text


def test_calibrate_publishes_a_model_the_worker_adopts(live: Live) -> None:
    """Last of the worker's tests: the new model re-evaluates its customers."""
    settings = live.settings
    states = read_table_states(settings)
    assert len(states) == 5

    dry = cli(settings, "calibrate", "--dry-run")
    assert dry.code == 0, dry.why()
    fitted = re.search(r'"version": "(m-[0-9a-f]+)"', dry.text)
    assert fitted, dry.why()
    assert '"population": 5' in dry.text
    assert load_current_model(settings, timeout_s=10) is None, "--dry-run published a model"

    out = run_cli(settings, "calibrate", timeout=CLI_TIMEOUT_S)
    published = re.search(r"published model (m-[0-9a-f]+) \(5 customers\)", out)
    assert published, out
    version = published.group(1)
    assert version == fitted.group(1), "--dry-run showed another model than the one published"
    model = load_current_model(settings, timeout_s=10)
    assert model is not None and model.version == version and model.population == len(states)
    assert version != MODEL.version

    def adopted() -> bool | None:
        got = http_get(live.port, "/metrics")
        return (
            True
            if got and f'rfm_model_info{{version="{version}"}} 1.0' in got[1].decode()
            else None
        )

    wait_for_workers(adopted, 60, f"the worker to adopt model {version}", live.worker)


def test_calibrate_without_any_customer_state_exits_1(isolated_settings: Settings) -> None:
    ran = cli(isolated_settings, "calibrate")
    assert ran.code == EXIT_FAILED, ran.why()
    assert "no customer state found" in ran.text


def test_demo_runs_to_its_summary(demo: DemoRun, redis_client: redis.Redis) -> None:
    """A worker of its own, the log, 60 silent days, and the summary, whose last column is
    what the Redis audiences hold."""
    ran = demo.finish(170)  # it started with the module's worker: usually done by now
    assert ran.code == 0, ran.why()
    stamp = demo.stamp
    assert stamp, ran.why()
    out = ran.stdout
    assert "log replayed; now 60 days pass with no new event" in out
    assert "TRUE FRIEND DRIFTING" in out, "the silent true friend did not drift"
    assert "customers per segment (Redis audiences)" in out
    outputs = re.search(r"outputs: (.+)", out)
    assert outputs, out
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", outputs.group(1))}
    assert counts.get("SegmentChange", 0) > 0 and counts.get("ChurnAlert", 0) > 0, out

    rows = re.findall(r"│ (quadrant|rfm_segment) +│ (\w+) +│ +(\d+) │ +(\d+) │", out)
    assert rows, out
    at_end = {(d, n): int(before) for d, n, before, _ in rows}
    later = {(d, n): int(after) for d, n, _, after in rows if int(after)}
    in_redis = audience_sizes(redis_client, f"demo{stamp}:")
    assert later == {(d, n): c for d, sizes in in_redis.items() for n, c in sizes.items()}
    # the true friend of the small log is one at the end of the log, and drifts away after
    assert at_end[("quadrant", "true_friend")] == 1
    assert ("quadrant", "true_friend") not in later
    assert (demo.cwd / ".local" / "demo" / stamp / "worker.log").is_file()
