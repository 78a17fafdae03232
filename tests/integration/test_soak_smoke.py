"""The soak command runs end to end: half a minute of feeding with kills, then the verdict.

``bench/soak.py`` is meant to run for minutes or hours (docs/operations.md, "Soak"); this keeps it
working: it must feed, kill and restart workers, verify, print ALL-RECORDS-DELIVERED with its
counts, exit 0, and clean up after itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient

from streams.tools.verify import DELIVERED
from tests.integration.conftest import REPO_ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_smoke(stack: Stack, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RFM_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "RFM_REDIS_URL": stack.redis_url,
    }
    counts_file = tmp_path / "counts.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--minutes",
            "0.5",
            "--workers",
            "2",  # handovers between workers, and a worker restarted on its own
            "--kill-every",
            "10",
            "--customers",
            "60",
            "--chunk-seconds",
            "1",
            "--workdir",
            str(tmp_path / "soak"),
            "--json",
            str(counts_file),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, f"soak failed:\n{output}\n{done.stderr[-4000:]}"
    assert f"soak verdict: {DELIVERED}" in output
    for figure in ("events in", "outputs", "dead letters", "duplicates dropped", "kills survived"):
        assert figure in output, f"the summary lacks {figure!r}:\n{output}"
    counts = orjson.loads(counts_file.read_bytes())
    assert counts["ok"] is True
    assert counts["kills"] >= 2
    assert counts["events_in"] > 1000
    assert counts["dead_letters"] > 0  # the personas log's invalid records and the junk
    assert counts["missing"] == counts["unexpected"] == counts["conflicting"] == 0

    # and it cleaned up after itself
    run = next(line for line in output.splitlines() if line.startswith("soak run ")).split()[2]
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        deadline = time.monotonic() + 30  # deletion is asynchronous
        while left := [t for t in admin.list_topics() if t.startswith(run.rstrip(":"))]:
            assert time.monotonic() < deadline, f"topics left behind: {left}"
            time.sleep(1)
    finally:
        admin.close()
