"""What the Kafka benchmarks share: settings for a run, worker processes, counters, clean-up.

Benchmarks run against the local stack (``deploy/local/stack.sh start``; its addresses are read
from ``.local/stack.env`` when the ``RFM_*`` variables are not already set). Each run uses its
own topic prefix and app ids, and deletes its topics at the end.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from streams.config import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_ENV = ROOT / ".local" / "stack.env"


def stack_settings(**update: object) -> Settings:
    """Settings from the environment, falling back to the running local stack's addresses."""
    if "RFM_KAFKA_BOOTSTRAP" not in os.environ and STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.startswith("RFM_") and value:
                os.environ.setdefault(name, value.strip().strip('"'))
    settings = Settings().model_copy(update=update)
    require_broker(settings)
    return settings


def require_broker(settings: Settings, timeout_s: float = 5.0) -> None:
    """Exit with what to do when no broker answers, instead of a client's timeout later."""
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError):
            continue
    where = "RFM_KAFKA_BOOTSTRAP" if "RFM_KAFKA_BOOTSTRAP" in os.environ else "the local stack"
    raise SystemExit(
        f"no Kafka broker answers at {settings.kafka_bootstrap} ({where}): start the local "
        "stack with `./dev stack start` (or point RFM_KAFKA_BOOTSTRAP at a running broker)"
    )


def run_prefix(name: str) -> str:
    """A topic prefix / app id stem unique to this run."""
    return f"bench-{name}-{time.strftime('%H%M%S')}-{os.getpid()}."


def settings_env(settings: Settings) -> dict[str, str]:
    """The RFM_* variables that reproduce ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"RFM_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def delete_topics(settings: Settings, prefix: str) -> int:
    """Delete every topic whose name starts with ``prefix`` (the run's own); returns how many."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
    )
    try:
        names = [n for n in admin.list_topics() if n.startswith(prefix)]
        if names:
            admin.delete_topics(names)
        return len(names)
    finally:
        admin.close()


class Proc:
    """A child process with its output in a log file; killed (whole group) on exit."""

    def __init__(self, args: list[str], env: Mapping[str, str], name: str) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"rfm-bench-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            args,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; its log ({self.log_path}):\n"
                + self.tail()
            )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def worker(settings: Settings, name: str, *args: str, **update: object) -> tuple[Proc, int]:
    """Start ``rfm-stream worker [args]`` for ``settings`` (+ updates); returns it, its port."""
    port = free_port()
    s = settings.model_copy(update={"web_port": port, "live_clock": False, **update})
    env = settings_env(s)
    # a dead worker's partitions move after this (Faust's default is 60 s)
    env.setdefault("BROKER_SESSION_TIMEOUT", "10")
    exe = str(Path(sys.executable).with_name("rfm-stream"))
    return Proc([exe, "worker", *args], env, name), port


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


_CONSUMED = re.compile(rb"^rfm_records_consumed_total (\S+)$", re.M)


def worker_consumed(port: int) -> int | None:
    """Input records a worker has consumed (its Prometheus counter), None if not answering."""
    body = http_get(f"http://127.0.0.1:{port}/metrics")
    if body is None:
        return None
    match = _CONSUMED.search(body)
    return int(float(match.group(1))) if match else None


_LAG = re.compile(rb"^rfm_consumer_lag\{[^}]*\} (\S+)$", re.M)


def worker_lag(port: int) -> int | None:
    """Records not yet committed over all of a worker's partitions (every agent's topics), None
    if not answering."""
    body = http_get(f"http://127.0.0.1:{port}/metrics")
    if body is None:
        return None
    return sum(int(float(v)) for v in _LAG.findall(body))


def count_page(port: int) -> int | None:
    """The bench Faust apps' own counter page."""
    body = http_get(f"http://127.0.0.1:{port}/count")
    return int(body) if body is not None and body.strip().isdigit() else None


def measure_rate(
    counters: Sequence[Callable[[], int | None]],
    total: int,
    procs: list[Proc],
    *,
    timeout: float,
    interval: float = 0.1,
) -> tuple[float, float, int]:
    """Poll the counters until their sum reaches ``total``; returns (events/s, seconds, counted).

    The clock starts once *every* counter has moved (all consumers are assigned and running),
    so start-up and the first group rebalance are not counted; the rate is over the records
    consumed from then on.
    """
    deadline = time.monotonic() + timeout
    t0: float | None = None
    c0 = 0
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        values = [c() for c in counters]
        now = time.perf_counter()
        if all(v is not None and v > 0 for v in values):
            done = sum(v or 0 for v in values)
            if t0 is None:
                t0, c0 = now, done
            if done >= total:
                elapsed = max(now - t0, 1e-9)
                return (done - c0) / elapsed, elapsed, done - c0
        time.sleep(interval)
    raise TimeoutError(f"consumers did not reach {total:,} records in {timeout:.0f} s")


def peak_rss_mib() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
