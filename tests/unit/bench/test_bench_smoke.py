"""The benchmarks that need no services still run: each on a tiny input, figures printed.

Benchmarks are not timed here (their figures come from full runs, see docs/benchmarks.md); this only
keeps them working as the code changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{module} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    ("module", "args", "figure"),
    [
        ("bench.bench_core", ["--events", "3000", "--customers", "300"], r"[\d,]+ events/s"),
        ("bench.bench_decode", ["--n", "500", "--repeat", "1"], r"[\d,]+"),
        ("bench.bench_churn", ["--calls", "2000", "--customers", "500"], r"[\d,]+"),
        (
            "bench.profile_hot_path",
            ["core", "--events", "3000", "--customers", "300"],
            r"[\d,]+ events/s under the profiler",
        ),
    ],
)
def test_bench_runs_on_a_tiny_input(module: str, args: list[str], figure: str) -> None:
    out = run(module, *args)
    assert re.search(figure, out), out


def test_bench_core_reports_state_size() -> None:
    out = run("bench.bench_core", "--events", "3000", "--customers", "300")
    match = re.search(r"state bytes per customer: mean (\d+), p99 (\d+), max (\d+)", out)
    assert match, out
    mean, p99, largest = (int(g) for g in match.groups())
    assert 0 < mean <= p99 <= largest
