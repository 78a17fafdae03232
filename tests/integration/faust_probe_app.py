"""A minimal Faust app for the stack tests: one agent, a changelog-backed table, Redis writes.

Started by tests/integration/test_stack.py as
``python -m faust -A tests.integration.faust_probe_app worker``; configured only through the
RFM_* environment variables, like the real worker.
"""

from __future__ import annotations

from typing import Any

import faust
import redis.asyncio as aioredis

from streams.config import load_settings

settings = load_settings()

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
    store="memory://",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    datadir=settings.data_dir,
    web_enabled=False,
)

events = app.topic(
    f"{settings.topic_prefix}probe-events", key_serializer="raw", value_serializer="json"
)
totals = app.Table(
    "probe-totals",
    default=int,
    partitions=settings.partitions,
    key_type=str,
    value_type=int,
)
store = aioredis.Redis.from_url(settings.redis_url)


@app.agent(events)
async def count_amounts(stream: faust.StreamT[dict[str, Any]]) -> None:
    """Add each event's amount to its customer's total; record the event in Redis."""
    async for key, event in stream.items():
        customer = key.decode()
        totals[customer] += int(event["amount"])
        await store.hset(f"{settings.redis_prefix}probe:{customer}", event["id"], event["amount"])
