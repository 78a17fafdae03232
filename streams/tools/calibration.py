"""Read every customer's state from the table's changelog (all partitions) for calibration.

Population quantiles must come from all customers, not one worker's partitions: the
changelog topic holds them all, so calibration reads it to its end, keeping the newest value
per key.
"""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition

from streams.config import Settings
from streams.domain.state import CustomerState

TABLE_NAME = "customers"


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def read_states(
    settings: Settings, timeout_s: float = 60.0
) -> tuple[list[CustomerState], int | None]:
    """(states, newest partition clock) from the changelog, read to its end."""
    topic = changelog_topic(settings)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        max_partition_fetch_bytes=8 << 20,
        **settings.kafka_client_options(),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return [], None
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[bytes, bytes | None] = {}
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                for r in records:
                    latest[r.key] = r.value
    finally:
        consumer.close()
    states: list[CustomerState] = []
    clock: int | None = None
    for key, value in latest.items():
        if value is None:
            continue
        if b"\\u0000clock/" in key or key.startswith(b'"\x00clock/'):
            import orjson

            purchases_ms = orjson.loads(value)[0]
            if purchases_ms is not None:
                clock = purchases_ms if clock is None else max(clock, purchases_ms)
            continue
        if key.startswith((b'"\\u0000', b'"\x00')):
            continue  # another row of the table beside the customers (an erased hash)
        states.append(CustomerState.from_bytes(value))
    return states, clock
