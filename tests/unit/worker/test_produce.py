"""Batched producing: the default partitioner's choice, order and offsets within batches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from streams.partitioning import key_partition
from streams.worker.produce import offset_of, send_batched


class Batch:
    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None) -> Any:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


@dataclass
class Meta:
    offset: int


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}


class Client:
    cluster = Cluster()

    async def _wait_on_metadata(self, topic: str) -> None:
        return None


class Producer:
    """aiokafka's batch API as the worker uses it; batches hold ``room`` records."""

    client = Client()

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, Batch]] = []
        self.next_offset: dict[tuple[str, int], int] = {}

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch is handed over closed: complete, sent without lingering"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        base = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = base + len(batch.records)
        future.set_result(Meta(base))
        self.sent.append((topic, partition, batch))
        return future


def test_records_keep_their_order_per_partition_and_get_their_offsets() -> None:
    records: list[tuple[str, int | None, bytes | None, bytes | None]] = [
        ("out", None if i % 3 else i % 2, f"c{i % 7}".encode(), f"v{i}".encode()) for i in range(50)
    ]
    records.append(("out", None, b"c1", None))  # a tombstone goes like any other record
    producer = Producer(room=4)

    async def run() -> list[tuple[str, int, int, bytes | None, bytes | None]]:
        placed = await send_batched(producer, records)
        assert len(placed) == len(records)
        got = []
        for (topic, partition, key, value), (future, index) in zip(records, placed, strict=True):
            meta = await future
            where = partition if partition is not None else key_partition(key or b"", 3)
            got.append((topic, where, offset_of(meta, index), key, value))
        return got

    got = asyncio.run(run())
    assert all(len(batch.records) <= 4 for _, _, batch in producer.sent)
    assert len(producer.sent) < len(records) / 2, "records travel in batches"
    # per partition: offsets 0, 1, 2, ... in the order the records were given
    for partition in range(3):
        mine = [(offset, key, value) for _, p, offset, key, value in got if p == partition]
        assert [offset for offset, _, _ in mine] == list(range(len(mine)))
        stored = [r for _, p, batch in producer.sent if p == partition for r in batch.records]
        assert stored == [(key, value) for _, key, value in mine]


def test_aiokafka_sends_a_closed_batch_without_lingering() -> None:
    """What send_batched relies on: aiokafka lingers on an open batch, not on a closed one.

    A linger of RFM_PRODUCER_LINGER_MS on each of a batch's two acknowledged sends (outputs,
    then the changelog) was that much latency per batch; aiokafka is pinned, and this says
    when a new version changes the rule.
    """
    from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
    from aiokafka.structs import TopicPartition

    def batch(closed: bool) -> MessageBatch:
        builder = BatchBuilder(16_384, 0)
        assert builder.append(key=b"k", value=b"v", timestamp=None) is not None
        if closed:
            builder.close()
        return MessageBatch(TopicPartition("t", 0), builder, ttl=30, linger_time=0.5)

    async def remaining() -> tuple[float | None, float | None]:
        return batch(closed=False).remaining_linger(), batch(closed=True).remaining_linger()

    open_wait, closed_wait = asyncio.run(remaining())  # a batch's future needs a running loop
    assert open_wait is not None and open_wait > 0.4
    assert closed_wait is None
