"""Fixtures for tests against the real Kafka broker and Redis server.

The session fixture ``stack`` starts the local stack (``deploy/local/stack.sh start``) when
``stack.sh status`` says it is not healthy, so ``pytest`` works on a fresh machine. With
``RFM_TEST_STACK=external`` the tests instead use ``RFM_KAFKA_BOOTSTRAP`` and
``RFM_REDIS_URL`` from the environment (e.g. the docker-compose services) and start nothing.

Every test session gets a run id (``t<pid><hex>``). All topics, consumer groups, Faust app
ids and Redis keys of the session start with it, so several sessions can share one stack, and
the session deletes them at the end.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import pytest
import redis
from kafka import KafkaAdminClient

from streams.config import Settings
from streams.security import security_env
from tests.conftest import require_binary

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
STACK_START_TIMEOUT_S = 300.0
REACHABILITY_TIMEOUT_S = 5.0


def local_dir() -> Path:
    """Where deploy/local/stack.sh keeps its state (same rule as the script)."""
    return Path(os.environ.get("RFM_LOCAL_DIR", REPO_ROOT / ".local")).resolve()


def show_path(path: Path) -> str:
    """A path as a user would type it from the repository root."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_stack_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of .local/stack.env (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _start_hint(service: str) -> str:
    log = show_path(local_dir() / "logs" / f"{service}.log")
    return f"start it with `deploy/local/stack.sh start {service}` (log: {log})"


def _tcp_error(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def kafka_unreachable_reason(bootstrap: str, timeout: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """None if a broker at ``bootstrap`` answers a metadata request; else what to do about it."""
    problems: list[str] = []
    reachable = False
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            return f"RFM_KAFKA_BOOTSTRAP={bootstrap!r} is not a host:port[,host:port] list"
        error = _tcp_error(host, int(port), timeout)
        if error is None:
            reachable = True
        else:
            problems.append(f"{server}: {error}")
    if reachable:
        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="rfm-test-probe",
                request_timeout_ms=int(timeout * 1000),
            )
            if admin.describe_cluster()["brokers"]:
                return None
            problems.append("the cluster reports no brokers")
        except Exception as exc:
            problems.append(f"metadata request failed: {exc!r}")
        finally:
            if admin is not None:
                admin.close()
    return f"Kafka is not reachable at {bootstrap} ({'; '.join(problems)}) — {_start_hint('kafka')}"


def redis_unreachable_reason(url: str, timeout: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """None if the Redis server at ``url`` answers PING; else what to do about it."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        where = urlsplit(url).netloc or url
        return f"Redis is not reachable at {where} ({exc}) — {_start_hint('redis')}"
    finally:
        client.close()


@dataclass(frozen=True)
class Stack:
    """Where the services of the stack under test listen."""

    kafka_bootstrap: str
    redis_url: str


def _ensure_local_stack() -> Stack:
    status = subprocess.run(
        [str(STACK_SH), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    if status.returncode != 0:
        start = subprocess.run(
            [str(STACK_SH), "start"],
            capture_output=True,
            text=True,
            timeout=STACK_START_TIMEOUT_S,
            check=False,
        )
        if start.returncode != 0:
            pytest.fail(
                f"`deploy/local/stack.sh start` failed (exit {start.returncode}):\n"
                f"{start.stdout}{start.stderr}",
                pytrace=False,
            )
    env_file = local_dir() / "stack.env"
    values = read_stack_env(env_file)
    missing = [k for k in ("RFM_KAFKA_BOOTSTRAP", "RFM_REDIS_URL") if k not in values]
    if missing:
        pytest.fail(
            f"{show_path(env_file)} lacks {', '.join(missing)}; "
            "run `deploy/local/stack.sh start` and look at its output",
            pytrace=False,
        )
    return Stack(values["RFM_KAFKA_BOOTSTRAP"], values["RFM_REDIS_URL"])


@pytest.fixture(scope="session")
def stack() -> Stack:
    """Kafka and Redis, up and answering; starts the local stack if needed."""
    if os.environ.get("RFM_TEST_STACK") == "external":
        defaults = Settings()
        found = Stack(defaults.kafka_bootstrap, defaults.redis_url)
    else:
        found = _ensure_local_stack()
    problems = [
        reason
        for reason in (
            kafka_unreachable_reason(found.kafka_bootstrap),
            redis_unreachable_reason(found.redis_url),
        )
        if reason is not None
    ]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    return found


@pytest.fixture(scope="session")
def kcat(stack: Stack) -> str:
    """kcat's path, looked up once the stack (which installs it) is up."""
    return require_binary(
        "kcat", "apt-get install -y kcat (deploy/local/stack.sh start installs it as root)"
    )


@pytest.fixture(scope="session")
def run_id() -> str:
    """Prefix of every resource this test session creates on the shared stack."""
    return f"t{os.getpid()}{secrets.token_hex(3)}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The RFM_* variables that make a subprocess (worker, CLI) load exactly ``settings``."""
    return {
        "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RFM_TOPIC_PREFIX": settings.topic_prefix,
        "RFM_PARTITIONS": str(settings.partitions),
        "RFM_REPLICATION_FACTOR": str(settings.replication_factor),
        "RFM_APP_ID": settings.app_id,
        "RFM_REDIS_URL": settings.redis_url,
        "RFM_REDIS_PREFIX": settings.redis_prefix,
        "RFM_STORE": settings.store,
        "RFM_DATA_DIR": settings.data_dir,
        "RFM_WEB_PORT": str(settings.web_port),
        "RFM_WEB_HOST": settings.web_host,
        "RFM_LOG_LEVEL": settings.log_level,
        "RFM_ERASURE_SALT": settings.erasure_salt.get_secret_value(),
        **security_env(settings),  # TLS / SASL / Redis AUTH (secrets: only for a child's env)
    }


def _delete_run_resources(stack: Stack, run_id: str) -> None:
    """Delete the session's topics, consumer groups and Redis keys; best effort."""
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id=f"{run_id}-cleanup")
    try:
        topics = [t for t in admin.list_topics() if t.startswith(run_id)]
        if topics:
            admin.delete_topics(topics, raise_errors=False)
        groups = [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(run_id)]
        if groups:
            admin.delete_groups(groups)
    finally:
        admin.close()
    client = redis.Redis.from_url(stack.redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{run_id}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture(scope="session")
def settings(
    stack: Stack, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings for this session: the stack's addresses and run-unique names."""
    yield Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        topic_prefix=f"{run_id}.",
        redis_prefix=f"{run_id}:",
        app_id=run_id,
        data_dir=str(tmp_path_factory.mktemp("worker")),
    )
    if os.environ.get("RFM_TEST_KEEP"):  # to look into a failure: topics, groups, Redis keys
        print(f"\nRFM_TEST_KEEP: kept the topics, groups and Redis keys of run {run_id}")
        return
    _delete_run_resources(stack, run_id)


_isolation_counter = count(1)


@pytest.fixture
def isolated_settings(settings: Settings, run_id: str, tmp_path: Path) -> Settings:
    """Like ``settings`` but with names of its own, for a test that runs its own worker."""
    n = next(_isolation_counter)
    return settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.{n}.",
            "redis_prefix": f"{run_id}:{n}:",
            "app_id": f"{run_id}-{n}",
            "data_dir": str(tmp_path / "worker"),
        }
    )


@pytest.fixture(scope="session")
def admin(settings: Settings, run_id: str) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client for the stack."""
    client = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id=f"{run_id}-admin"
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A Redis client (responses decoded to str). Use keys under ``settings.redis_prefix``."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


class CreateTopics(Protocol):
    def __call__(
        self,
        names: Sequence[str],
        partitions: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> list[str]: ...


@pytest.fixture
def create_topics(admin: KafkaAdminClient, settings: Settings, run_id: str) -> CreateTopics:
    """Create topics and wait until every partition has a leader; returns the names.

    Names must start with the session's run id (e.g. ``settings.topics.purchases``), so that
    the session's cleanup deletes them.
    """

    def create(
        names: Sequence[str],
        partitions: int | None = None,
        configs: Mapping[str, str] | None = None,
    ) -> list[str]:
        strays = [name for name in names if not name.startswith(run_id)]
        if strays:
            raise ValueError(f"topic names must start with the run id {run_id!r}: {strays}")
        admin.create_topics(
            {
                name: {
                    "num_partitions": partitions or settings.partitions,
                    "replication_factor": settings.replication_factor,
                    "configs": dict(configs or {}),
                }
                for name in names
            },
            wait_for_metadata=True,
        )
        return list(names)

    return create


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)
