"""The Faust app: the one module that wires topics, the state table and the agents.

Agents are glue. ``customers`` reads both input topics (one stream, so purchases and
interactions never interleave their writes), hands each record to the :class:`Processor`,
waits for the outputs of a batch to be acknowledged and only then writes the changed states
(see :mod:`streams.table_store`). ``offers`` turns segment changes and churn alerts into
retention offers, with caps and idempotency in Redis. ``views`` keeps the Redis profiles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust

from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules
from streams.model_watch import ModelWatcher
from streams.processor import TICK_HEADER, InRecord, OutRecord, Processor, tick_record
from streams.table_store import TableStores

log = logging.getLogger(__name__)

BATCH_MAX = 2_000
BATCH_WITHIN_S = 0.05


@dataclass
class Topology:
    """Everything the worker runs, built from settings; tests build it too."""

    app: faust.App
    processor: Processor
    stores: TableStores
    model_watcher: ModelWatcher
    outputs: dict[str, Any]


def build(settings: Settings, rules: Rules, model: Model | None = None) -> Topology:
    """Create the Faust app with its topics, table and agents for ``settings``."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=None,
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        producer_linger=0.005,
        producer_acks=-1,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        stream_wait_empty=True,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    t = settings.topics
    inputs = app.topic(t.purchases, t.interactions, key_type=bytes, value_type=bytes)
    outputs = {
        name: app.topic(name, key_type=bytes, value_type=bytes, internal=False)
        for name in t.outputs()
    }
    purchases_topic = app.topic(t.purchases, key_type=bytes, value_type=bytes)
    table = app.Table(
        "customers",
        default=None,
        schema=faust.Schema(
            key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
        ),
        partitions=settings.partitions,
        extra_topic_configs={"cleanup.policy": "compact"},
    )
    stores = TableStores(table)
    processor = Processor(settings, rules, model or default_model(), stores.for_partition)
    watcher = ModelWatcher(settings, processor.set_model)

    @app.agent(inputs)
    async def customers(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await process_batch(events, processor, stores, outputs)

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Revoked partitions may be changed elsewhere: forget every cached state."""
        stores.reset()
        processor.forget(range(settings.partitions))

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        stores.reset()
        processor.forget(range(settings.partitions))

    @app.task
    async def watch_model() -> None:
        await watcher.run()

    if settings.live_clock:

        @app.timer(interval=settings.tick_seconds)
        async def live_clock() -> None:
            """Wall-clock ticks so that silent customers drift without any new event."""
            import time

            now_ms = int(time.time() * 1000)
            for tp in app.consumer.assignment():
                if tp.topic == t.purchases:
                    tick = tick_record(t.purchases, tp.partition, now_ms)
                    await purchases_topic.send(
                        key=tick.key,
                        value=tick.value,
                        partition=tp.partition,
                        headers={TICK_HEADER: b"1"},
                    )

    return Topology(app, processor, stores, watcher, outputs)


async def process_batch(
    events: Sequence[Any],
    processor: Processor,
    stores: TableStores,
    outputs: dict[str, Any],
) -> None:
    """Process, wait for the outputs to be acknowledged, then write states (module doc)."""
    produced: list[OutRecord] = []
    last_event: dict[int, Any] = {}
    for event in events:
        message = event.message
        last_event[message.partition] = event
        try:
            raw_headers = message.headers or ()
            pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            record = InRecord(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                tuple((str(k), bytes(v or b"")) for k, v in pairs),
            )
            produced.extend(processor.process(record))
        except Exception as exc:
            # Faust acknowledges an event whose processing raised: never let one escape.
            log.exception(
                "unexpected failure on %s[%s]@%s", message.topic, message.partition, message.offset
            )
            produced.append(processor.internal_error(message, exc))
    pending = []
    for out in produced:
        topic = outputs[out.topic]
        pending.append(await topic.send(key=out.key, value=out.value, partition=out.partition))
    if pending:
        await asyncio.gather(*pending)
    for partition, event in last_event.items():
        stores.flush(partition, event)
