"""Faust's Kafka consumer, rewinding partitions that have no committed offset after a rebalance.

Why: records that reach an agent while a rebalance has stopped the flow are left
unacknowledged on purpose (:mod:`streams.batches`), counting on the seek to the committed
offsets that ends every rebalance to read them again. But that seek leaves a partition with no
committed offset yet where the fetcher stopped, past the records dropped: they would never be
read again (seen as a missing retention offer after kills, with the worker's commit stalled
behind the hole). This consumer seeks such partitions back to their first offset; what was
processed already is read again as a no-op (each state remembers the offsets it applied;
outputs carry ids).
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer


class RewindingConsumer(AIOKafkaConsumer):
    """See the module doc. Install with :func:`install` before the app creates its consumer."""

    async def perform_seek(self) -> None:
        await super().perform_seek()
        uncommitted = [tp for tp in self.assignment() if self._committed_offset.get(tp) is None]
        if uncommitted:
            # aiokafka wants its own TopicPartition, not Faust's TP
            await self._thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in uncommitted)
            )


def install(app: Any) -> None:
    """Make ``app`` create a :class:`RewindingConsumer`."""
    app.transport.Consumer = RewindingConsumer
