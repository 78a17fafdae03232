"""Kafka over SASL_SSL (SCRAM-SHA-512) and Redis over TLS with AUTH, end to end, against the
secured endpoints of the stack under test: the broker's SASL_SSL listener and the TLS-only
Redis (default user off) that ``deploy/local/stack.sh start`` runs next to the plain ones, with
its throwaway CA and passwords. Where they are comes from the ``RFM_SECURE_*`` lines of the
stack.env in use (or, with ``RFM_TEST_STACK=external``, from the environment).

What must hold: the worker's whole path works over them (topics ensured, a replay produced, a
worker consuming it, a segment change published and a profile written to Redis); a wrong SCRAM
password, a plain-text client on a TLS port or a Redis client without the password is refused,
fast and with a message that says what to fix; and no password ever appears in the worker's
log (run at debug level) or in ``rfm-stream health`` output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from schemas import SegmentChange, parse_output
from streams.config import Settings
from streams.security import kafka_client_options, probe_kafka, redis_options
from streams.tools.demo import sample_log
from streams.tools.health import check_redis
from streams.worker.topics import ensure_topics, topic_specs
from tests.integration.conftest import (
    REPO_ROOT,
    Stack,
    local_dir,
    read_stack_env,
    settings_env,
    show_path,
    wait_for,
)
from tests.integration.topology import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]

SECURE_KEYS = (
    "RFM_SECURE_KAFKA_BOOTSTRAP",
    "RFM_SECURE_KAFKA_SECURITY_PROTOCOL",
    "RFM_SECURE_KAFKA_SASL_MECHANISM",
    "RFM_SECURE_KAFKA_USERNAME",
    "RFM_SECURE_KAFKA_PASSWORD",
    "RFM_SECURE_CAFILE",
    "RFM_SECURE_REDIS_URL",
    "RFM_SECURE_REDIS_PASSWORD",
)
CLI_TIMEOUT_S = 120.0
REFUSAL_BOUND_S = 60.0  # a refused login must end the command well within this


@dataclass(frozen=True)
class SecureStack:
    """The secured endpoints of the stack under test and their credentials."""

    kafka_bootstrap: str
    kafka_protocol: str
    sasl_mechanism: str
    username: str
    kafka_password: str
    cafile: str
    redis_url: str
    redis_password: str

    @property
    def secrets(self) -> tuple[str, str]:
        return self.kafka_password, self.redis_password


@pytest.fixture(scope="session")
def secure(stack: Stack) -> SecureStack:
    """Where the secured endpoints listen (the ``stack`` fixture has started the stack)."""
    if os.environ.get("RFM_TEST_STACK") == "external":
        values = {k: os.environ[k] for k in SECURE_KEYS if os.environ.get(k)}
        if not values:
            pytest.skip("external stack without secured endpoints: set RFM_SECURE_* to test them")
        source = "the environment"
    else:
        env_file = local_dir() / "stack.env"
        values = read_stack_env(env_file)
        source = show_path(env_file)
    missing = [k for k in SECURE_KEYS if not values.get(k)]
    if missing:
        pytest.fail(
            f"{source} lacks {', '.join(missing)}: the stack's secured endpoints are not up. "
            "A broker started by an older deploy/local/stack.sh has no SASL_SSL listener: "
            "restart it (deploy/local/stack.sh stop kafka && deploy/local/stack.sh start), "
            "and see `deploy/local/stack.sh status`",
            pytrace=False,
        )
    return SecureStack(*(values[k] for k in SECURE_KEYS))


@pytest.fixture
def secure_settings(isolated_settings: Settings, secure: SecureStack) -> Iterator[Settings]:
    """``isolated_settings`` pointed at the secured endpoints; its Redis keys are deleted after.

    (The session's cleanup deletes the topics: same broker. The secured Redis is a server of
    its own, so its keys are deleted here.)
    """
    settings = Settings.model_validate(
        isolated_settings.model_dump()
        | {
            "kafka_bootstrap": secure.kafka_bootstrap,
            "kafka_security_protocol": secure.kafka_protocol,
            "kafka_sasl_mechanism": secure.sasl_mechanism,
            "kafka_sasl_username": secure.username,
            "kafka_sasl_password": secure.kafka_password,
            "kafka_ssl_cafile": secure.cafile,
            "redis_url": secure.redis_url,
            "redis_password": secure.redis_password,
            "redis_ssl_cafile": secure.cafile,
        }
    )
    yield settings
    client = redis.Redis.from_url(settings.redis_url, **redis_options(settings))
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


def variant(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some values changed, validated again."""
    return Settings.model_validate(settings.model_dump() | changes)


def run_cli(
    settings: Settings, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m streams.cli ARGS`` configured by ``settings``; (result, seconds taken)."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RFM_")},
        **settings_env(settings),
        "PYTHONPATH": str(REPO_ROOT),
        "COLUMNS": "200",  # rich wraps at 80 columns otherwise; keep messages on one line
        **(env or {}),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    return result, time.monotonic() - started


def scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` as a failure message may show it: passwords replaced."""
    for secret in secrets:
        text = text.replace(secret, "<PASSWORD>")
    return text


def assert_no_secret(text: str, secrets: tuple[str, ...], where: str) -> None:
    leaked = any(secret in text for secret in secrets)
    assert not leaked, f"a password appears in {where}:\n{scrubbed(text, secrets)}"


def assert_says(text: str, *needles: str, secrets: tuple[str, ...]) -> None:
    """Every needle is in ``text``; on failure, show ``text`` without its passwords (a plain
    ``assert needle in text`` would print them into the test report)."""
    missing = [needle for needle in needles if needle not in text]
    assert not missing, f"{missing} not in:\n{scrubbed(text, secrets)}"


# ---- the whole path over SASL_SSL and Redis TLS + AUTH -------------------------------------


def test_the_worker_runs_over_sasl_ssl_and_redis_tls(
    secure_settings: Settings, secure: SecureStack, tmp_path: Path
) -> None:
    settings = secure_settings
    # topics: the admin client over SASL_SSL (fresh prefix: every topic is new)
    assert sorted(ensure_topics(settings)) == sorted(topic_specs(settings))

    with WorkerProcess(settings, tmp_path, env={"RFM_LOG_LEVEL": "debug"}) as worker:
        worker.wait_ready(timeout=180)

        replayed, _ = run_cli(settings, "replay", str(sample_log()))
        assert replayed.returncode == 0, scrubbed(replayed.stdout + replayed.stderr, secure.secrets)
        assert "produced" in replayed.stdout + replayed.stderr
        assert_no_secret(replayed.stdout + replayed.stderr, secure.secrets, "replay's output")

        # a segment change, read back over SASL_SSL
        consumer = KafkaConsumer(
            settings.topics.segment_changes,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            **kafka_client_options(settings),
        )
        try:

            def first_change() -> SegmentChange | None:
                worker.check_alive()
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        event = parse_output(record.value)
                        if isinstance(event, SegmentChange):
                            return event
                return None

            change = wait_for(first_change, 180, "a segment change on the SASL_SSL listener")
        finally:
            consumer.close()

        # the customer's profile, written by the worker to the TLS Redis as user "rfm"
        client = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, **redis_options(settings)
        )
        try:
            key = f"{settings.redis_prefix}profile:{change.customer_id}"

            def profile() -> dict[str, str] | None:
                worker.check_alive()
                fields = client.hgetall(key)
                return {str(k): str(v) for k, v in fields.items()} or None

            stored = wait_for(profile, 120, f"the Redis profile {key} on the TLS Redis")
            assert stored["customer_id"] == change.customer_id
            assert client.acl_whoami() == secure.username
        finally:
            client.close()

        health, _ = run_cli(settings, "health")
        health_text = health.stdout + health.stderr
        assert health.returncode == 0, scrubbed(health_text, secure.secrets)
        assert_says(
            health_text,
            f"SASL_SSL ({secure.sasl_mechanism} as {secure.username})",
            ", TLS)",  # redis: ok at rediss://… (redis 7.x, TLS)
            secrets=secure.secrets,
        )
        assert_no_secret(health_text, secure.secrets, "`rfm-stream health` output")
    log = worker.log_text()
    assert "Worker ready" in log
    assert "DEBUG" in log  # the strictest level: every library line that could leak is there
    assert_no_secret(log, secure.secrets, f"the worker's log {worker.log_path}")


def test_health_shows_a_redis_url_without_its_password(
    secure_settings: Settings, secure: SecureStack
) -> None:
    host_part = secure.redis_url.split("://", 1)[1].split("@", 1)[1]
    url = f"rediss://{secure.username}:{secure.redis_password}@{host_part}"
    settings = variant(secure_settings, redis_url=url, redis_password=None)
    result, _ = run_cli(settings, "health")
    text = result.stdout + result.stderr
    assert result.returncode == 0, scrubbed(text, secure.secrets)
    assert_says(text, f"rediss://{secure.username}:***@{host_part}", secrets=secure.secrets)
    assert_no_secret(text, secure.secrets, "`rfm-stream health` output")


# ---- refusals: fast, and saying what to fix -------------------------------------------------


def test_a_wrong_scram_password_is_refused_fast_with_a_clear_error(
    secure_settings: Settings, secure: SecureStack
) -> None:
    wrong_password = "not-the-password-8c1f"
    wrong = variant(secure_settings, kafka_sasl_password=wrong_password)
    secrets = (*secure.secrets, wrong_password)

    # the CLI: health, and a worker, both stop at once and say why
    for command in ("health", "worker"):
        result, took = run_cli(wrong, command)
        text = result.stdout + result.stderr
        shown = scrubbed(text, secrets)
        assert result.returncode == 69, f"{command}: exit {result.returncode}\n{shown}"
        assert took < REFUSAL_BOUND_S, f"{command} took {took:.0f} s to give up"
        assert_says(text, "authentication failed", "RFM_KAFKA_SASL_PASSWORD", secrets=secrets)
        assert_no_secret(text, secrets, f"`rfm-stream {command}` output")

    # the probe the checks use names the cause within its timeout
    started = time.monotonic()
    host, port = secure.kafka_bootstrap.rsplit(":", 1)
    reason = probe_kafka(wrong, host, int(port), timeout=10)
    assert reason is not None
    assert reason.startswith("authentication failed"), reason
    assert time.monotonic() - started < 15

    # a bare client gives up within its bootstrap timeout instead of hanging
    started = time.monotonic()
    with pytest.raises(KafkaError):
        KafkaProducer(
            bootstrap_servers=wrong.kafka_bootstrap,
            bootstrap_timeout_ms=5000,
            **kafka_client_options(wrong),
        )
    assert time.monotonic() - started < 20


def test_a_plain_text_client_cannot_talk_to_the_tls_ports(
    secure_settings: Settings, secure: SecureStack
) -> None:
    host, port = secure.kafka_bootstrap.rsplit(":", 1)
    plain = Settings(kafka_bootstrap=secure.kafka_bootstrap)  # PLAINTEXT, no credentials

    reason = probe_kafka(plain, host, int(port), timeout=10)
    assert reason is not None
    assert "RFM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT must be SSL or SASL_SSL" in reason

    started = time.monotonic()
    with pytest.raises(KafkaError):  # bootstrapping fails, so the client is never made
        KafkaAdminClient(
            bootstrap_servers=secure.kafka_bootstrap,
            bootstrap_timeout_ms=5000,
            request_timeout_ms=5000,
        )
    assert time.monotonic() - started < 20

    # TLS, but without trusting the stack's CA: the broker's certificate is refused
    untrusting = variant(secure_settings, kafka_ssl_cafile=None)
    reason = probe_kafka(untrusting, host, int(port), timeout=10)
    assert reason is not None
    assert "not trusted" in reason and "RFM_KAFKA_SSL_CAFILE" in reason, reason

    # Redis: the right user and password, but no TLS, on the TLS port
    host_part = secure.redis_url.split("@", 1)[1]
    no_tls = redis.Redis.from_url(
        f"redis://{host_part}",
        username=secure.username,
        password=secure.redis_password,
        socket_connect_timeout=5,
        socket_timeout=5,
    )
    try:
        with pytest.raises(redis.ConnectionError):
            no_tls.ping()
    finally:
        no_tls.close()
    without_tls = variant(
        secure_settings, redis_url=f"redis://{secure.username}@{host_part}", redis_ssl_cafile=None
    )
    check = check_redis(without_tls)
    assert not check.ok
    assert "use rediss://" in check.detail, check.detail


def test_redis_refuses_clients_without_the_password(
    secure_settings: Settings, secure: SecureStack
) -> None:
    host_part = secure.redis_url.split("@", 1)[1]
    tls = {"ssl_ca_certs": secure.cafile, "socket_connect_timeout": 5, "socket_timeout": 5}
    attempts = {
        "no credentials": redis.Redis.from_url(f"rediss://{host_part}", **tls),
        "user, no password": redis.Redis.from_url(f"rediss://{secure.username}@{host_part}", **tls),
        "wrong password": redis.Redis.from_url(
            f"rediss://{secure.username}@{host_part}", password="wrong-password-4d2e", **tls
        ),
    }
    for what, client in attempts.items():
        try:
            with pytest.raises(redis.AuthenticationError):
                client.ping()
        except BaseException as exc:
            exc.add_note(f"Redis client with {what}")
            raise
        finally:
            client.close()

    right = redis.Redis.from_url(
        f"rediss://{secure.username}@{host_part}", password=secure.redis_password, **tls
    )
    try:
        assert right.ping() is True
        assert right.acl_whoami() == secure.username
    finally:
        right.close()

    # the product's own check says which setting to fix, and shows no password
    check = check_redis(variant(secure_settings, redis_password=None))
    assert not check.ok
    assert_says(check.message(), "RFM_REDIS_PASSWORD", secrets=secure.secrets)
    assert_no_secret(check.message(), secure.secrets, "the Redis check's message")
