"""Reachability checks for Kafka and Redis, with messages that say what to do."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from streams.config import Settings

START_HINT = {
    "kafka": "start it with `./dev stack start kafka` (log: .local/logs/kafka.log)",
    "redis": "start it with `./dev stack start redis` (log: .local/logs/redis.log)",
}


@dataclass(frozen=True, slots=True)
class Check:
    service: str
    address: str
    ok: bool
    detail: str

    def message(self) -> str:
        if self.ok:
            return f"{self.service}: ok at {self.address} ({self.detail})"
        hint = START_HINT.get(self.service, "")
        return f"{self.service} is not reachable at {self.address}: {self.detail}; {hint}"


def _first_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port or 9092)


def check_kafka(settings: Settings, timeout: float = 5.0) -> Check:
    """Ask the broker for its metadata (a TCP connect alone can't tell a broker apart)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    address = settings.kafka_bootstrap
    host, port = _first_bootstrap(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return Check("kafka", address, False, f"cannot connect ({exc.strerror or exc})")
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address,
            client_id="rfm-stream-health",
            request_timeout_ms=int(timeout * 1000),
            **settings.kafka_client_options(),
        )
        try:
            brokers = len(admin.describe_cluster().get("brokers", []))
        finally:
            admin.close()
    except KafkaError as exc:
        return Check("kafka", address, False, f"broker did not answer metadata ({exc})")
    return Check("kafka", address, True, f"{brokers} broker(s)")


def check_redis(settings: Settings, timeout: float = 5.0) -> Check:
    import redis

    address = settings.redis_url
    try:
        client = redis.Redis.from_url(address, socket_timeout=timeout)
        try:
            info = client.info("server")
        finally:
            client.close()
    except redis.RedisError as exc:
        return Check("redis", address, False, str(exc))
    return Check("redis", address, True, f"redis {info.get('redis_version', '?')}")


def check_all(settings: Settings) -> list[Check]:
    return [check_kafka(settings), check_redis(settings)]
