"""Distribute the population model: read the model topic at start-up, then follow it.

Every worker reads every partition of the (compacted, one-partition) model topic without a
consumer group, so all workers see every published model. At start-up the worker blocks until
it has read the topic to its end (:func:`load_current_model`), so it never classifies with a
model older than the newest published one; afterwards :class:`ModelWatcher` hands each new
model to the processor, which adopts it without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as SyncTopicPartition

from streams.config import Settings
from streams.domain.model import Model

log = logging.getLogger(__name__)
MODEL_KEY = b"current"


def _decode(raw: bytes | None) -> Model | None:
    if raw is None:
        return None
    try:
        return Model.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring an unreadable model record: %s", exc)
        return None


def load_current_model(settings: Settings, timeout_s: float = 30.0) -> Model | None:
    """The newest model on the model topic, or None when none was published yet."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_client_options(),
    )
    try:
        partitions = consumer.partitions_for_topic(settings.topics.model) or {0}
        tps = [SyncTopicPartition(settings.topics.model, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        current: Model | None = None
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    model = _decode(record.value)
                    current = model or current
        return current
    finally:
        consumer.close()


def publish_model(settings: Settings, model: Model) -> None:
    """Publish ``model`` as the current one; workers adopt it within a second or so."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_client_options()
    )
    try:
        producer.send(settings.topics.model, key=MODEL_KEY, value=model.to_json()).get(30)
    finally:
        producer.close()


class ModelWatcher:
    """Follows the model topic from its end and calls ``on_model`` for each new model."""

    def __init__(self, settings: Settings, on_model: Callable[[Model], None]) -> None:
        self.settings = settings
        self.on_model = on_model

    async def run(self) -> None:
        topic = self.settings.topics.model
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            **self.settings.kafka_client_options(),
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or {0}
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        model = _decode(record.value)
                        if model is not None:
                            self.on_model(model)
        except asyncio.CancelledError:
            raise
        finally:
            await consumer.stop()
