"""The mypyc-compiled domain core and the pure-Python one give byte-identical outputs.

``./dev setup`` compiles ``streams/domain`` in place; ``RFM_PURE_PYTHON=1`` makes the same
sources run interpreted. The full suite runs on whichever this machine has (compiled after
``./dev setup``), ``./dev test`` also runs the domain tests on pure Python, and this file
compares the two on one log: every output record and every saved state, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import streams.domain as domain

ROOT = Path(__file__).resolve().parents[2]

# Runs a benchmark log through the Processor and prints a digest of everything it produced.
DIGEST = """
import hashlib, sys
import streams.domain
from bench.workload import Workload, generate
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import InRecord, MemoryPartitionStore, Processor

settings = Settings(topic_prefix="rfm.", partitions=2)
stores = {}
def store_for(p):
    return stores.setdefault(p, MemoryPartitionStore())
processor = Processor(settings, load_rules(), default_model(), store_for)
digest = hashlib.sha256()
planned = generate(Workload(events=6_000, customers=400, span_days=200.0), settings)
for offset, r in enumerate(planned):
    for out in processor.process(InRecord(r.topic, r.partition, offset, r.key, r.value)):
        digest.update(out.topic.encode() + b"|" + out.key + b"|" + out.value + b"\\n")
    if offset % 500 == 0:
        for out in processor.drain_profiles():
            digest.update(out.value)
for p in sorted(stores):
    for cid in sorted(stores[p].by_customer):
        digest.update(stores[p].by_customer[cid].to_bytes())
print(streams.domain.COMPILED, processor.counters.segment_changes, digest.hexdigest())
"""


def digest(pure: bool) -> tuple[bool, int, str]:
    env = {**os.environ, "RFM_PURE_PYTHON": "1" if pure else "0"}
    done = subprocess.run(
        [sys.executable, "-c", DIGEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    compiled, changes, hexdigest = done.stdout.split()
    return compiled == "True", int(changes), hexdigest


def test_compiled_and_pure_python_outputs_are_byte_identical() -> None:
    pure = digest(pure=True)
    native = digest(pure=False)
    assert pure[0] is False
    assert pure[1] > 500  # the log makes plenty of outputs to compare
    assert native[1:] == pure[1:]
    if not domain.COMPILED:
        pytest.skip("no compiled core here (./dev setup builds it): compared pure with pure")
    assert native[0] is True


def stamp(directory: Path, sources: dict[str, bytes]) -> None:
    for name, text in sources.items():
        (directory / name).write_bytes(text)
    lines = [f"{hashlib.sha256(t).hexdigest()}  {n}\n" for n, t in sources.items()]
    (directory / "_compiled.sha256").write_text("".join(lines))


def test_the_build_is_used_only_while_its_sources_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain, "_HERE", tmp_path)
    monkeypatch.setattr(domain, "_STAMP", tmp_path / "_compiled.sha256")
    assert domain._compiled_modules() == ([], None)  # never compiled: pure, silently

    stamp(tmp_path, {"engine.py": b"x = 1\n", "state.py": b"y = 2\n"})
    assert domain._compiled_modules() == (["engine", "state"], None)

    (tmp_path / "state.py").write_bytes(b"y = 3\n")
    assert domain._compiled_modules() == ([], "state.py changed since it was compiled")
    (tmp_path / "state.py").unlink()
    assert domain._compiled_modules() == ([], "state.py is gone")


def test_an_out_of_date_build_runs_the_sources_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain, "_HERE", tmp_path)
    monkeypatch.setattr(domain, "_STAMP", tmp_path / "_compiled.sha256")
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    stamp(tmp_path, {"engine.py": b"x = 1\n"})
    (tmp_path / "engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    monkeypatch.delenv("RFM_PURE_PYTHON", raising=False)
    assert domain._choose() is True

    (tmp_path / "engine.py").write_bytes(b"x = 2\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert domain._choose() is False
    assert "out of date (engine.py changed" in str(caught[0].message)
    assert domain._SourceFirst in sys.meta_path

    monkeypatch.setenv("RFM_PURE_PYTHON", "1")
    (tmp_path / "engine.py").write_bytes(b"x = 1\n")
    assert domain._choose() is False


def test_a_module_off_the_compiled_list_comes_from_its_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An extension a build left behind for a module no longer compiled is never imported."""
    finder = domain._SourceFirst
    monkeypatch.setattr(finder, "compiled", frozenset({"engine"}))
    assert finder.find_spec("streams.domain.engine") is None  # the normal import decides
    spec = finder.find_spec("streams.domain.events")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).name == "events.py"
    assert finder.find_spec("streams.processor") is None  # other packages are not its business
