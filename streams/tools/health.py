"""Reachability checks for Kafka and Redis, with messages that say what to do.

They connect exactly as the clients do (TLS, SASL, Redis AUTH from the settings) and show
addresses without passwords: the Redis URL is redacted, Kafka's bootstrap list holds none.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from streams.config import Settings
from streams.security import (
    describe_kafka_security,
    kafka_client_options,
    probe_kafka,
    redis_options,
)

START_HINT = {
    "kafka": "start it with `./dev stack start kafka` (log: .local/logs/kafka.log)",
    "redis": "start it with `./dev stack start redis` (log: .local/logs/redis.log)",
}
SECURITY_HINT = "the server is up, but refuses this connection (docs/operations.md, 'Security')"


@dataclass(frozen=True, slots=True)
class Check:
    service: str
    address: str
    ok: bool
    detail: str
    hint: str | None = None  # None: how to start the service

    def message(self) -> str:
        if self.ok:
            return f"{self.service}: ok at {self.address} ({self.detail})"
        hint = START_HINT.get(self.service, "") if self.hint is None else self.hint
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
    # One connection as the clients make it (TLS, SASL login) first: it names the cause of a
    # refusal at once, where the admin client below would only time out.
    refused = probe_kafka(settings, host, port, timeout)
    if refused is not None:
        return Check("kafka", address, False, refused, hint=SECURITY_HINT)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=address,
            client_id="rfm-stream-health",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
            **kafka_client_options(settings),
        )
        try:
            brokers = len(admin.describe_cluster().get("brokers", []))
        finally:
            admin.close()
    except KafkaError as exc:
        return Check("kafka", address, False, f"broker did not answer metadata ({exc})")
    return Check(
        "kafka", address, True, f"{brokers} broker(s), {describe_kafka_security(settings)}"
    )


def check_redis(settings: Settings, timeout: float = 5.0) -> Check:
    import redis
    from redis import exceptions as redis_errors

    address = settings.redis_shown
    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            **redis_options(settings),
        )
        try:
            info = client.info("server")
        finally:
            client.close()
    except (redis.AuthenticationError, redis_errors.AuthorizationError) as exc:
        return Check(
            "redis",
            address,
            False,
            f"{exc}: check the user and password (RFM_REDIS_PASSWORD, or in RFM_REDIS_URL)",
            hint=SECURITY_HINT,
        )
    except redis.RedisError as exc:
        return Check("redis", address, False, _redis_reason(settings, exc))
    tls = ", TLS" if settings.redis_url.startswith("rediss://") else ""
    return Check("redis", address, True, f"redis {info.get('redis_version', '?')}{tls}")


def _redis_reason(settings: Settings, exc: Exception) -> str:
    """A Redis connection failure, with the setting to look at when it is a TLS mismatch."""
    text = str(exc) or type(exc).__name__
    tls = settings.redis_url.startswith("rediss://")
    if tls and "CERTIFICATE_VERIFY_FAILED" in text:
        return f"{text}: set RFM_REDIS_SSL_CAFILE to the CA that signed the server's certificate"
    if tls and ("SSL" in text or "EOF" in text or "Timeout" in text):
        return f"{text}: is this a TLS port? rediss:// expects one"
    if not tls and ("closed by server" in text or "reset by peer" in text):
        return f"{text}: if this port expects TLS, use rediss:// in RFM_REDIS_URL"
    return text


def check_all(settings: Settings) -> list[Check]:
    return [check_kafka(settings), check_redis(settings)]
