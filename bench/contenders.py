"""The non-product contenders of the throughput benchmark, each run in its own process.

    python bench/contenders.py plain  --expected N    # aiokafka loop + the product's decoders
    python bench/contenders.py core   --expected N    # the same loop driving the pure Processor
    python bench/contenders.py faust-floor            # a Faust agent that does nothing
    python bench/contenders.py faust-naive            # decode + one table write per event

``plain`` and ``core`` print one JSON line: ``{"events": n, "seconds": s, "outputs": k}``,
timed from the first record received to the last. The Faust apps serve ``/count`` on their
web port so the driver can time them the way it times the product's workers. Settings come
from the ``RFM_*`` environment (topic prefix, bootstrap), like the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import DeadLetter, Purchase
from schemas.decode import SourceRef, decode_interaction, decode_purchase
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import InRecord, MemoryPartitionStore, Processor


async def plain_loop(settings: Settings, expected: int, *, with_core: bool) -> dict[str, Any]:
    """Read both input topics from the beginning with one consumer; decode (and process)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    t = settings.topics
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        security_protocol=settings.kafka_security_protocol,
    )
    await consumer.start()
    tps = [
        TopicPartition(topic, p)
        for topic in (t.purchases, t.interactions)
        for p in range(settings.partitions)
    ]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    processor = Processor(
        settings, load_rules(), default_model(), lambda _p: MemoryPartitionStore()
    )
    now = datetime.now(UTC)
    seen = outputs = 0
    started: float | None = None
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batches:
                started = time.perf_counter()
            for tp, messages in batches.items():
                purchases = tp.topic == t.purchases
                for m in messages:
                    seen += 1
                    if with_core:
                        record = InRecord(m.topic, m.partition, m.offset, m.key, m.value)
                        outputs += len(processor.process(record))
                    else:
                        source = SourceRef(m.topic, m.partition, m.offset, m.key)
                        raw = m.value or b""
                        decoded: Purchase | Any | DeadLetter = (
                            decode_purchase(raw, source, now=now)
                            if purchases
                            else decode_interaction(raw, source, now=now)
                        )
                        outputs += isinstance(decoded, DeadLetter)
            if with_core and batches:
                outputs += len(processor.drain_profiles())
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    return {"events": seen, "seconds": elapsed, "outputs": outputs}


def faust_app(naive: bool, settings: Settings) -> Any:
    """The Faust floor (do nothing per event) or the naive way (one table write per event)."""
    import faust

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    t = settings.topics
    inputs = app.topic(t.purchases, t.interactions, key_type=bytes, value_type=bytes)
    count = 0

    @app.page("/count")
    async def count_page(web: Any, request: Any) -> Any:
        return web.text(str(count))

    if not naive:

        @app.agent(inputs)
        async def floor(stream: Any) -> None:
            nonlocal count
            async for _ in stream:
                count += 1

        return app

    table = app.Table("naive", default=None, key_type=str, value_type=bytes)
    now = datetime.now(UTC)

    @app.agent(inputs)
    async def naive_agent(stream: Any) -> None:
        """Decode, read the customer's JSON state, update it, write it back: per event."""
        nonlocal count
        async for event in stream.events():
            count += 1
            m = event.message
            source = SourceRef(m.topic, m.partition, m.offset, m.key)
            raw = event.value or b""
            decoded = (
                decode_purchase(raw, source, now=now)
                if m.topic == t.purchases
                else decode_interaction(raw, source, now=now)
            )
            if isinstance(decoded, DeadLetter):
                continue
            old = table.get(decoded.customer_id)
            state = orjson.loads(old) if old else {"orders": 0, "cents": 0, "touches": 0}
            if isinstance(decoded, Purchase):
                state["orders"] += 1
                state["cents"] += int(decoded.amount * 100)
                state["last"] = decoded.occurred_at.isoformat()
            else:
                state["touches"] += 1
            table[decoded.customer_id] = orjson.dumps(state)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("contender", choices=["plain", "core", "faust-floor", "faust-naive"])
    parser.add_argument("--expected", type=int, default=0, help="records to read (plain/core)")
    args = parser.parse_args()
    settings = Settings()
    if args.contender in ("plain", "core"):
        from streams.worker.app import use_fast_event_loop

        use_fast_event_loop()
        result = asyncio.run(
            plain_loop(settings, args.expected, with_core=args.contender == "core")
        )
        print(orjson.dumps(result).decode(), flush=True)
        return
    from streams.worker.app import use_fast_event_loop

    use_fast_event_loop()  # the loop the product's worker runs on
    app = faust_app(args.contender == "faust-naive", settings)
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--web-port", str(settings.web_port)]
    os.environ.pop("WEB_PORT", None)
    app.main()


if __name__ == "__main__":
    main()
