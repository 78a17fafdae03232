"""A service that is down makes the harness fail with a message that says what to do.

Uses a port nothing listens on instead of stopping the shared services, which other test
sessions may be using.
"""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import kafka_unreachable_reason, redis_unreachable_reason

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def closed_port() -> int:
    """A local TCP port with no listener (bound, then released, so the kernel just gave it out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_kafka_down_names_the_service_and_how_to_start_it(closed_port: int) -> None:
    reason = kafka_unreachable_reason(f"127.0.0.1:{closed_port}", timeout=2)
    assert reason is not None
    assert reason.startswith(f"Kafka is not reachable at 127.0.0.1:{closed_port}")
    assert "`deploy/local/stack.sh start kafka`" in reason
    assert "logs/kafka.log" in reason


def test_redis_down_names_the_service_and_how_to_start_it(closed_port: int) -> None:
    reason = redis_unreachable_reason(f"redis://127.0.0.1:{closed_port}/0", timeout=2)
    assert reason is not None
    assert reason.startswith(f"Redis is not reachable at 127.0.0.1:{closed_port}")
    assert "`deploy/local/stack.sh start redis`" in reason
    assert "logs/redis.log" in reason


def test_malformed_bootstrap_is_reported() -> None:
    reason = kafka_unreachable_reason("localhost", timeout=1)
    assert reason is not None
    assert "not a host:port" in reason
