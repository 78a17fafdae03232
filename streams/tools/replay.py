"""Recorded event logs → input records, in event-time order, with the producer's partitioning.

Two formats:

* **JSON lines** — each line is either an input event (a purchase when it has ``order_id``,
  otherwise an interaction) or an envelope ``{"topic": "purchases"|"interactions",
  "key": "...", "value": <event object or raw string>}`` (how a log with invalid records is
  recorded). Lines that are not JSON go to the purchases topic as they are, so they are
  dead-lettered like any bad input.
* **CDNOW** — the CDNOW text log (``customer_id YYYYMMDD cds dollars``): one purchase per line,
  at midnight UTC, in USD.

:func:`plan` turns a log into the exact records to produce (topic, partition, key, value),
partitioned the way Kafka's default partitioner does (murmur2 of the key). The replay command
produces them; the tests run the same plan through the pure :class:`Processor` to know the
expected outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from streams.config import Settings
from streams.partitioning import key_partition
from streams.processor import TICK_HEADER, InRecord, tick_record

LogFormat = Literal["jsonl", "cdnow"]
Order = Literal["event_time", "delivery"]

# Event times outside this range cannot be valid input (the decoder dead-letters them); they
# must not steer the replay's pacing or its end-of-log tick either.
_EARLIEST_MS = 631_152_000_000  # 1990-01-01
_LATEST_MS = 4_102_444_800_000  # 2100-01-01


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to produce, with the event time that orders it (None: keep its place)."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    at_ms: int | None
    headers: tuple[tuple[str, bytes], ...] = ()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (the Java client's, kafka-python's, aiokafka's)."""
    return key_partition(key, partitions)


def _at_ms(value: Any) -> int | None:
    if not isinstance(value, dict):
        return None
    raw = value.get("occurred_at")
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    at_ms = int(when.timestamp() * 1000)
    return at_ms if _EARLIEST_MS <= at_ms < _LATEST_MS else None


def _jsonl_records(lines: Iterable[bytes], settings: Settings) -> Iterator[Planned]:
    t = settings.topics
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            parsed: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and "topic" in parsed and "value" in parsed:
            topic = t.interactions if parsed["topic"] == "interactions" else t.purchases
            body = parsed["value"]
            value = body.encode() if isinstance(body, str) else orjson.dumps(body)
            key = str(parsed.get("key") or "").encode()
            at = _at_ms(body)
        elif isinstance(parsed, dict):
            topic = t.purchases if "order_id" in parsed else t.interactions
            value, at = line, _at_ms(parsed)
            key = str(parsed.get("customer_id") or "").encode()
        else:
            topic, value, at, key = t.purchases, line, None, b""
        if not key:
            # no customer to key by: a stable key from the content keeps partitioning repeatable
            key = b"unkeyed-" + hashlib.blake2b(line, digest_size=6).hexdigest().encode()
        yield Planned(topic, partition_for(key, settings.partitions), key, value, at)
        del number


def _cdnow_records(lines: Iterable[bytes], settings: Settings) -> Iterator[Planned]:
    topic = settings.topics.purchases
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) == 5:  # CDNOW_sample.txt: master id, sample id, date, cds, dollars
            fields = fields[1:]
        if len(fields) != 4 or not fields[1].isdigit():
            continue  # header
        customer, day, _cds, dollars = (f.decode() for f in fields)
        when = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
        event = {
            "event_id": f"cdnow-{number}",
            "customer_id": customer,
            "occurred_at": when.isoformat(),
            "order_id": f"cdnow-{number}",
            "amount": dollars,
            "currency": "USD",
        }
        key = customer.encode()
        yield Planned(
            topic,
            partition_for(key, settings.partitions),
            key,
            orjson.dumps(event),
            int(when.timestamp() * 1000),
        )


def detect_format(path: Path) -> LogFormat:
    return "cdnow" if path.suffix == ".txt" else "jsonl"


def plan(
    lines: Iterable[bytes],
    settings: Settings,
    fmt: LogFormat = "jsonl",
    *,
    end_tick_ms: int | None = None,
    lateness_ms: int = 0,
    order: Order = "event_time",
) -> list[Planned]:
    """The records to produce, ending with clock ticks.

    ``event_time`` (default) sorts by event time, stably; records without an event time keep
    their place after the record before them. ``delivery`` keeps the file's order, for logs
    recorded as they arrived: late records then really arrive late (and are dead-lettered
    when beyond the allowed lateness). The final tick on every purchase partition moves the
    clock to ``end_tick_ms`` (default: the last event time plus the allowed lateness and
    1 ms), so everything pending is evaluated.
    """
    source = _cdnow_records if fmt == "cdnow" else _jsonl_records
    records = list(source(lines, settings))
    if order == "delivery":
        ordered = records
    else:
        keyed: list[tuple[int, int, Planned]] = []
        last = -(2**62)
        for index, record in enumerate(records):
            last = record.at_ms if record.at_ms is not None else last
            keyed.append((last, index, record))
        keyed.sort(key=lambda k: (k[0], k[1]))
        ordered = [k[2] for k in keyed]
    times = [r.at_ms for r in ordered if r.at_ms is not None]
    if end_tick_ms is None and times:
        end_tick_ms = max(times) + lateness_ms + 1
    if end_tick_ms is not None:
        for partition in range(settings.partitions):
            tick = tick_record(settings.topics.purchases, partition, end_tick_ms)
            ordered.append(
                Planned(
                    tick.topic,
                    partition,
                    tick.key,
                    tick.value,
                    end_tick_ms,
                    ((TICK_HEADER, b"1"),),
                )
            )
    return ordered


def read_lines(path: Path) -> list[bytes]:
    with path.open("rb") as f:
        return f.readlines()


def as_consumed(planned: list[Planned]) -> list[InRecord]:
    """The records as a consumer will see them in fresh topics: offsets in produce order."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for p in planned:
        offset = offsets.get((p.topic, p.partition), 0)
        offsets[(p.topic, p.partition)] = offset + 1
        out.append(InRecord(p.topic, p.partition, offset, p.key, p.value, p.headers))
    return out


def produce(
    planned: list[Planned],
    settings: Settings,
    *,
    speed: float = 0.0,
    progress: Any = None,
) -> int:
    """Produce the plan to Kafka in order; ``speed`` > 0 paces event time (x real time).

    Every record goes to its planned partition, so per-partition order is the plan's order.
    Returns the number of records produced. ``progress`` is called with each count produced.
    """
    import time

    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=20,
        max_in_flight_requests_per_connection=1,  # keeps each partition's order on retries
        retries=10,
        **settings.kafka_client_options(),
    )
    started, first_at = time.monotonic(), None
    try:
        for count, record in enumerate(planned, start=1):
            if speed > 0 and record.at_ms is not None:
                first_at = record.at_ms if first_at is None else first_at
                due = started + (record.at_ms - first_at) / 1000 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    producer.flush()
                    time.sleep(delay)
            producer.send(
                record.topic,
                key=record.key,
                value=record.value,
                partition=record.partition,
                headers=list(record.headers) or None,
            )
            if progress is not None and count % 1000 == 0:
                progress(1000)
        producer.flush()
        if progress is not None:
            progress(len(planned) % 1000)
        return len(planned)
    finally:
        producer.close()
