"""Create the product's topics (the broker does not auto-create them) — idempotent."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.config import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}
# Size-based retention only: replays carry old event times, which time-based retention would
# delete at once.
KEEP_BY_SIZE = {"retention.ms": "-1", "retention.bytes": str(1 << 30)}


def topic_specs(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (partitions, config). Inputs and outputs share the partition count."""
    t, n = settings.topics, settings.partitions
    specs = dict.fromkeys(t.inputs() + t.outputs(), (n, KEEP_BY_SIZE))
    specs[t.profiles] = (n, COMPACTED)  # latest profile per customer: a view in Kafka
    specs[t.model] = (1, COMPACTED)
    return specs


def ensure_topics(settings: Settings) -> list[str]:
    """Create whatever is missing; return the names created. Existing topics are left alone."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        **settings.kafka_client_options(),
    )
    try:
        existing = set(admin.list_topics())
        missing = {n: s for n, s in topic_specs(settings).items() if n not in existing}
        created: list[str] = []
        for name, (partitions, config) in missing.items():
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=name,
                            num_partitions=partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=config,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        if created:
            log.info("created topics: %s", ", ".join(sorted(created)))
        return created
    finally:
        admin.close()
