"""Smoke tests of the benchmarks against the real stack: they run, end cleanly, print figures.

Tiny sizes: these check that the benchmark code works (and cleans up). The figures get only
coarse ceilings, about ten times what this machine measures, so that a run on a busy machine
passes while a tenfold regression fails; the real figures come from full runs
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from streams.config import Settings
from tests.integration.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH_TIMEOUT_S = 420.0
# 2,000 customers, measured on a loaded 2-core machine (load average 6):
RECOVERY_READY_CEILING_S = 120.0  # start to ready: 6-15 s
RECOVERY_PROCESSING_CEILING_S = 10.0  # ready to every probe's output: 0.1-0.3 s
RESIDENT_PER_CUSTOMER_CEILING_B = 20_000  # resident bytes per customer: 1.6 KB
LATENCY_P99_CEILING_MS = 2_000.0  # 40 events/s: p99 100 ms idle, 385 ms at load average 6


def run_bench(settings: Settings, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python bench/SCRIPT ARGS`` with the stack's addresses; fails with its output."""
    env = {
        **os.environ,
        "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RFM_REDIS_URL": settings.redis_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"bench/{script} exited with {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    return done


@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_recovery_smoke(settings: Settings, run_id: str, tmp_path: Path) -> None:
    """2,000 customers: every scenario runs, and every probe finds its customer restored."""
    figures_path = tmp_path / "recovery.json"
    bench_run = f"{run_id}br"  # under the session's run id: its cleanup catches leftovers
    done = run_bench(
        settings,
        "bench_recovery.py",
        "--customers",
        "2000",
        "--run-id",
        bench_run,
        "--json",
        str(figures_path),
    )
    out = done.stdout
    seeded = ("a-memory-restart", "b-rocksdb-new-machine", "c-rocksdb-restart")
    for name in ("baseline-memory", "baseline-rocksdb", *seeded):
        line = next((x for x in out.splitlines() if x.startswith(f"figure: {name}: ")), None)
        assert line is not None, f"no figures line for {name}:\n{out}"
        assert "start→ready" in line and "ready→processing" in line, line
        if name in seeded:
            assert "probe 4/4 seeded customers with their history" in line, line
            assert "changelog layout ok" in line, line
        else:
            assert "probe 4/4 new customers" in line, line
    assert "figure: resident bytes per customer" in out, out
    assert "figure: RocksDB on disk per customer" in out, out

    figures = json.loads(figures_path.read_text())
    assert figures["customers"] == 2000
    assert figures["seed"]["records"] == 2000 + 4  # the customers and each partition's clock
    for name in seeded:
        scenario = figures["scenarios"][name]
        assert scenario["probes_ok"] == scenario["probes"] == 4, scenario
        assert scenario["problems"] == [], scenario
    # a new machine restores the changelog from Faust's log lines
    assert figures["scenarios"]["b-rocksdb-new-machine"]["restore_s"] is not None
    for name, scenario in figures["scenarios"].items():
        assert scenario["start_to_ready_s"] <= RECOVERY_READY_CEILING_S, (name, scenario)
        assert scenario["ready_to_processing_s"] <= RECOVERY_PROCESSING_CEILING_S, (name, scenario)
    per_customer = figures["memory"]["per_customer_processing_b"]
    assert per_customer <= RESIDENT_PER_CUSTOMER_CEILING_B, figures["memory"]

    # everything it created is gone: its work dir, and (deletion is asynchronous) its topics
    assert list(Path(tempfile.gettempdir()).glob(f"{bench_run}-*")) == []
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=bench_run)
    try:
        deadline = time.monotonic() + 30
        while (left := [t for t in admin.list_topics() if t.startswith(bench_run)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
    finally:
        admin.close()
    assert left == [], f"topics left behind: {left}"


@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_throughput_smoke(settings: Settings, tmp_path: Path) -> None:
    """3,000 events: every one-worker contender reads the whole log; the ratios are printed."""
    figures_path = tmp_path / "throughput.json"
    done = run_bench(
        settings,
        "bench_throughput.py",
        "--events", "3000",
        "--customers", "300",
        "--only", "plain,core,faust-floor,faust-naive,rfm-1",
        "--timeout", "240",
        "--json", str(figures_path),
    )  # fmt: skip
    assert "one worker vs Faust floor: rfm-1 / faust-floor =" in done.stdout, done.stdout
    results = json.loads(figures_path.read_text())["results"]
    assert set(results) == {"plain", "core", "faust-floor", "faust-naive", "rfm-1"}
    # the plain loops read exactly the log; the Faust consumers at least all of it (a
    # redelivery counts twice), so none of them stopped early
    assert results["plain"]["events"] == results["core"]["events"] == 3000
    # (no rate check: on 3,000 events a worker may read the whole log in its first measured
    # poll, leaving nothing to time)
    for name, result in results.items():
        assert result["read"] >= 3000, (name, result)
    assert results["core"]["outputs"] > 0


@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_latency_smoke(settings: Settings, tmp_path: Path) -> None:
    """A few seconds of load: every probe's segment change arrives and is timed."""
    figures_path = tmp_path / "latency.json"
    run_bench(
        settings,
        "bench_latency.py",
        "--rate", "40",
        "--seconds", "8",
        "--warmup", "2",
        "--probes-per-s", "5",
        "--json", str(figures_path),
    )  # fmt: skip
    figures = json.loads(figures_path.read_text())
    assert figures["probes_measured"] > 0
    assert figures["probes_lost"] == 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["p99_ms"] <= LATENCY_P99_CEILING_MS, figures


@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_import_smoke(settings: Settings, tmp_path: Path) -> None:
    """2,000 events: every phase of the import runs and every customer is written."""
    figures_path = tmp_path / "import.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_import", "--events", "2000", "--customers", "200",
         "--json", str(figures_path)],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "RFM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "RFM_REDIS_URL": settings.redis_url,
            "PYTHONPATH": str(REPO_ROOT),
        },
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "figure: import end to end:" in done.stdout, done.stdout
    figures = json.loads(figures_path.read_text())
    assert figures["records"] == 2000
    # every customer with a valid event, plus one clock row per partition
    assert figures["changelog_rows"] == figures["customers_imported"] + 4
    assert 0 < figures["ratio"] <= 1
