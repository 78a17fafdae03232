"""Soak: feed a personas log for N minutes while workers are SIGKILLed, then verify it all.

    .venv/bin/python bench/soak.py --minutes 5 --workers 2 --kill-every 30

What it does:

1. generates a personas log (:mod:`streams.tools.personas`: true friends, butterflies, barnacles,
   strangers, with reordered, very late, duplicate and invalid records) and plans it in
   delivery order;
2. starts 1-3 workers (replay mode, short Kafka session timeout so a killed one's partitions
   move within seconds) on topics and Redis keys of its own;
3. feeds the log in chunks spread over ``--minutes``, adding to every chunk a record of binary
   junk and a few re-sent records (producer retries), while it SIGKILLs a random worker every
   ``--kill-every`` seconds and restarts it on the same data directory, and, with
   ``--bounce-redis-every``, stops Redis for ``--redis-down`` seconds;
4. stops feeding, ticks every partition's clock to the end of the log, waits for the workers
   to catch up and runs the verifier (:mod:`streams.tools.verify`, the ``rfm-stream verify``
   command): every output topic against the pure core over the input topics;
5. prints the verdict (ALL-RECORDS-DELIVERED or what is missing) with the counts: events in,
   outputs, dead letters, duplicates dropped, kills survived, Redis bounces, elapsed time.
   Exit 0 only when everything was delivered.

Kafka and Redis: the stack in the environment (``RFM_KAFKA_BOOTSTRAP``, ``RFM_REDIS_URL``,
else ``.local/stack.env``). Bouncing Redis needs a stack of its own, which the soak starts
(``RFM_LOCAL_DIR=<tmp> deploy/local/stack.sh start``) and wipes at the end — unless
``--bounce-shared-redis`` says that stopping the shared stack's Redis is fine.
``--dedicated-stack`` uses a stack of its own in any case. Its topics, consumer group and Redis
keys (prefix ``soak<time>``) are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.personas import PersonaConfig, generate
from streams.tools.replay import Planned, plan, produce
from streams.tools.verify import DELIVERED, Verdict, group_lag, verify
from streams.worker.topics import ensure_topics

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
# A SIGKILLed worker keeps its partitions until its session times out (Faust's default: 60 s).
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}
READY_LINE = "Worker ready"
ASSIGNED_LINE = "Executing _on_partitions_assigned"

console = Console(stderr=True)


# --------------------------------------------------------------------------- stack


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def shared_addresses() -> tuple[str, str]:
    """Kafka and Redis of the environment, else of .local/stack.env, else the defaults."""
    values: dict[str, str] = {}
    env_file = Path(os.environ.get("RFM_LOCAL_DIR", REPO_ROOT / ".local")) / "stack.env"
    if env_file.is_file():
        values = read_env_file(env_file)
    kafka = os.environ.get("RFM_KAFKA_BOOTSTRAP") or values.get("RFM_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("RFM_REDIS_URL") or values.get("RFM_REDIS_URL")
    defaults = Settings()
    return kafka or defaults.kafka_bootstrap, redis_url or defaults.redis_url


@dataclass
class StackControl:
    """``deploy/local/stack.sh`` for one stack directory (None: the shared default)."""

    local_dir: Path | None

    def run(self, *args: str, timeout: float = 300.0) -> None:
        env = dict(os.environ)
        if self.local_dir is not None:
            env["RFM_LOCAL_DIR"] = str(self.local_dir)
        done = subprocess.run(
            [str(STACK_SH), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def addresses(self) -> tuple[str, str]:
        assert self.local_dir is not None
        values = read_env_file(self.local_dir / "stack.env")
        return values["RFM_KAFKA_BOOTSTRAP"], values["RFM_REDIS_URL"]


@contextmanager
def dedicated_stack(workdir: Path) -> Iterator[StackControl]:
    stack = StackControl(workdir / "stack")
    console.log(f"starting a dedicated stack in {stack.local_dir}")
    try:
        stack.run("start")
        yield stack
    finally:
        stack.run("wipe", timeout=120)


# --------------------------------------------------------------------------- workers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RFM_TOPIC_PREFIX": settings.topic_prefix,
        "RFM_PARTITIONS": str(settings.partitions),
        "RFM_APP_ID": settings.app_id,
        "RFM_REDIS_URL": settings.redis_url,
        "RFM_REDIS_PREFIX": settings.redis_prefix,
        "RFM_STORE": settings.store,
        "RFM_DATA_DIR": str(data_dir),
        "RFM_WEB_PORT": str(free_port()),
        "RFM_LIVE_CLOCK": "false",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        **FAST_FAILOVER,
    }


def _die_with_parent() -> None:
    """In the worker's process: SIGTERM it when the soak exits, however it exits (a soak
    killed outright left its workers running against the next run's broker)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM as Ctrl-C: the workers stop and the dedicated stack is wiped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Worker:
    """One worker slot: a data directory that every incarnation of the worker reuses."""

    slot: int
    settings: Settings
    workdir: Path
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"worker-{self.slot}.log"

    def start(self) -> Worker:
        data_dir = self.workdir / f"data-{self.slot}"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== soak: incarnation {self.generation} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                cwd=REPO_ROOT,
                env=worker_env(self.settings, data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def incarnation_log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("=== soak: incarnation") :]

    def ready(self) -> bool:
        text = self.incarnation_log()
        return text.rfind(READY_LINE) > max(text.rfind(ASSIGNED_LINE), 0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.generation += 1

    def stop(self, grace: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # Faust's shutdown can hang: killed instead
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


# --------------------------------------------------------------------------- the feed


def junk_record(settings: Settings, rng: random.Random, n: int) -> Planned:
    """Binary junk on a purchases partition: a not_utf8 dead letter."""
    key = f"junk-{n}".encode()
    value = bytes(rng.randrange(128, 256) for _ in range(40 + rng.randrange(200)))
    partition = rng.randrange(settings.partitions)
    return Planned(settings.topics.purchases, partition, key, value, None)


def chunks_of(records: list[Planned], count: int) -> list[list[Planned]]:
    size = max(1, -(-len(records) // count))
    return [records[i : i + size] for i in range(0, len(records), size)]


@dataclass
class Stats:
    fed: int = 0
    junk: int = 0
    resent: int = 0
    kills: int = 0
    redis_bounces: int = 0
    restarts_failed: int = 0
    notes: list[str] = field(default_factory=list)


def output_count(settings: Settings, consumer: KafkaConsumer) -> int:
    """Records on the output topics now (end offsets), for the progress line."""
    tps = [
        KafkaTopicPartition(t, p)
        for t in settings.topics.outputs()
        for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    return sum(consumer.end_offsets(tps).values()) if tps else 0


def delete_resources(settings: Settings) -> None:
    """The soak's topics, consumer group and Redis keys; best effort."""
    prefix = settings.app_id
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            topics = [t for t in admin.list_topics() if t.startswith(prefix)]
            if topics:
                admin.delete_topics(topics, raise_errors=False)
            groups = [g["group_id"] for g in admin.list_groups() if g["group_id"] == prefix]
            if groups:
                admin.delete_groups(groups)
        finally:
            admin.close()
        client = redis.Redis.from_url(settings.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.unlink(*keys[i : i + 1000])
        finally:
            client.close()
    except Exception as exc:
        console.log(f"[yellow]cleanup incomplete: {exc}[/yellow]")


def soak(args: argparse.Namespace, settings: Settings, stack: StackControl | None) -> int:
    rules = load_rules()
    model = default_model()
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rfm-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stats = Stats()

    config = PersonaConfig.for_customers(
        args.customers, seed=args.seed, partitions=settings.partitions
    )
    with console.status(f"generating a personas log of {args.customers:,} customers"):
        log = generate(config)
        planned = plan(log.lines, settings, lateness_ms=rules.allowed_lateness_ms, order="delivery")
    body = [p for p in planned if not p.headers]
    ticks = [p for p in planned if p.headers]
    duration = args.minutes * 60
    chunk_count = max(1, round(duration / args.chunk_seconds))
    chunks = chunks_of(body, chunk_count)
    console.log(
        f"soak {settings.app_id}: {len(log.lines):,} log lines ({log.counts().get('valid', 0):,} "
        f"valid) in {len(chunks)} chunks over {args.minutes:g} min; {args.workers} worker(s), "
        f"kill every {args.kill_every or '-'} s, Redis bounce every "
        f"{args.bounce_redis_every or '-'} s; logs in {workdir}"
    )
    print(f"soak run {settings.app_id}: topics {settings.topic_prefix}*", flush=True)
    ensure_topics(settings)
    workers = [Worker(slot, settings, workdir).start() for slot in range(args.workers)]
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 120
        while not any(w.ready() for w in workers):
            if time.monotonic() > deadline or not all(w.alive() for w in workers):
                console.print(f"[red]no worker became ready; see {workdir}[/red]")
                return 1
            time.sleep(0.3)

        feed_started = time.monotonic()
        next_kill = feed_started + args.kill_every if args.kill_every else float("inf")
        next_bounce = (
            feed_started + args.bounce_redis_every if args.bounce_redis_every else float("inf")
        )
        lag: int | None = None
        outputs = 0
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} records"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("feeding", total=len(body), status="")
            for index, chunk in enumerate(chunks):
                due = feed_started + index * args.chunk_seconds
                while time.monotonic() < due:
                    now = time.monotonic()
                    if now >= next_kill:
                        victim = rng.choice(workers)
                        victim.kill()
                        victim.start()
                        stats.kills += 1
                        progress.console.log(
                            f"SIGKILL worker {victim.slot} (kill {stats.kills}); restarted"
                        )
                        next_kill = now + args.kill_every
                    if now >= next_bounce and stack is not None:
                        stack.run("stop", "redis")
                        progress.console.log(f"Redis stopped for {args.redis_down:g} s")
                        time.sleep(args.redis_down)
                        stack.run("start", "redis")
                        stats.redis_bounces += 1
                        next_bounce = time.monotonic() + args.bounce_redis_every
                    for w in workers:
                        if not w.alive():  # a crash, not one of our kills
                            stats.notes.append(f"worker {w.slot} exited; restarted")
                            progress.console.log(f"[red]worker {w.slot} exited; restarting")
                            w.generation += 1
                            w.start()
                    try:
                        lag = sum(group_lag(settings).values())
                        outputs = output_count(settings, probe)
                    except Exception as exc:  # informative only
                        progress.console.log(f"[yellow]progress probe failed: {exc}")
                    progress.update(
                        task,
                        status=f"kills {stats.kills}, Redis bounces {stats.redis_bounces}, "
                        f"lag {lag if lag is not None else '?'}, outputs {outputs:,}",
                    )
                    time.sleep(min(1.0, max(0.0, due - time.monotonic())))
                extra = [junk_record(settings, rng, index)]
                if stats.fed and args.resend:
                    earlier = body[max(0, stats.fed - 200) : stats.fed]
                    extra += rng.sample(earlier, min(args.resend, len(earlier)))
                stats.junk += 1
                stats.resent += len(extra) - 1
                produce(chunk + extra, settings)
                stats.fed += len(chunk)
                progress.update(task, advance=len(chunk))
        produce(ticks, settings)
        console.log(
            f"fed {stats.fed:,} log records, {stats.junk} junk, {stats.resent} re-sent; "
            f"{stats.kills} kills; waiting for the workers and verifying"
        )

        def alive(text: str) -> None:
            for w in workers:
                if not w.alive():
                    stats.notes.append(f"worker {w.slot} exited while catching up; restarted")
                    w.generation += 1
                    w.start()
            console.log(text)

        verdict = verify(
            settings, rules, model, wait=args.catch_up_minutes * 60, settle=10, progress=alive
        )
    finally:
        probe.close()
        for w in workers:
            w.stop()
    elapsed = time.monotonic() - started
    print_verdict(verdict, stats, elapsed, workdir)
    if args.json_path:
        write_json(args.json_path, verdict, stats, elapsed)
    return 0 if verdict.ok else 1


def print_verdict(verdict: Verdict, stats: Stats, elapsed: float, workdir: Path) -> None:
    counts = verdict.counts()
    print(verdict.report())
    print(
        "soak: "
        f"events in {counts['events_in']:,}, "
        f"outputs {counts['outputs_read']:,} (expected {counts['expected_outputs']:,}), "
        f"dead letters {counts['dead_letters']:,}, "
        f"duplicates dropped {counts['duplicates_dropped']:,}, "
        f"kills survived {stats.kills}, Redis bounces {stats.redis_bounces}, "
        f"elapsed {elapsed / 60:.1f} min"
    )
    for note in stats.notes:
        print(f"note: {note}")
    verdict_line = DELIVERED if verdict.ok else "RECORDS-NOT-DELIVERED"
    print(f"soak verdict: {verdict_line} (worker logs: {workdir})", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description=(
            "Feed a personas log for N minutes while workers are SIGKILLed (and Redis "
            "bounced), then verify every output topic against the pure core. Prints "
            "ALL-RECORDS-DELIVERED with the counts and exits 0 only when nothing is missing, "
            "unexpected or conflicting and the final state matches."
        ),
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to feed (5)")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2, 3), help="(2)")
    parser.add_argument(
        "--kill-every", type=float, default=30.0, help="SIGKILL a worker every S s; 0: never (30)"
    )
    parser.add_argument("--customers", type=int, default=1000, help="personas (1000)")
    parser.add_argument("--seed", type=int, default=1, help="log, kills and junk (1)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=2.0, help="feed a chunk every S s (2)"
    )
    parser.add_argument("--resend", type=int, default=3, help="records re-sent with each chunk (3)")
    parser.add_argument(
        "--bounce-redis-every",
        type=float,
        default=0.0,
        help="stop Redis every S s (0: never); on a dedicated stack unless --bounce-shared-redis",
    )
    parser.add_argument("--redis-down", type=float, default=3.0, help="seconds down (3)")
    parser.add_argument(
        "--bounce-shared-redis",
        action="store_true",
        help="bounce the shared stack's Redis (others using it will notice)",
    )
    parser.add_argument("--dedicated-stack", action="store_true", help="run on a stack of its own")
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="memory")
    parser.add_argument(
        "--catch-up-minutes", type=float, default=10.0, help="wait at most this for the verdict"
    )
    parser.add_argument("--workdir", help="where worker logs and data go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep topics and Redis keys")
    parser.add_argument("--json", dest="json_path", help="also write the counts to this file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.customers < 10 or args.chunk_seconds <= 0:
        parser.error("--minutes and --chunk-seconds must be > 0, --customers >= 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    run = f"soak{int(time.time())}{os.getpid() % 1000:03d}"
    own_stack = args.dedicated_stack or (
        args.bounce_redis_every > 0 and not args.bounce_shared_redis
    )

    def settings_for(kafka: str, redis_url: str) -> Settings:
        return Settings(
            kafka_bootstrap=kafka,
            redis_url=redis_url,
            topic_prefix=f"{run}.",
            redis_prefix=f"{run}:",
            app_id=run,
            store=args.store,
        )

    if own_stack:
        with (
            tempfile.TemporaryDirectory(prefix="rfm-soak-stack-") as tmp,
            dedicated_stack(Path(tmp)) as stack,
        ):
            settings = settings_for(*stack.addresses())
            return soak(args, settings, stack)
    settings = settings_for(*shared_addresses())
    shared = StackControl(None) if args.bounce_shared_redis else None
    try:
        return soak(args, settings, shared)
    finally:
        if not args.keep:
            delete_resources(settings)


def write_json(path: str, verdict: Verdict, stats: Stats, elapsed: float) -> None:
    data: Mapping[str, Any] = verdict.counts() | {
        "ok": verdict.ok,
        "kills": stats.kills,
        "redis_bounces": stats.redis_bounces,
        "elapsed_s": round(elapsed, 1),
    }
    Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    sys.exit(main())
