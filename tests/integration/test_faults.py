"""The fault suite: every scenario ends with the verifier's verdict, ALL-RECORDS-DELIVERED.

Modelled on Kafka Streams' exactly-once system test. Each test runs real ``rfm-stream worker``
processes against a real broker and Redis, injects one kind of fault while events flow, and
ends with :func:`streams.tools.verify.verify`: every output topic read to its end and compared, by
output id, with the pure core run over the input topics (nothing missing, nothing unexpected,
no id with two contents; retention offers by the offer policy; the final table state and
profiles equal to the reference's).

* workers SIGKILLed repeatedly during a replay, one worker and three;
* the broker stopped and restarted mid-stream, Redis stopped and restarted while offers are
  made — both on a dedicated stack instance (``RFM_LOCAL_DIR=<tmp> deploy/local/stack.sh``),
  never on the shared one, which other sessions use;
* a rebalance while events flow (a worker joins, then one leaves);
* poison input of every kind, dead-lettered with the right reason code, the stream going on;
* duplicates and out-of-order delivery, within and beyond the allowed lateness;
* a burst far above what one worker processes per second: absorbed as lag, under a stated
  memory ceiling (docs/operations.md, "Limits").
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from schemas import DeadLetter
from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.processor import TICK_HEADER
from streams.tools.reference import run_reference
from streams.tools.replay import Planned, as_consumed, partition_for, plan, produce
from streams.tools.verify import (
    DELIVERED,
    Verdict,
    group_lag,
    read_inputs,
    read_table_states,
    verify,
)
from streams.worker.topics import ensure_topics
from tests.integration.conftest import STACK_SH, Stack, read_stack_env
from tests.integration.topology import (
    FAST_FAILOVER,
    LogBuilder,
    OutputReader,
    PacedProducer,
    WorkerProcess,
    compared_topics,
    group_assignment,
    is_split,
    large_log,
    wait_for_workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()
LATENESS_MS = RULES.allowed_lateness_ms
VERIFY_WAIT_S = 150.0


def delivered(
    settings: Settings,
    what: str,
    *workers: WorkerProcess,
    live: Callable[[], list[WorkerProcess]] | None = None,
    wait: float = VERIFY_WAIT_S,
) -> Verdict:
    """Run the verifier (waiting for the workers to catch up); fail unless all is delivered.

    ``workers`` (or ``live()``, for a set that changes) are checked to be alive while it waits.
    """

    def alive(_: str) -> None:
        for w in (*workers, *(live() if live else ())):
            w.check_alive()

    verdict = verify(settings, RULES, MODEL, wait=wait, progress=alive)
    report = verdict.report()
    print(f"--- {what}\n{report}")  # shown with -rP: what the scenario exercised
    if not verdict.ok:
        pytest.fail(f"{what}: the verifier found problems\n{report}", pytrace=False)
    assert report.splitlines()[-1] == DELIVERED
    return verdict


def stopped(worker: WorkerProcess) -> bool:
    """SIGTERM ended the worker cleanly within the grace period (exit 0): no hang, no crash."""
    return worker.stop() == 0


def outputs_at_least(settings: Settings, n: int, *workers: WorkerProcess) -> int:
    """Wait until the compared output topics hold at least ``n`` records; returns the count."""
    with OutputReader(settings, compared_topics(settings)) as reader:

        def enough() -> int | None:
            reader.poll(timeout_ms=200)
            return len(reader.records) if len(reader.records) >= n else None

        return wait_for_workers(enough, 120, f"{n} output records", *workers)


# --------------------------------------------------------------------------- SIGKILL


KILLS = 3
KILL_PROGRESS = 60  # new output records between two kills: the restarted group made progress


@pytest.mark.timeout(420, func_only=True)
@pytest.mark.parametrize("workers", [1, 3])
def test_workers_sigkilled_repeatedly_during_a_replay(
    isolated_settings: Settings, tmp_path: Path, workers: int
) -> None:
    """SIGKILL a random worker three times while the log is produced; restart it each time."""
    settings = isolated_settings
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=LATENESS_MS)
    rng = random.Random(workers)
    producer = PacedProducer(planned, settings, chunks=30, pause=0.5)
    kills_while_producing = 0
    with ExitStack() as stack:
        generation = [0] * workers

        def start(slot: int) -> WorkerProcess:
            w = WorkerProcess(
                settings,
                tmp_path,
                f"worker-{slot}-{generation[slot]}",
                data_dir=tmp_path / f"data-{slot}",  # the replacement reuses it
                env=FAST_FAILOVER,
            )
            stack.callback(w.stop)
            return w.start()

        current = [start(slot) for slot in range(workers)]
        current[0].wait_ready(timeout=90)
        producer.start()
        with OutputReader(settings, compared_topics(settings)) as reader:
            for _ in range(KILLS):
                target = len(reader.records) + KILL_PROGRESS

                def progressed(target: int = target) -> bool | None:
                    reader.poll(timeout_ms=200)
                    return True if len(reader.records) >= target else None

                wait_for_workers(progressed, 150, "outputs after the last restart", *current)
                slot = rng.randrange(workers)
                current[slot].kill()
                kills_while_producing += producer.is_alive()
                generation[slot] += 1
                current[slot] = start(slot)
        producer.finish()
        verdict = delivered(
            settings,
            f"{KILLS} SIGKILLs, {workers} worker(s)",
            live=lambda: current,
        )
    assert kills_while_producing >= 1, "every kill came after the log was produced: slow it"
    assert verdict.outputs.expected > 1000


# --------------------------------------------------------------------------- a stack of our own


@dataclass
class PrivateStack:
    """A stack instance of this module's own: its services may be stopped and started."""

    local_dir: Path
    addresses: Stack

    def run(self, *args: str, timeout: float = 180.0) -> str:
        done = subprocess.run(
            [str(STACK_SH), *args],
            env={**os.environ, "RFM_LOCAL_DIR": str(self.local_dir)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"stack.sh {' '.join(args)} (RFM_LOCAL_DIR={self.local_dir}) exited with "
                f"{done.returncode}:\n{done.stdout}{done.stderr}",
                pytrace=False,
            )
        return done.stdout + done.stderr

    def settings(self, run_id: str, name: str, workdir: Path) -> Settings:
        return Settings(
            kafka_bootstrap=self.addresses.kafka_bootstrap,
            redis_url=self.addresses.redis_url,
            topic_prefix=f"{run_id}.{name}.",
            redis_prefix=f"{run_id}:{name}:",
            app_id=f"{run_id}-{name}",
            data_dir=str(workdir / "worker"),
        )


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """Kafka and Redis of this module's own (free ports), wiped at the end of the module."""
    if os.environ.get("RFM_TEST_STACK") == "external":
        pytest.skip("stopping services needs a stack of our own (deploy/local/stack.sh)")
    local = tmp_path_factory.mktemp("private-stack")
    stack = PrivateStack(local, Stack("", ""))
    try:
        stack.run("start", timeout=300)
        values = read_stack_env(local / "stack.env")
        stack.addresses = Stack(values["RFM_KAFKA_BOOTSTRAP"], values["RFM_REDIS_URL"])
        yield stack
    finally:
        subprocess.run(
            [str(STACK_SH), "wipe"],
            env={**os.environ, "RFM_LOCAL_DIR": str(local)},
            capture_output=True,
            timeout=120,
            check=False,
        )


def produce_when_up(planned: list[Planned], settings: Settings, timeout: float = 90.0) -> None:
    """Produce, retrying while the broker is still coming back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            produce(planned, settings)
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


BROKER_DOWN_S = 6.0


def test_broker_stopped_and_restarted_mid_stream(
    private_stack: PrivateStack, run_id: str, tmp_path: Path
) -> None:
    settings = private_stack.settings(run_id, "broker", tmp_path)
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=LATENESS_MS)
    split = len(planned) * 3 // 5
    with WorkerProcess(settings, tmp_path, "worker", env=FAST_FAILOVER) as worker:
        worker.wait_ready(timeout=90)
        produce(planned[:split], settings)
        seen = outputs_at_least(settings, 200, worker)
        private_stack.run("stop", "kafka")
        time.sleep(BROKER_DOWN_S)
        worker.check_alive()
        private_stack.run("start", "kafka")
        produce_when_up(planned[split:], settings)
        verdict = delivered(settings, f"broker down {BROKER_DOWN_S:g} s", worker)
    assert seen < verdict.outputs.expected, "everything was out before the broker stopped"


def test_redis_stopped_and_restarted_while_offers_are_made(
    private_stack: PrivateStack, run_id: str, tmp_path: Path
) -> None:
    """Redis stops once offers are being made; the rest of the log, held back until then,
    flows while it is down; it comes back once the worker has noticed."""
    settings = private_stack.settings(run_id, "redis", tmp_path)
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=LATENESS_MS)
    producer = PacedProducer(planned, settings, chunks=10, pause=0.3, hold_at=6)
    with (
        WorkerProcess(settings, tmp_path, "worker", env=FAST_FAILOVER) as worker,
        OutputReader(settings, [settings.topics.retention_offers]) as offers,
    ):
        worker.wait_ready(timeout=90)
        producer.start()

        def offers_made() -> int | None:
            offers.poll(timeout_ms=200)
            return len(offers.records) if len(offers.records) >= 20 else None

        at_stop = wait_for_workers(offers_made, 120, "the first retention offers", worker)
        private_stack.run("stop", "redis")
        held_back = len(planned) - producer.produced
        producer.release()

        def noticed() -> bool | None:
            return True if "Redis unavailable" in worker.log_text() else None

        wait_for_workers(noticed, 90, "the worker to notice that Redis is down", worker)
        private_stack.run("start", "redis")
        producer.finish()
        verdict = delivered(settings, "Redis down while offers were made", worker)
    assert held_back > 0, "the whole log was produced before Redis stopped"
    assert verdict.offers is not None
    assert at_stop < verdict.offers.expected, "every offer was made before Redis stopped"


# --------------------------------------------------------------------------- rebalance


@pytest.mark.timeout(420, func_only=True)
def test_rebalance_while_events_flow(isolated_settings: Settings, tmp_path: Path) -> None:
    """A second worker joins while the log flows, then the first one leaves (SIGTERM)."""
    settings = isolated_settings
    purchases = settings.topics.purchases
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=LATENESS_MS)
    # half the log waits for worker-b to join, so that the join lands mid-stream
    producer = PacedProducer(planned, settings, chunks=40, pause=0.6, hold_at=20)
    everything = {*range(settings.partitions)}
    with ExitStack() as stack:
        a = stack.enter_context(WorkerProcess(settings, tmp_path, "worker-a", env=FAST_FAILOVER))
        a.wait_ready(timeout=90)
        producer.start()
        outputs_at_least(settings, 100, a)
        b = stack.enter_context(WorkerProcess(settings, tmp_path, "worker-b", env=FAST_FAILOVER))

        def split() -> bool | None:
            shared = is_split(group_assignment(settings, purchases), 2, settings.partitions)
            return True if shared and a.is_ready() and b.is_ready() else None

        wait_for_workers(split, 120, "worker-b to join and take a share", a, b)
        held_back = len(planned) - producer.produced
        producer.release()
        assert stopped(a), a.log_tail()

        def took_over() -> bool | None:
            all_of_them = group_assignment(settings, purchases) == [everything]
            return True if all_of_them and b.is_ready() else None

        wait_for_workers(took_over, 120, "worker-b to take over worker-a's partitions", b)
        producer.finish()
        delivered(settings, "a worker joined, then one left", b)
    assert held_back > 0, "worker-b joined after the whole log was produced"


# --------------------------------------------------------------------------- poison


@dataclass(frozen=True)
class Poison:
    """One bad input record and the dead-letter reason code it must get."""

    topic: str  # "purchases" | "interactions"
    key: str
    value: bytes | None
    code: str
    what: str
    tick: bool = False


POISON_T0 = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
POISON_CUSTOMERS = [f"pz{i}" for i in range(8)]


def poison_records() -> list[Poison]:
    """Every kind of bad input, each unique, keyed by customers who have valid events too."""
    rng = random.Random(8)
    at = (POISON_T0 + timedelta(days=3)).isoformat().replace("+00:00", "Z")

    def purchase(n: int, **changes: object) -> dict[str, object]:
        event: dict[str, object] = {
            "event_id": f"bad-{n}",
            "customer_id": POISON_CUSTOMERS[n % len(POISON_CUSTOMERS)],
            "occurred_at": at,
            "order_id": f"bad-o-{n}",
            "amount": "10.00",
            "currency": "USD",
        }
        return event | changes

    def touch(n: int, **changes: object) -> dict[str, object]:
        event: dict[str, object] = {
            "event_id": f"bad-{n}",
            "customer_id": POISON_CUSTOMERS[n % len(POISON_CUSTOMERS)],
            "occurred_at": at,
            "type": "page_view",
        }
        return event | changes

    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    junk = bytes(rng.randrange(128, 256) for _ in range(300))
    # fmt: off
    specs: list[tuple[str, bytes | None, str, str]] = [
        ("purchases", b'{"event_id": "bad-0", "customer_id": "pz0", "amount', "invalid_json",
         "malformed JSON, cut short"),
        ("interactions", b'{"event_id": "bad-1", "type": "page_view",,}', "invalid_json",
         "malformed JSON, a stray comma"),
        ("purchases", orjson.dumps(purchase(2, note="x" * 70_000)), "payload_too_large",
         "an oversized purchase (> 64 KiB)"),
        ("interactions", orjson.dumps(touch(3, blob="y" * 80_000)), "payload_too_large",
         "an oversized interaction"),
        ("purchases", orjson.dumps(purchase(4, amount={"value": 10})), "invalid_event",
         "wrong type: amount is an object"),
        ("purchases", orjson.dumps(purchase(5, customer_id=12345)), "invalid_event",
         "wrong type: customer_id is a number"),
        ("purchases", orjson.dumps(purchase(6, occurred_at=1_740_000_000)), "invalid_event",
         "wrong type: occurred_at is an epoch number"),
        ("interactions", orjson.dumps(touch(7, type=["page_view"])), "invalid_event",
         "wrong type: interaction type is an array"),
        ("purchases", orjson.dumps([purchase(8)]), "invalid_event",
         "wrong type: an array, not an object"),
        ("purchases", b'"just a string 9"', "invalid_event", "wrong type: a JSON string"),
        ("purchases", orjson.dumps(purchase(10, schema_version="one")), "invalid_event",
         "wrong type: schema_version is a string"),
        ("purchases", orjson.dumps(purchase(11, occurred_at="2096-02-03T09:00:00Z")),
         "timestamp_out_of_range", "a timestamp decades ahead"),
        ("interactions", orjson.dumps(touch(12, occurred_at=soon)), "timestamp_out_of_range",
         "a timestamp three days ahead of the wall clock"),
        ("purchases", orjson.dumps(purchase(13, occurred_at="1970-01-01T00:00:00Z")),
         "timestamp_out_of_range", "a zero (epoch) date"),
        ("purchases", orjson.dumps({"schema_version": 2} | purchase(14)),
         "unsupported_schema_version", "schema_version 2"),
        ("interactions", orjson.dumps({"schema_version": 99} | touch(15)),
         "unsupported_schema_version", "schema_version 99"),
        ("purchases", junk, "not_utf8", "binary junk"),
        ("interactions", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + junk[:40], "not_utf8",
         "a gzip header"),
        ("purchases", b"\x00\x01\x02\x03 NUL bytes 18", "invalid_json", "control bytes"),
        ("purchases", b"\xef\xbb\xbf" + orjson.dumps(purchase(19)), "invalid_json",
         "JSON behind a byte-order mark"),
        ("purchases", b"", "invalid_json", "an empty payload"),
        ("interactions", None, "invalid_json", "a tombstone (no value)"),
        ("purchases", orjson.dumps(purchase(22, amount="-5.00")), "amount_out_of_range",
         "a negative amount"),
        ("purchases", orjson.dumps(purchase(23, amount="99999999.00")), "amount_out_of_range",
         "an absurd amount"),
        ("purchases", orjson.dumps(purchase(24, currency="EUR")), "invalid_event",
         "another currency"),
    ]
    # fmt: on
    out = [
        Poison(topic, POISON_CUSTOMERS[n % len(POISON_CUSTOMERS)], value, code, what)
        for n, (topic, value, code, what) in enumerate(specs)
    ]
    out.append(Poison("purchases", "pz1", b"tick junk 25", "invalid_event", "a bad tick", True))
    return out


def test_poison_input_is_dead_lettered_and_the_stream_goes_on(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """Every kind of bad input ends as a dead letter with the right reason code; the valid
    events of the same customers, on the same partitions, before and after it, are applied.

    Extends test_topology's invalid-input test (malformed JSON, naive time, currency, schema
    version) to the whole catalogue, including bytes no JSON-lines log can carry.
    """
    settings = isolated_settings
    t = settings.topics
    ensure_topics(settings)
    before, after = LogBuilder(), LogBuilder()
    for i, c in enumerate(POISON_CUSTOMERS):
        before.purchase(f"{c}-1", c, POISON_T0 + timedelta(hours=i), "40.00")
        after.purchase(f"{c}-2", c, POISON_T0 + timedelta(days=9, hours=i), "55.00")
    first = [p for p in plan(before.lines, settings) if not p.headers]  # no end-of-log tick
    last = plan(after.lines, settings, lateness_ms=LATENESS_MS)
    poison = poison_records()
    keyed = {p.key for p in poison}
    assert len({partition_for(k.encode(), settings.partitions) for k in keyed}) > 1

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(first, settings)
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            max_in_flight_requests_per_connection=1,
            max_request_size=1 << 20,
            **settings.kafka_client_options(),
        )
        try:
            for p in poison:
                topic = t.purchases if p.topic == "purchases" else t.interactions
                producer.send(
                    topic,
                    key=p.key.encode(),
                    value=p.value,
                    partition=partition_for(p.key.encode(), settings.partitions),
                    headers=[(TICK_HEADER, b"1")] if p.tick else None,
                ).get(30)
        finally:
            producer.close()
        produce(last, settings)
        verdict = delivered(settings, "poison input", worker)

    # each bad record has its dead letter, with the right reason and the payload kept
    inputs = read_inputs(settings)
    with OutputReader(settings, [t.dead_letters]) as reader:
        reader.read_to_end()
        letters = {o.id: o.event for o in reader.records}
    wrong = []
    for p in poison:
        topic = t.purchases if p.topic == "purchases" else t.interactions
        record = next(r for r in inputs if r.topic == topic and r.value == p.value)
        letter = letters.get(f"dl:{topic}:{record.partition}:{record.offset}")
        if not isinstance(letter, DeadLetter) or letter.reason_code != p.code:
            wrong.append((p.what, p.code, getattr(letter, "reason_code", None)))
        elif p.value is not None and letter.payload_b64 is not None:
            assert base64.b64decode(letter.payload_b64) == p.value, p.what
    assert not wrong, f"(poison, wanted, got): {wrong}"
    assert sum(verdict.dead_letters.values()) == len(poison)
    # and the valid events after the poison were applied: two orders per customer
    states = read_table_states(settings)
    assert {c: states[c].orders for c in POISON_CUSTOMERS} == dict.fromkeys(POISON_CUSTOMERS, 2)


# --------------------------------------------------------------------------- late and repeated


@dataclass
class LateLog:
    lines: list[bytes]
    late: set[bytes]  # lines that must become late_event dead letters (interactions)
    repeats: int  # repeated events (within the late horizon for purchases): no-ops, counted
    corrections: int  # purchases an hour late: folded in as corrections


def late_log() -> LateLog:
    """Delivery order: reordering within the lateness, far beyond it, and repeats."""
    b = LogBuilder()
    t0 = datetime(2025, 4, 7, 8, 0, tzinfo=UTC)
    late: set[bytes] = set()
    repeats = corrections = 0
    for day in range(12):
        for i in range(6):
            c = f"lt{i}"
            at = t0 + timedelta(days=day, minutes=10 * i)
            line = b.purchase(f"{c}-{day}", c, at, f"{20 + 5 * i}.00")
            b.interaction(f"{c}-{day}-v", c, at - timedelta(minutes=3))
            if i == 1 and day % 3 == 1:
                # 2 s behind its partition's clock: within the lateness, reordered and applied
                b.purchase(f"{c}-{day}-r", c, at - timedelta(seconds=2), "7.00")
            if i == 2 and day % 4 == 2:
                # an hour behind: beyond the allowed lateness, within the late horizon
                b.purchase(f"{c}-{day}-late", c, at - timedelta(hours=1), "9.00")
                corrections += 1
                late.add(b.interaction(f"{c}-{day}-late-v", c, at - timedelta(hours=2)))
            if i == 3 and day % 2 == 0:
                b.raw(line)  # a producer retry: the same event again, still pending
                repeats += 1
            if i == 4 and day % 3 == 0:
                b.interaction(f"{c}-{day}-v", c, at - timedelta(minutes=3))  # a repeated id
                repeats += 1
            if i == 5 and day == 6:
                # a repeat days later: far behind the clock, within the late horizon: a no-op
                b.raw(b.lines[0])
                repeats += 1
    return LateLog(b.lines, late, repeats, corrections)


def test_duplicates_and_out_of_order_delivery(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    log = late_log()
    planned = plan(log.lines, settings, lateness_ms=LATENESS_MS, order="delivery")
    ref = run_reference(settings, RULES, MODEL, as_consumed(planned))
    assert ref.processor is not None
    assert ref.processor.counters.duplicates == log.repeats > 0

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)
        verdict = delivered(settings, "duplicates and late events", worker)
        duplicates_counted = worker.metric("rfm_duplicates_total")
    assert verdict.input_duplicates == log.repeats
    assert duplicates_counted == log.repeats, "rfm_duplicates must count every repeated event"
    with OutputReader(settings, [settings.topics.dead_letters]) as reader:
        reader.read_to_end()
        letters = [o.event for o in reader.records]
    payloads = {base64.b64decode(d.payload_b64 or "") for d in letters if isinstance(d, DeadLetter)}
    codes = {d.reason_code for d in letters if isinstance(d, DeadLetter)}
    assert codes == {"late_event"}
    assert payloads == log.late, "exactly the interactions beyond the lateness are dead-lettered"
    assert verdict.dead_letters["late_event"] == len(log.late)
    states = read_table_states(settings)
    # the reordered ones (within the lateness) were applied: 12 orders + 4 reordered for lt1
    assert states["lt1"].orders == 16
    # the hour-late ones were folded in as corrections: 12 orders + 3 late for lt2
    assert log.corrections == 3
    assert states["lt2"].orders == 15


# --------------------------------------------------------------------------- back-pressure

BURST = 100_000
BURST_CUSTOMERS = 400
BURST_PURCHASE_EVERY = 50  # the rest are interactions: cheap to verify, as costly to consume
RSS_CEILING_MB = 350  # docs/operations.md, "Limits": a worker with few customers


def burst_lines(n: int = BURST, customers: int = BURST_CUSTOMERS) -> list[bytes]:
    rng = random.Random(11)
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    span_s = 30 * 86_400
    lines = []
    for i in range(n):
        at = (t0 + timedelta(seconds=span_s * i // n)).isoformat().replace("+00:00", "Z")
        cid = f"k{rng.randrange(customers)}"
        event: dict[str, object] = {"event_id": f"e{i}", "customer_id": cid, "occurred_at": at}
        if i % BURST_PURCHASE_EVERY == 0:
            event |= {"order_id": f"o{i}", "amount": "12.50", "currency": "USD"}
        else:
            event["type"] = "page_view"
        lines.append(orjson.dumps(event))
    return lines


@pytest.mark.timeout(480, func_only=True)
def test_a_burst_far_above_capacity_is_absorbed(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """100k events at once: the lag grows, memory stays under the ceiling, nothing is lost."""
    settings = isolated_settings
    ensure_topics(settings)
    planned = plan(burst_lines(), settings, lateness_ms=LATENESS_MS)
    samples: list[tuple[float, float, int]] = []  # (seconds, RSS MB, group lag)
    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        idle_mb = worker.rss_mb() or 0.0
        feeding = threading.Thread(target=produce, args=(planned, settings), daemon=True)
        started = time.monotonic()
        feeding.start()

        def caught_up() -> bool | None:
            lag = sum(group_lag(settings).values())
            samples.append((time.monotonic() - started, worker.rss_mb() or 0.0, lag))
            return True if lag == 0 and not feeding.is_alive() else None

        wait_for_workers(caught_up, 400, "the worker to absorb the burst", worker, interval=1.0)
        delivered(settings, f"a burst of {BURST:,} events", worker)
    peak_mb = max(mb for _, mb, _ in samples)
    peak_lag = max(lag for _, _, lag in samples)
    seconds = samples[-1][0]
    print(
        f"burst {len(planned):,} records absorbed in {seconds:.0f} s; peak lag {peak_lag:,}; "
        f"RSS idle {idle_mb:.0f} MB, peak {peak_mb:.0f} MB (ceiling {RSS_CEILING_MB} MB)"
    )
    assert peak_lag >= BURST // 10, "the burst never built up a lag: make it bigger"
    assert peak_mb < RSS_CEILING_MB, f"RSS peaked at {peak_mb:.0f} MB: {samples[::10]}"
