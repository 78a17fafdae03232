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
