"""Records to Kafka as whole batches: one future per (topic, partition) batch, not per record.

A worker's batch of events produces thousands of records (outputs, profiles, changelog rows).
Through the producer's ``send`` each costs a future, a metadata lookup, a partitioner call
and an append under the accumulator (about a quarter of a worker's CPU). Here records are
grouped per partition into the producer's own ``BatchBuilder`` and handed over with
``send_batch`` (aiokafka's public batch API), so a produce request carries hundreds of
records and the per-record cost is one append.

Partitions: a record with ``partition=None`` goes where the producer's default partitioner
sends it (murmur2 of the key, as Kafka's Java clients do; Faust's producer uses
``aiokafka.partitioner.DefaultPartitioner``), computed in C by :mod:`streams.partitioning`.
A record without a key is left to the producer's own choice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from streams.partitioning import key_partition

Record = tuple[str, int | None, bytes | None, bytes | None]
"""(topic, partition or None for "by key", key, value; None is a tombstone)."""

Sent = tuple["asyncio.Future[Any]", int]
"""Where a record went: its batch's future (resolves to the batch's metadata) and its index."""


def aiokafka_producer(producer: Any) -> Any:
    """The aiokafka producer behind Faust's (``faust.transport.drivers.aiokafka.Producer``)."""
    ensure = getattr(producer, "_ensure_producer", None)
    return ensure() if ensure is not None else producer


async def send_batched(producer: Any, records: Sequence[Record]) -> list[Sent]:
    """Hand every record to the producer in per-partition batches; returns where each went.

    Returns once all are queued (not acknowledged): await the futures for that. Within a
    partition the records keep their order. Raises what the producer raises (e.g. a topic
    whose metadata cannot be had); records queued before that stay queued.
    """
    aio = aiokafka_producer(producer)
    counts: dict[str, int] = {}
    open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
    sent: list[Sent | None] = [None] * len(records)

    async def submit(topic: str, partition: int, builder: Any, members: list[int]) -> None:
        # A closed batch goes out without waiting for the producer's linger: it is complete
        # (nothing else is added to it) and its sender awaits the acknowledgement next, so
        # lingering only added up to RFM_PRODUCER_LINGER_MS to every batch, twice per input
        # batch (outputs, then the changelog). aiokafka sends a closed builder at once
        # (MessageBatch.remaining_linger), and no ``producer.send`` appends to it.
        builder.close()
        future = await aio.send_batch(builder, topic, partition=partition)
        for index, member in enumerate(members):
            sent[member] = (future, index)

    for i, (topic, partition, key, value) in enumerate(records):
        if partition is None:
            if key is None:
                partition = aio._partition(topic, None, None, value, None, value)
            else:
                n = counts.get(topic)
                if n is None:
                    await aio.client._wait_on_metadata(topic)
                    n = counts[topic] = len(aio.client.cluster.partitions_for_topic(topic))
                partition = key_partition(key, n)
        tp = (topic, partition)
        entry = open_batches.get(tp)
        if entry is None:
            entry = open_batches[tp] = (aio.create_batch(), [])
        if entry[0].append(key=key, value=value, timestamp=None) is None:  # full
            await submit(topic, partition, *entry)
            entry = open_batches[tp] = (aio.create_batch(), [])
            if entry[0].append(key=key, value=value, timestamp=None) is None:
                size = len(key or b"") + len(value or b"")
                raise ValueError(f"a record of {size:,} bytes for {topic} exceeds a whole batch")
        entry[1].append(i)
    for (topic, partition), (builder, members) in open_batches.items():
        await submit(topic, partition, builder, members)
    done = [s for s in sent if s is not None]
    assert len(done) == len(records), "every record was handed over with its batch"
    return done


def offset_of(metadata: Any, index: int) -> int:
    """The offset of the ``index``-th record of a batch acknowledged with ``metadata``."""
    return int(metadata.offset) + index
