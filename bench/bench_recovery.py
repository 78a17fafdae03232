"""Recovery and memory of a worker holding N customers, against the real stack.

    python bench/bench_recovery.py [--customers 1000000] [--partitions 4] [--keep] [--json PATH]

What it does, in order (everything it creates starts with one run id and is removed at the
end unless --keep):

1. **Realistic states.** Runs the pure core (``PartitionEngine`` over a ``DictStore``) over
   ``bench_core.synthetic_log`` for --templates customers (a year of purchases, refunds and
   interactions), then clones those states under new customer ids up to --customers.
2. **Seed.** Produces the clones straight into the table's changelog topic, exactly as the
   worker's table writes them: topic ``<app id>-customers-changelog`` (compacted), key = the
   customer id as JSON (the table's key serializer), value = ``CustomerState.to_bytes()``,
   partition = the input partition the customer id hashes to (murmur2, ``partition_for``),
   plus each partition's clock row. That is what "a worker holding N customers" means.
3. **Scenarios**, each a real ``rfm-stream worker`` subprocess (replay mode, its own web port):

   - baseline, memory store and RocksDB: the same worker over an empty table (another app id);
   - (a) memory store restart: the whole changelog is replayed into memory;
   - (b) RocksDB on a new machine: empty data dir, the changelog is restored into RocksDB;
   - (c) RocksDB restart: the data dir of (b) after a clean stop, only the changelog tail is read.

   Each is timed from process start until ``/ready`` answers 200 (it waits for table recovery:
   ``streams/web/side.py`` checks ``app.in_recovery`` and the recovery's ``completed`` event), with
   the recovery phase itself from Faust's log lines. Then a probe: one purchase for a seeded
   customer in every partition plus a clock tick, timed until each customer's profile is
   published; it must show the seeded order count + 1 (the state really was restored) and the
   changelog rows the worker then writes must have the seeded key bytes and partition. Each
   probe moves event time by seconds only, so little time-driven work rides along. "Ready →
   processing" includes what the product does on the first event after an assignment (it
   reads each partition's clock and due index from the store's rows:
   ``TableStores._load``).
4. **Memory**: the worker's resident set (``/proc/<pid>/status`` VmRSS) when ready and after
   the probe (the product decodes every state into its cache on the first event), minus the
   same figures of the empty-table baseline, per customer. Also the serialized state size and
   RocksDB's on-disk size per customer after (b).

Figures are printed as a table and as plain ``figure:`` lines; --json writes them too. Wall
times depend on what else runs on the machine; the worker's CPU seconds much less. Targets:
recovery of 1 M customers <= 30 s with RocksDB, <= 60 s with the memory store; <= 1 KiB
resident per customer.
At 1 M customers the run takes about 10 minutes on 2 cores (the templates and the seed
are most of it; the worker's stores restore in bulk, streams/worker/bulk_store.py).
--processed N measures resident bytes per customer created by processing instead of restored
(--only-processed: that alone).
Kafka and Redis come from RFM_KAFKA_BOOTSTRAP / RFM_REDIS_URL, else from .local/stack.env.
--worker-env KEY=VALUE passes Faust settings (e.g. STREAM_BUFFER_MAXSIZE) to every worker, and
--py-spy DIR records a flame graph of each seeded worker from start to back-to-processing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402

from bench.bench_core import synthetic_log  # noqa: E402
from streams.config import Settings  # noqa: E402
from streams.domain.engine import DictStore, PartitionEngine  # noqa: E402
from streams.domain.facts import PurchaseFact, SourcePosition  # noqa: E402
from streams.domain.model import default_model  # noqa: E402
from streams.domain.rules import load_rules  # noqa: E402
from streams.domain.state import CustomerState  # noqa: E402
from streams.processor import (  # noqa: E402
    CLOCK_KEY,
    PURCHASES,
    TICK_HEADER,
    tick_record,
)
from streams.tools.replay import partition_for  # noqa: E402
from streams.worker.table_store import partition_of  # noqa: E402
from streams.worker.topics import ensure_topics  # noqa: E402

console = Console(stderr=True)

TABLE = "customers"  # the table's name in streams/worker/app.py
KIB = 1024
MIB = 1024 * 1024
RECOVERY_TARGET_S = 30.0
RESIDENT_TARGET_B = 1024

# Faust's log lines (faust/tables/recovery.py) around the restore of the assigned partitions
RESTORE_START = "Restoring state from changelog topics"
RESTORE_DONE = "Done reading from changelog topics"
WORKER_READY = "Worker ready"
# the worker's own bulk restore (streams/worker/bulk_store.py), one line per rebalance
BULK_RESTORE = re.compile(r"bulk restore: (\d+) changelog records of \d+ partitions in ([\d.]+) s")
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


# --------------------------------------------------------------------------- states


def _field_index(name: str, value: Any, serialized: Any) -> int:
    """Where ``CustomerState.to_list`` puts a field (found, not assumed)."""
    state = CustomerState("\x01template")
    setattr(state, name, value)
    found = [i for i, v in enumerate(state.to_list()) if v == serialized]
    if len(found) != 1:
        raise RuntimeError(f"cannot locate {name} in CustomerState.to_list()")
    return found[0]


ID_AT = _field_index("customer_id", "\x01id", "\x01id")
ORDERS_AT = _field_index("orders", 987_654_321, 987_654_321)
OFFSETS_AT = _field_index("offsets", {"\x01stream/9": -7}, [["\x01stream/9", -7]])
# the input partition in the row's index head (read by a restarted worker without a full parse)
PARTITION_AT = _field_index("offsets", {"\x01stream/987654": -7}, 987654)
PROBE_STEP_MS = 10_000  # event time added per probe round (> lateness + the tick's 1 s)
PROBES_PER_PARTITION = 8  # seeded customers kept per partition for probes (one per scenario)


@dataclass
class Templates:
    """Customer states from the core over a synthetic log, to be cloned under new ids."""

    rows: list[list[Any]]  # CustomerState.to_list() of each state
    probe_rows: list[int]  # rows fit for a probe: orders >= 2, nothing pending
    clock_ms: int  # the purchases clock at the end of the log
    touch_clock_ms: int | None
    events: int
    seconds: float


def build_templates(customers: int, seed: int) -> Templates:
    """Run the domain core over ``synthetic_log`` (10 events per customer, 30 % purchases)."""
    started = time.perf_counter()
    log = synthetic_log(customers * 10, customers, 0.3, seed)
    engine = PartitionEngine(load_rules(), default_model(), DictStore())
    for offset, fact in enumerate(log):
        if isinstance(fact, PurchaseFact):
            engine.on_purchase(fact, SourcePosition(PURCHASES, 0, offset))
        else:
            engine.on_interaction(fact, SourcePosition("interactions", 0, offset))
    assert isinstance(engine.store, DictStore)
    assert engine.clock_ms is not None
    states = [engine.store.states[k] for k in sorted(engine.store.states)]
    rows = [s.to_list() for s in states]
    probe_rows = [i for i, s in enumerate(states) if s.orders >= 2 and not s.pending]
    if not probe_rows:
        raise RuntimeError("no template state has two orders; raise --templates")
    return Templates(
        rows,
        probe_rows,
        engine.clock_ms,
        engine.touch_clock_ms,
        len(log),
        time.perf_counter() - started,
    )


def customer_id(i: int) -> str:
    return f"cust-{i:07d}"


def offsets_for(partition: int) -> list[list[Any]]:
    """The redelivery guard of a clone: nothing of the (fresh) input topics applied yet.

    Kept per input partition (``partition_of`` reads the partition from it); -1 so that the
    probe's purchase, at a low offset of a fresh topic, is not taken for a redelivery.
    """
    return [[f"interactions/{partition}", -1], [f"{PURCHASES}/{partition}", -1]]


@dataclass(frozen=True)
class Clone:
    customer_id: str
    partition: int
    key: bytes
    value: bytes
    template: int


def clones(templates: Templates, n: int, partitions: int) -> Iterator[Clone]:
    """N states: template i % len(templates) under id ``cust-i``, keyed like the table."""
    rows = templates.rows
    guards = [offsets_for(p) for p in range(partitions)]
    for i in range(n):
        cid = customer_id(i)
        p = partition_for(cid.encode(), partitions)
        t = i % len(rows)
        row = rows[t]
        saved = row[ID_AT], row[OFFSETS_AT], row[PARTITION_AT]
        row[ID_AT], row[OFFSETS_AT], row[PARTITION_AT] = cid, guards[p], p
        value = orjson.dumps(row)
        row[ID_AT], row[OFFSETS_AT], row[PARTITION_AT] = saved
        yield Clone(cid, p, orjson.dumps(cid), value, t)


def check_clone(clone: Clone, partitions: int) -> None:
    """A clone is what CustomerState.to_bytes() gives, with the right id and partition."""
    state = CustomerState.from_bytes(clone.value)
    if state.to_bytes() != clone.value or state.customer_id != clone.customer_id:
        raise RuntimeError(f"clone of {clone.customer_id} is not a CustomerState serialization")
    hashed = partition_for(clone.customer_id.encode(), partitions)
    if not partition_of(state) == clone.partition == hashed:
        raise RuntimeError(f"clone of {clone.customer_id} has the wrong partition")


# --------------------------------------------------------------------------- seeding


@dataclass
class SeedFigures:
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    value_mean: float = 0.0
    value_p99: int = 0
    value_max: int = 0
    key_mean: float = 0.0
    # partition -> seeded customers fit for a probe, with their order counts
    probes: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def changelog_topic(app_id: str) -> str:
    """Faust's name for the table's changelog (``<app id>-<table>-changelog``)."""
    return f"{app_id}-{TABLE}-changelog"


def create_changelog(bootstrap: str, app_id: str, partitions: int) -> str:
    """The changelog as the worker would create it: N partitions, compacted."""
    topic = changelog_topic(app_id)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{app_id}-bench")
    try:
        admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        admin.close()
    return topic


async def seed_changelog(
    bootstrap: str, app_id: str, templates: Templates, n: int, partitions: int
) -> SeedFigures:
    """Produce N clones (+ the clock rows) into the changelog, batched per partition."""
    topic = create_changelog(bootstrap, app_id, partitions)
    figures = SeedFigures()
    sizes: list[int] = []
    key_bytes = 0
    probe_rows = set(templates.probe_rows)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * KIB,
        client_id=f"{app_id}-seed",
    )
    await producer.start()
    started = time.perf_counter()
    try:
        builders: dict[int, Any] = {}
        pending: list[asyncio.Future[Any]] = []

        async def submit(p: int) -> None:
            pending.append(await producer.send_batch(builders.pop(p), topic, partition=p))
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending.clear()

        async def append(p: int, key: bytes, value: bytes) -> None:
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                await submit(p)
                builders[p] = producer.create_batch()
                builders[p].append(key=key, value=value, timestamp=None)

        columns = (
            TextColumn("seeding {task.fields[topic]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("seed", total=n, topic=topic, rate="")
            for i, clone in enumerate(clones(templates, n, partitions)):
                if i < 1000:
                    check_clone(clone, partitions)
                await append(clone.partition, clone.key, clone.value)
                sizes.append(len(clone.value))
                key_bytes += len(clone.key)
                if clone.template in probe_rows:
                    kept = figures.probes.setdefault(clone.partition, [])
                    if len(kept) < PROBES_PER_PARTITION:
                        orders = int(templates.rows[clone.template][ORDERS_AT])
                        kept.append((clone.customer_id, orders))
                if i % 20_000 == 0:
                    elapsed = time.perf_counter() - started
                    rate = f"{i / elapsed:,.0f} records/s" if elapsed > 0 else ""
                    progress.update(task, completed=i, rate=rate)
            clock = orjson.dumps([templates.clock_ms, templates.touch_clock_ms])
            for p in range(partitions):
                await append(p, orjson.dumps(CLOCK_KEY.format(partition=p)), clock)
            for p in list(builders):
                await submit(p)
            await asyncio.gather(*pending)
            progress.update(task, completed=n)
    finally:
        await producer.stop()
    figures.seconds = time.perf_counter() - started
    figures.records = n + partitions
    figures.bytes = sum(sizes) + key_bytes
    ordered = sorted(sizes)
    figures.value_mean = statistics.fmean(ordered)
    figures.value_p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    figures.value_max = ordered[-1]
    figures.key_mean = key_bytes / n
    missing = set(range(partitions)) - set(figures.probes)
    if missing:
        raise RuntimeError(f"no probe customer in partitions {sorted(missing)}: raise --customers")
    return figures


# --------------------------------------------------------------------------- workers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Run:
    """One scenario's figures."""

    name: str
    store: str
    app_id: str
    seeded: int  # customers in the changelog when it started
    start_to_ready_s: float = 0.0
    restore_s: float | None = None  # Faust's "Restoring state" -> "Done reading" log lines
    start_to_restore_s: float | None = None  # process start -> "Restoring state"
    start_to_log_ready_s: float | None = None  # process start -> Faust's "Worker ready"
    ready_to_first_output_s: float = 0.0
    ready_to_processing_s: float = 0.0  # until every partition's probe output was read
    probes_ok: int = 0
    probes: int = 0
    layout_ok: bool = False
    cpu_ready_s: float = 0.0  # worker CPU time (user + system) from start to ready
    cpu_processing_s: float = 0.0  # worker CPU time from ready to back to processing
    rss_ready_b: int = 0
    rss_processing_b: int = 0
    stop_s: float = 0.0
    killed: bool = False
    data_dir_b: int | None = None
    log: str = ""
    problems: list[str] = field(default_factory=list)


class Worker:
    """``python -m streams.cli worker`` with the run's settings; stdout/stderr to a log file."""

    def __init__(
        self,
        settings: Settings,
        store: str,
        data_dir: Path,
        log_path: Path,
        extra_env: dict[str, str],
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RFM_REDIS_URL": settings.redis_url,
            "RFM_TOPIC_PREFIX": settings.topic_prefix,
            "RFM_REDIS_PREFIX": settings.redis_prefix,
            "RFM_PARTITIONS": str(settings.partitions),
            "RFM_APP_ID": settings.app_id,
            "RFM_STORE": store,
            "RFM_DATA_DIR": str(data_dir),
            "RFM_WEB_PORT": str(self.port),
            "RFM_WEB_HOST": "127.0.0.1",
            "RFM_LIVE_CLOCK": "false",
            "RFM_LOG_LEVEL": "info",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_wall = time.time()
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/ready"
            with urllib.request.urlopen(url, timeout=2.0) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    def wait_ready(self, timeout: float) -> float:
        """Seconds from process start until /ready answers 200."""
        deadline = time.perf_counter() + timeout
        while not self.ready():
            if not self.alive():
                raise RuntimeError(f"the worker exited; see {self.log_path}\n{self.tail()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.1)
        return time.perf_counter() - self.started

    def log_seconds(self, line: str) -> float | None:
        """Seconds from process start to the first log line containing ``line``."""
        for text in self.log_path.read_text(errors="replace").splitlines():
            if line in text:
                found = _LOG_TIME.match(text)
                if found:
                    at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    return at - self.started_wall
        return None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float) -> tuple[float, bool]:
        """SIGTERM, then SIGKILL after ``grace`` s. Returns (seconds, killed)."""
        if self.process is None or self.process.poll() is not None:
            return 0.0, False
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
            return time.perf_counter() - started, False
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            return time.perf_counter() - started, True


class PySpy:
    """``py-spy record`` attached to a worker (optional, --py-spy)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.process = subprocess.Popen(
            [
                str(exe),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "50",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


# --------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ProbeCustomer:
    customer_id: str
    partition: int
    expected_orders: int


class Prober:
    """Purchases for chosen customers plus clock ticks; reads their profiles back."""

    def __init__(self, settings: Settings, clock_ms: int, lateness_ms: int) -> None:
        self.settings = settings
        self.at_ms = clock_ms
        self.lateness_ms = lateness_ms
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0
        )
        self.round = 0

    def close(self) -> None:
        self.producer.close()

    def consumer_at_end(self, topic: str) -> Any:
        """A consumer of every partition of ``topic``, positioned at its end as of now."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False
        )
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve the end now, before anything is produced
        return consumer

    def probe(
        self, customers: Sequence[ProbeCustomer], timeout: float
    ) -> tuple[float | None, float | None, int, list[str]]:
        """(s to first profile, s to all, how many showed the expected orders, problems)."""
        self.round += 1
        t = self.settings.topics
        # just past the previous round's tick: event time moves by seconds per round, so the
        # time-driven work the probe causes stays small (the customers due in those seconds)
        at = self.at_ms + self.round * max(PROBE_STEP_MS, self.lateness_ms + 2_000)
        consumer = self.consumer_at_end(t.profiles)
        problems: list[str] = []
        try:
            started = time.perf_counter()
            for c in customers:
                event = {
                    "event_id": f"probe-{self.round}-{c.customer_id}",
                    "customer_id": c.customer_id,
                    "occurred_at": datetime.fromtimestamp(at / 1000, tz=UTC).isoformat(),
                    "order_id": f"probe-{self.round}-{c.customer_id}",
                    "amount": "42.00",
                    "currency": self.settings.currency,
                }
                self.producer.send(
                    t.purchases, key=c.customer_id.encode(), value=orjson.dumps(event)
                )
            for p in sorted({c.partition for c in customers}):
                tick = tick_record(t.purchases, p, at + self.lateness_ms + 1_000)
                self.producer.send(
                    tick.topic,
                    key=tick.key,
                    value=tick.value,
                    partition=p,
                    headers=[(TICK_HEADER, b"1")],
                )
            self.producer.flush()
            wanted = {c.customer_id: c for c in customers}
            first: float | None = None
            ok = 0
            deadline = started + timeout
            while wanted and time.perf_counter() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    for record in batch:
                        cid = (record.key or b"").decode()
                        if cid not in wanted:
                            continue
                        c = wanted.pop(cid)
                        first = first if first is not None else time.perf_counter() - started
                        orders = orjson.loads(record.value)["profile"]["purchase_count"]
                        if record.partition != c.partition:
                            problems.append(f"{cid}: profile on partition {record.partition}")
                        if orders == c.expected_orders:
                            ok += 1
                        else:
                            problems.append(
                                f"{cid}: purchase_count {orders}, expected {c.expected_orders}"
                            )
            done = time.perf_counter() - started if not wanted else None
            if wanted:
                problems.append(f"no profile within {timeout:.0f} s for {sorted(wanted)}")
            return first, done, ok, problems
        finally:
            consumer.close()

    def changelog_layout(
        self, changelog: Any, seeded: dict[str, tuple[int, bytes]], timeout: float = 30.0
    ) -> list[str]:
        """The worker's writes of these customers since ``changelog`` was positioned (before
        the probe): the seeded key bytes, in the seeded partition. Closes ``changelog``."""
        problems: list[str] = []
        try:
            want = {key: cid for cid, (_, key) in seeded.items()}
            seen: dict[str, tuple[int, bytes]] = {}
            # states are written after the batch's outputs are acknowledged: allow for that
            deadline = time.perf_counter() + timeout
            while len(seen) < len(seeded) and time.perf_counter() < deadline:
                for batch in changelog.poll(timeout_ms=200).values():
                    for record in batch:
                        cid = want.get(record.key)
                        if cid is not None:
                            seen[cid] = (record.partition, record.key)
            for cid, (partition, key) in seeded.items():
                if cid not in seen:
                    problems.append(f"the worker wrote no changelog row for {cid} (key {key!r})")
                elif seen[cid] != (partition, key):
                    problems.append(f"{cid}: worker wrote {seen[cid]}, seeded {(partition, key)}")
            return problems
        finally:
            changelog.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Options:
    customers: int
    partitions: int
    templates: int
    seed: int
    keep: bool
    json_path: Path | None
    ready_timeout: float
    probe_timeout: float
    stop_grace: float
    worker_env: dict[str, str]
    py_spy: Path | None
    run_id: str
    processed: int = 0
    processed_events: int = 0
    only_processed: bool = False


def stack_defaults() -> dict[str, str]:
    """RFM_KAFKA_BOOTSTRAP / RFM_REDIS_URL: the environment, else .local/stack.env."""
    found: dict[str, str] = {}
    env_file = Path(os.environ.get("RFM_LOCAL_DIR", ROOT / ".local")) / "stack.env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                found[key.strip()] = value.strip()
    for key in ("RFM_KAFKA_BOOTSTRAP", "RFM_REDIS_URL"):
        if key in os.environ:
            found[key] = os.environ[key]
    return found


class Bench:
    def __init__(self, options: Options) -> None:
        self.o = options
        stack = stack_defaults()
        run = options.run_id
        base = Settings(partitions=options.partitions)
        self.bootstrap = stack.get("RFM_KAFKA_BOOTSTRAP", base.kafka_bootstrap)
        self.redis_url = stack.get("RFM_REDIS_URL", base.redis_url)
        self.full = base.model_copy(
            update={
                "kafka_bootstrap": self.bootstrap,
                "redis_url": self.redis_url,
                "topic_prefix": f"{run}.full.",
                "redis_prefix": f"{run}:full:",
                "app_id": f"{run}-full",
            }
        )
        self.empty = self.full.model_copy(
            update={
                "topic_prefix": f"{run}.empty.",
                "redis_prefix": f"{run}:empty:",
                "app_id": f"{run}-empty",
            }
        )
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{run}-"))
        self.runs: list[Run] = []
        self.seed: SeedFigures | None = None
        self.templates: Templates | None = None
        self.lateness_ms = load_rules().allowed_lateness_ms
        self.probe_round = 0
        self._probed: dict[str, int] = {}

    # ---- scenarios
    def scenario(
        self,
        name: str,
        settings: Settings,
        store: str,
        data_dir: Path,
        prober: Prober,
        probes: Sequence[ProbeCustomer],
        seeded: int,
    ) -> Run:
        log_path = self.workdir / f"{name}.log"
        run = Run(name, store, settings.app_id, seeded, log=str(log_path))
        worker = Worker(settings, store, data_dir, log_path, self.o.worker_env)
        console.print(f"[bold]{name}[/bold]: starting a worker ({store} store, log {log_path})")
        spy: PySpy | None = None
        worker.start()
        try:
            if self.o.py_spy is not None and seeded:
                self.o.py_spy.mkdir(parents=True, exist_ok=True)
                spy = PySpy(worker.pid, self.o.py_spy / f"{name}.svg")
            run.start_to_ready_s = worker.wait_ready(self.o.ready_timeout)
            run.cpu_ready_s = cpu_seconds(worker.pid)
            run.rss_ready_b = rss_bytes(worker.pid)
            restore_start = worker.log_seconds(RESTORE_START)
            restore_done = worker.log_seconds(RESTORE_DONE)
            run.start_to_restore_s = restore_start
            run.start_to_log_ready_s = worker.log_seconds(WORKER_READY)
            bulk = BULK_RESTORE.findall(worker.log_path.read_text(errors="replace"))
            if bulk:  # the store restored in bulk before Faust's recovery started
                run.restore_s = sum(float(seconds) for _, seconds in bulk)
            elif restore_start is not None and restore_done is not None:
                run.restore_s = restore_done - restore_start
                # the log has ms timestamps; /ready is polled every 0.1 s
                if run.start_to_ready_s + 0.05 < restore_done:
                    run.problems.append(
                        f"/ready answered 200 at {run.start_to_ready_s:.2f} s, before Faust "
                        f"finished reading the changelog at {restore_done:.2f} s"
                    )
            console.print(f"  ready after {run.start_to_ready_s:.1f} s; probing")
            changelog = prober.consumer_at_end(changelog_topic(settings.app_id))
            first, done, ok, problems = prober.probe(probes, self.o.probe_timeout)
            run.cpu_processing_s = cpu_seconds(worker.pid) - run.cpu_ready_s
            if spy is not None:
                spy.stop()
                spy = None
            run.probes, run.probes_ok = len(probes), ok
            run.ready_to_first_output_s = first if first is not None else float("nan")
            run.ready_to_processing_s = done if done is not None else float("nan")
            run.problems.extend(problems)
            time.sleep(1.0)
            run.rss_processing_b = rss_bytes(worker.pid)
            seeded_rows = {
                c.customer_id: (c.partition, orjson.dumps(c.customer_id)) for c in probes
            }
            layout = prober.changelog_layout(changelog, seeded_rows)
            run.problems.extend(layout)
            run.layout_ok = not layout
        except RuntimeError as exc:
            run.problems.append(str(exc))
        finally:
            if spy is not None:
                spy.stop()
            run.stop_s, run.killed = worker.stop(self.o.stop_grace)
        if run.killed:  # Faust's graceful shutdown can hang: killed, not a failure
            console.print(
                f"  [yellow]note[/yellow]: did not stop within {self.o.stop_grace:.0f} s of "
                "SIGTERM, killed"
            )
        if store == "rocksdb":
            run.data_dir_b = dir_bytes(data_dir)
        self.runs.append(run)
        for problem in run.problems:
            console.print(f"  [red]problem[/red]: {problem}")
        return run

    def execute(self) -> int:
        o = self.o
        console.print(
            f"run id {o.run_id}: {o.customers:,} customers, {o.partitions} partitions, "
            f"work dir {self.workdir}"
        )
        ensure_topics(self.full)
        ensure_topics(self.empty)
        templates = build_templates(min(o.templates, o.customers), o.seed)
        self.templates = templates
        console.print(
            f"templates: {len(templates.rows):,} customer states from {templates.events:,} "
            f"events through the domain core in {templates.seconds:.1f} s"
        )
        seed = asyncio.run(
            seed_changelog(self.bootstrap, self.full.app_id, templates, o.customers, o.partitions)
        )
        self.seed = seed
        console.print(
            f"seeded {seed.records:,} records ({seed.bytes / MIB:,.1f} MiB) into "
            f"{changelog_topic(self.full.app_id)} in {seed.seconds:.1f} s "
            f"({seed.rate:,.0f} records/s)"
        )
        prober = Prober(self.full, templates.clock_ms, self.lateness_ms)
        empty_prober = Prober(self.empty, templates.clock_ms, self.lateness_ms)
        rocks = self.workdir / "full-rocksdb"
        try:
            for name, store, data_dir, seeded in (
                ("baseline-memory", "memory", self.workdir / "empty-memory", False),
                ("a-memory-restart", "memory", self.workdir / "full-memory", True),
                ("baseline-rocksdb", "rocksdb", self.workdir / "empty-rocksdb", False),
                ("b-rocksdb-new-machine", "rocksdb", rocks, True),
                ("c-rocksdb-restart", "rocksdb", rocks, True),
            ):
                if seeded:
                    self.scenario(
                        name, self.full, store, data_dir, prober, self.seeded_probes(), o.customers
                    )
                else:
                    probes = self.new_customers(name)
                    self.scenario(name, self.empty, store, data_dir, empty_prober, probes, 0)
        finally:
            prober.close()
            empty_prober.close()
        self.report()
        return 1 if any(r.problems for r in self.runs) else 0

    def seeded_probes(self) -> list[ProbeCustomer]:
        """Per partition, a seeded customer not probed before; expects its orders + 1."""
        assert self.seed is not None
        self.probe_round += 1
        chosen = []
        for p, kept in sorted(self.seed.probes.items()):
            cid, orders = kept[min(self.probe_round, len(kept)) - 1]
            chosen.append(ProbeCustomer(cid, p, orders + self._probed.get(cid, 0) + 1))
            self._probed[cid] = self._probed.get(cid, 0) + 1
        return chosen

    def new_customers(self, tag: str) -> list[ProbeCustomer]:
        """Per partition, a customer the table does not hold; expects one order."""
        found: dict[int, ProbeCustomer] = {}
        i = 0
        while len(found) < self.o.partitions:
            cid = f"new-{tag}-{i}"
            p = partition_for(cid.encode(), self.o.partitions)
            found.setdefault(p, ProbeCustomer(cid, p, 1))
            i += 1
        return [found[p] for p in sorted(found)]

    # ---- report
    def by_name(self, name: str) -> Run | None:
        return next((r for r in self.runs if r.name == name), None)

    def figures(self) -> dict[str, Any]:
        assert self.seed is not None and self.templates is not None
        n = self.o.customers
        base = {
            "memory": self.by_name("baseline-memory"),
            "rocksdb": self.by_name("baseline-rocksdb"),
        }
        scenarios: dict[str, Any] = {}
        for r in self.runs:
            b = base[r.store]
            entry: dict[str, Any] = asdict(r)
            if r.seeded and b is not None:
                entry["recovery_s"] = r.start_to_ready_s - b.start_to_ready_s
                entry["records_per_s"] = r.seeded / r.restore_s if r.restore_s else None
            scenarios[r.name] = entry
        mem_full, mem_empty = self.by_name("a-memory-restart"), base["memory"]
        memory: dict[str, Any] = {}
        if mem_full is not None and mem_empty is not None:
            memory = {
                "rss_empty_ready_b": mem_empty.rss_ready_b,
                "rss_full_ready_b": mem_full.rss_ready_b,
                "rss_empty_processing_b": mem_empty.rss_processing_b,
                "rss_full_processing_b": mem_full.rss_processing_b,
                "per_customer_ready_b": (mem_full.rss_ready_b - mem_empty.rss_ready_b) / n,
                "per_customer_processing_b": (
                    mem_full.rss_processing_b - mem_empty.rss_processing_b
                )
                / n,
            }
        rocks_new = self.by_name("b-rocksdb-new-machine")
        return {
            "run_id": self.o.run_id,
            "customers": n,
            "partitions": self.o.partitions,
            "templates": len(self.templates.rows),
            "seed": {
                "records": self.seed.records,
                "bytes": self.seed.bytes,
                "seconds": self.seed.seconds,
                "records_per_s": self.seed.rate,
            },
            "state_bytes": {
                "value_mean": self.seed.value_mean,
                "value_p99": self.seed.value_p99,
                "value_max": self.seed.value_max,
                "key_mean": self.seed.key_mean,
            },
            "scenarios": scenarios,
            "memory": memory,
            "rocksdb_disk_per_customer_b": (
                rocks_new.data_dir_b / n if rocks_new and rocks_new.data_dir_b else None
            ),
            "worker_env": self.o.worker_env,
            "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        }

    def report(self) -> None:
        figures = self.figures()
        n = self.o.customers
        table = Table(title=f"worker recovery, {n:,} customers, {self.o.partitions} partitions")
        for column in (
            "scenario",
            "start→ready s",
            "of which restore s",
            "recovery s (− baseline)",
            "ready→first output s",
            "ready→all partitions s",
            "probe",
            "CPU to ready s",
            "CPU to processing s",
            "RSS ready MiB",
            "RSS processing MiB",
        ):
            if column == "scenario":
                table.add_column(column, no_wrap=True)
            else:
                table.add_column(column, justify="right")
        for r in self.runs:
            entry = figures["scenarios"][r.name]
            rec = entry.get("recovery_s")
            table.add_row(
                r.name,
                f"{r.start_to_ready_s:.1f}",
                "-" if r.restore_s is None else f"{r.restore_s:.1f}",
                "-" if rec is None else f"{rec:.1f}",
                f"{r.ready_to_first_output_s:.1f}",
                f"{r.ready_to_processing_s:.1f}",
                f"{r.probes_ok}/{r.probes}",
                f"{r.cpu_ready_s:.1f}",
                f"{r.cpu_processing_s:.1f}",
                f"{r.rss_ready_b / MIB:,.0f}",
                f"{r.rss_processing_b / MIB:,.0f}",
            )
        Console(width=160).print(table)
        print(f"figure: customers {n:,}, partitions {self.o.partitions}, run {self.o.run_id}")
        s = figures["seed"]
        print(
            f"figure: seed {s['records']:,} changelog records, {s['bytes'] / MIB:,.1f} MiB, "
            f"{s['seconds']:.1f} s ({s['records_per_s']:,.0f} records/s)"
        )
        b = figures["state_bytes"]
        print(
            f"figure: state bytes per customer: mean {b['value_mean']:.0f}, p99 {b['value_p99']}, "
            f"max {b['value_max']} (+ key {b['key_mean']:.0f})"
        )
        for r in self.runs:
            entry = figures["scenarios"][r.name]
            parts = [f"start→ready {r.start_to_ready_s:.1f} s"]
            if r.restore_s is not None:
                parts.append(f"restore {r.restore_s:.1f} s")
            if entry.get("recovery_s") is not None:
                parts.append(f"recovery (− baseline) {entry['recovery_s']:.1f} s")
            if entry.get("records_per_s"):
                parts.append(f"{entry['records_per_s']:,.0f} records/s restored")
            parts.append(f"ready→processing {r.ready_to_processing_s:.1f} s")
            parts.append(
                f"worker CPU {r.cpu_ready_s:.1f} s to ready, "
                f"+{r.cpu_processing_s:.1f} s to processing"
            )
            kind = "seeded customers with their history" if r.seeded else "new customers"
            parts.append(f"probe {r.probes_ok}/{r.probes} {kind}")
            if r.seeded:
                parts.append(f"changelog layout {'ok' if r.layout_ok else 'WRONG'}")
            parts.append(f"RSS {r.rss_ready_b / MIB:,.0f} → {r.rss_processing_b / MIB:,.0f} MiB")
            if r.killed:
                parts.append(f"killed {self.o.stop_grace:.0f} s after SIGTERM")
            print(f"figure: {r.name}: " + ", ".join(parts))
        m = figures["memory"]
        if m:
            print(
                f"figure: resident bytes per customer (memory store, − empty table): "
                f"{m['per_customer_ready_b']:,.0f} B when ready, "
                f"{m['per_customer_processing_b']:,.0f} B after the first events "
                f"(target ≤ {RESIDENT_TARGET_B} B)"
            )
        disk = figures["rocksdb_disk_per_customer_b"]
        if disk is not None:
            print(f"figure: RocksDB on disk per customer after (b): {disk:,.0f} B")
        for name in ("b-rocksdb-new-machine", "c-rocksdb-restart"):
            target = self.by_name(name)
            if target is not None:
                total = target.start_to_ready_s + target.ready_to_processing_s
                verdict = "meets" if total <= RECOVERY_TARGET_S else "misses"
                print(
                    f"figure: target {name}: start → back to processing {total:.1f} s "
                    f"{verdict} ≤ {RECOVERY_TARGET_S:.0f} s"
                )
        print(
            f"figure: machine {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
            "(shared: figures are indicative)"
        )
        if self.o.json_path is not None:
            self.o.json_path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
            print(f"figures written to {self.o.json_path}")

    # ---- cleanup
    def cleanup(self) -> None:
        if self.o.keep:
            console.print(f"kept: topics/groups/Redis keys {self.o.run_id}*, {self.workdir}")
            return
        delete_run_resources(self.bootstrap, self.redis_url, self.o.run_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


def delete_run_resources(bootstrap: str, redis_url: str, run_id: str) -> None:
    """Topics, consumer groups and Redis keys starting with the run id; best effort."""
    import redis

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{run_id}-cleanup")
    try:
        topics = [t for t in admin.list_topics() if t.startswith(run_id)]
        if topics:
            admin.delete_topics(topics)
        groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(run_id)]
        if groups:
            admin.delete_groups(groups)
    finally:
        admin.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{run_id}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
    finally:
        client.close()


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--worker-env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers seeded")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of every topic")
    parser.add_argument(
        "--templates",
        type=int,
        default=20_000,
        help="customers run through the domain core to make the states that are cloned",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the synthetic log")
    parser.add_argument(
        "--keep", action="store_true", help="keep topics, groups, Redis keys and data dirs"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds a worker may take to be ready"
    )
    parser.add_argument(
        "--probe-timeout", type=float, default=600.0, help="seconds for the probe's outputs"
    )
    parser.add_argument(
        "--stop-grace", type=float, default=60.0, help="seconds after SIGTERM before SIGKILL"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every worker (Faust settings such as STREAM_BUFFER_MAXSIZE)",
    )
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="DIR", help="flame graphs of seeded workers"
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="prefix of every topic, group, Redis key and temp dir (default: benchrec<random>)",
    )
    parser.add_argument(
        "--processed",
        type=int,
        default=0,
        metavar="N",
        help="also: resident bytes per customer after N customers were created by processing "
        "(the throughput workload through a memory-store worker), then after its restart",
    )
    parser.add_argument(
        "--processed-events",
        type=int,
        default=0,
        help="events of that workload (default 10 per customer)",
    )
    parser.add_argument(
        "--only-processed", action="store_true", help="run only the --processed measurement"
    )
    args = parser.parse_args(argv)
    if args.only_processed:
        return processed_memory(
            args.processed or 100_000, args.processed_events, args.keep, args.json
        )
    if args.customers < args.partitions or args.partitions < 1:
        parser.error("--customers must be at least --partitions, and --partitions at least 1")
    options = Options(
        customers=args.customers,
        partitions=args.partitions,
        templates=args.templates,
        seed=args.seed,
        keep=args.keep,
        json_path=args.json,
        ready_timeout=args.ready_timeout,
        probe_timeout=args.probe_timeout,
        stop_grace=args.stop_grace,
        worker_env=parse_env(args.worker_env),
        py_spy=args.py_spy,
        run_id=args.run_id or f"benchrec{secrets.token_hex(3)}",
    )
    options.processed = args.processed
    options.processed_events = args.processed_events
    bench = Bench(options)
    try:
        code = bench.execute()
    finally:
        bench.cleanup()
    if args.processed:
        code = max(code, processed_memory(args.processed, args.processed_events, args.keep, None))
    return code


def processed_memory(customers: int, events: int, keep: bool, json_path: Path | None) -> int:
    """Resident bytes per customer after the customers were created by processing, and after
    the same worker restarted and restored them (memory store, both times).

    The throughput benchmark's workload (``bench/workload.py``: Gamma-distributed activity, so
    some ids never occur) is produced to a fresh app's inputs; a worker started before it (its
    RSS when ready over an empty table is the baseline) reads all of it; once every record is
    consumed and the batches flushed, RSS − baseline is divided by the customers that occur.
    """
    from bench.kit import (
        delete_topics,
        run_prefix,
        stack_settings,
        worker,
        worker_consumed,
        worker_lag,
    )
    from bench.workload import Workload, generate
    from streams.tools.replay import produce

    events = events or customers * 10
    prefix = run_prefix("memproc").rstrip(".")
    settings = stack_settings(topic_prefix=f"{prefix}.", app_id=prefix, redis_prefix=f"{prefix}:")
    ensure_topics(settings)
    plan = generate(Workload(events=events, customers=customers), settings)
    inputs = (settings.topics.purchases, settings.topics.interactions)
    occurring = len({p.key for p in plan if p.topic in inputs})
    figures: dict[str, Any] = {"events": len(plan), "customers": occurring}
    data_dir = tempfile.mkdtemp(prefix=f"{prefix}-")

    def ready(port: int, proc: Any, timeout: float = 900.0) -> float:
        while True:
            proc.check()
            try:
                url = f"http://127.0.0.1:{port}/ready"
                with urllib.request.urlopen(url, timeout=2.0) as answer:
                    if int(answer.status) == 200:
                        return float(time.perf_counter() - proc.started)
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if time.perf_counter() - proc.started > timeout:
                raise RuntimeError(f"not ready after {timeout:.0f} s:\n{proc.tail()}")
            time.sleep(0.2)

    def wait_idle(port: int, proc: Any) -> float:
        """Wait until the worker has committed everything on every topic it reads (its other
        agents read the profiles and triggers after the inputs), then 3 s more; returns the
        wait. Measured mid-work, RSS holds the records and batches in flight: after a restart
        the figure of one code was 1,460 B per customer 3 s after ready, 713 B once idle."""
        begun = time.perf_counter()
        while True:
            lag = worker_lag(port)
            if lag == 0:
                break
            proc.check()
            if time.perf_counter() - begun > 600:
                raise RuntimeError("the worker still had records to commit after 10 minutes")
            time.sleep(1.0)
        time.sleep(3.0)
        return time.perf_counter() - begun

    try:
        proc, port = worker(settings, "memproc", store="memory", data_dir=data_dir)
        try:
            ready(port, proc)
            time.sleep(3.0)
            figures["rss_empty_b"] = base = proc.rss_bytes()
            console.print(
                f"processed: {len(plan):,} events, {occurring:,} customers; worker ready, "
                f"RSS {base / MIB:,.0f} MiB; producing"
            )
            produce(plan, settings)
            started = time.perf_counter()
            while (worker_consumed(port) or 0) < len(plan):
                proc.check()
                if time.perf_counter() - started > 3600:
                    raise RuntimeError("the worker did not consume the log within an hour")
                time.sleep(1.0)
            figures["processing_s"] = time.perf_counter() - started
            figures["processed_idle_s"] = wait_idle(port, proc)
            figures["rss_processed_b"] = proc.rss_bytes()
        finally:
            proc.stop(60.0)
        proc, port = worker(settings, "memproc-restart", store="memory", data_dir=data_dir)
        try:
            figures["restart_ready_s"] = ready(port, proc)
            figures["restored_idle_s"] = wait_idle(port, proc)
            figures["rss_restored_b"] = proc.rss_bytes()
        finally:
            proc.stop(60.0)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        if not keep:
            delete_topics(settings, prefix)
    per_processed = (figures["rss_processed_b"] - base) / occurring
    per_restored = (figures["rss_restored_b"] - base) / occurring
    figures |= {"processed_b_per_customer": per_processed, "restored_b_per_customer": per_restored}
    for what, value in (("created by processing", per_processed), ("restored", per_restored)):
        verdict = "meets" if value <= RESIDENT_TARGET_B else "MISSES"
        console.print(
            f"figure: resident bytes per customer (memory store, − empty table), {occurring:,} "
            f"customers {what}: {value:,.0f} B ({verdict} ≤ {RESIDENT_TARGET_B} B)"
        )
    console.print(
        f"figure: processing {len(plan):,} events took {figures['processing_s']:.1f} s; "
        f"restart to ready {figures['restart_ready_s']:.1f} s; RSS taken once nothing was left "
        f"to commit ({figures['processed_idle_s']:.0f} s and {figures['restored_idle_s']:.0f} s "
        f"later, each + 3 s); load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
