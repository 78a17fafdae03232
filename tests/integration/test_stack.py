"""The clients the product uses work against the real broker (Kafka 4.1) and Redis.

Kafka 4 removed the old protocol versions (KIP-896), so a client that still spoke them would
fail here first: kafka-python (admin, producer, consumer group), aiokafka, Faust (group join,
topic creation through the admin API with auto-creation off, a changelog-backed table) and
kcat, which the tests and scripts use.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from streams.config import Settings
from tests.integration.conftest import REPO_ROOT, CreateTopics, settings_env, wait_for

# func_only: the time limit covers the test, not the session fixture that may first have to
# install and start the stack on a fresh machine (that start has its own limit).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120, func_only=True)]

ROUND_TRIP_RECORDS = 20


def _records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"c{i % 5}".encode(), json.dumps({"seq": i}).encode()) for i in range(n)]


def _read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` from the beginning to the current end, without a group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                pytest.fail(f"reading {topic} to its end took more than {timeout} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        consumer.close()


def test_kafka_python_admin_producer_and_consumer_group(
    settings: Settings, admin: KafkaAdminClient, create_topics: CreateTopics
) -> None:
    topic = f"{settings.topic_prefix}kafka-python"
    create_topics([topic], partitions=4)
    described = admin.describe_topics([topic])[0]
    assert len(described["partitions"]) == 4

    sent = _records(ROUND_TRIP_RECORDS)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.app_id}-kafka-python",
        auto_offset_reset="earliest",
    )
    received: list[tuple[bytes, bytes]] = []
    try:

        def all_received() -> bool | None:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend((r.key, r.value) for r in batch)
            return True if len(received) >= len(sent) else None

        wait_for(all_received, timeout=60, what="kafka-python consumer to read the records")
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(received) == sorted(sent)


def test_topics_are_not_auto_created(settings: Settings, admin: KafkaAdminClient) -> None:
    """The broker runs with auto.create.topics.enable=false: the product creates its topics."""
    topic = f"{settings.topic_prefix}never-created"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(topic, b"x").get(timeout=5)
    finally:
        producer.close(timeout=5)
    assert topic not in admin.list_topics()


def test_aiokafka_producer_and_consumer_group(
    settings: Settings, create_topics: CreateTopics
) -> None:
    topic = f"{settings.topic_prefix}aiokafka"
    create_topics([topic], partitions=4)
    sent = _records(ROUND_TRIP_RECORDS)

    async def round_trip() -> list[tuple[bytes, bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in sent:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{settings.app_id}-aiokafka",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        received: list[tuple[bytes, bytes]] = []
        try:
            async with asyncio.timeout(60):
                while len(received) < len(sent):
                    batches = await consumer.getmany(timeout_ms=500)
                    for batch in batches.values():
                        received.extend((r.key, r.value) for r in batch)
        finally:
            await consumer.stop()
        return received

    assert sorted(asyncio.run(round_trip())) == sorted(sent)


def test_redis_round_trip(settings: Settings, redis_client: redis.Redis) -> None:
    key = f"{settings.redis_prefix}round-trip"
    redis_client.hset(key, mapping={"a": "1", "b": "2"})
    assert redis_client.hgetall(key) == {"a": "1", "b": "2"}


# Consume every partition from the beginning, exit at the end, one "key:value" line per record.
KCAT_READ_TO_END = ["-C", "-o", "beginning", "-e", "-q", "-f", "%k:%s\\n"]


def test_kcat_produce_and_consume(
    settings: Settings, create_topics: CreateTopics, kcat: str
) -> None:
    topic = f"{settings.topic_prefix}kcat"
    create_topics([topic], partitions=4)
    lines = [f"c{i % 3}:value-{i}" for i in range(12)]
    subprocess.run(
        [kcat, "-b", settings.kafka_bootstrap, "-P", "-t", topic, "-K:"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=30,
    )
    consumed = subprocess.run(
        [kcat, "-b", settings.kafka_bootstrap, "-t", topic, *KCAT_READ_TO_END],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert sorted(consumed.stdout.splitlines()) == sorted(lines)


# --- Faust --------------------------------------------------------------------------------

FAUST_EVENTS = 60
FAUST_CUSTOMERS = 6


@pytest.fixture
def faust_worker(isolated_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The probe app (tests/integration/faust_probe_app.py) as a real `faust worker` process."""
    log_path = tmp_path / "faust-worker.log"
    env = {**os.environ, **settings_env(isolated_settings), "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "faust", "-A", "tests.integration.faust_probe_app"]
    command += ["worker", "--without-web", "-l", "info"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _worker_log(tmp_path: Path) -> str:
    lines = (tmp_path / "faust-worker.log").read_text(errors="replace").splitlines()
    return "\n".join(lines[-40:])


@pytest.mark.timeout(180, func_only=True)
def test_faust_agent_table_changelog_and_redis(
    isolated_settings: Settings,
    create_topics: CreateTopics,
    redis_client: redis.Redis,
    faust_worker: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    settings = isolated_settings
    source = f"{settings.topic_prefix}probe-events"
    create_topics([source], partitions=settings.partitions)

    expected: dict[str, int] = {}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for i in range(FAUST_EVENTS):
            customer = f"c{i % FAUST_CUSTOMERS}"
            expected[customer] = expected.get(customer, 0) + i
            event = {"id": f"e{i}", "amount": i}
            producer.send(source, key=customer.encode(), value=json.dumps(event).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()

    def redis_has_every_event() -> bool | None:
        if faust_worker.poll() is not None:
            pytest.fail(
                f"faust worker exited with {faust_worker.returncode}:\n{_worker_log(tmp_path)}"
            )
        keys = [f"{settings.redis_prefix}probe:{c}" for c in expected]
        written = sum(int(redis_client.hlen(key)) for key in keys)
        return True if written >= FAUST_EVENTS else None

    wait_for(redis_has_every_event, timeout=120, what="the Faust agent to write every event")
    for customer, total in expected.items():
        amounts = redis_client.hvals(f"{settings.redis_prefix}probe:{customer}")
        assert sum(int(amount) for amount in amounts) == total

    changelog = f"{settings.app_id}-probe-totals-changelog"

    def changelog_totals() -> dict[str, int] | None:
        latest: dict[str, Any] = {}
        for key, value in _read_all(settings.kafka_bootstrap, changelog):
            latest[json.loads(key)] = json.loads(value)
        return latest if latest == expected else None

    wait_for(changelog_totals, timeout=60, what=f"{changelog} to hold every customer's total")
