"""The worker's memory levers: a fetch decoded a batch at a time, when the C heap is trimmed,
and that a trim gives freed heap pages back (glibc)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from streams.worker.memory import MemoryTrimmer, malloc_trim, trim_now


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trimmer(clock: Clock) -> tuple[MemoryTrimmer, list[int]]:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    trimmer = MemoryTrimmer(trim, every_s=30.0, backlog_events=100, backlog_gap_s=5.0, clock=clock)
    return trimmer, calls


def test_trims_only_after_events_and_at_most_every_interval() -> None:
    clock = Clock()
    trimmer, calls = _trimmer(clock)
    clock.now += 60
    assert not asyncio.run(trimmer.maybe_trim(drained=True))  # nothing processed: nothing to do
    trimmer.processed(10)
    assert asyncio.run(trimmer.maybe_trim(drained=True))
    assert calls == [1] and trimmer.pending == 0
    trimmer.processed(10)
    clock.now += 29
    assert not asyncio.run(trimmer.maybe_trim(drained=True))  # too soon, no backlog
    clock.now += 1
    assert asyncio.run(trimmer.maybe_trim(drained=False))  # the interval passed
    assert calls == [1, 1] and trimmer.trims == 2


def test_a_drained_backlog_trims_early_but_not_back_to_back() -> None:
    clock = Clock()
    trimmer, calls = _trimmer(clock)
    clock.now += 1
    trimmer.processed(150)
    assert not asyncio.run(trimmer.maybe_trim(drained=True))  # within the gap
    clock.now += 5
    assert not asyncio.run(trimmer.maybe_trim(drained=False))  # still reading the backlog
    assert asyncio.run(trimmer.maybe_trim(drained=True))  # the backlog drained
    trimmer.processed(150)
    clock.now += 1
    assert not asyncio.run(trimmer.maybe_trim(drained=True))
    assert calls == [1]


def test_without_malloc_trim_nothing_runs() -> None:
    clock = Clock()
    trimmer = MemoryTrimmer(None, clock=clock)
    trimmer.processed(1_000_000)
    clock.now += 3600
    assert not asyncio.run(trimmer.maybe_trim(drained=True))


def test_trim_now_runs_the_trim_once_where_there_is_one() -> None:
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    assert asyncio.run(trim_now(trim))
    assert calls == [1]
    assert not asyncio.run(trim_now(None))


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or malloc_trim() is None, reason="glibc only"
)
def test_malloc_trim_returns_freed_pages_below_a_live_block() -> None:
    """Freed heap below a live block stays resident until a trim: the backlog's garbage."""
    trim = malloc_trim()
    assert trim is not None
    # 4 KiB blocks come from glibc's heap (above Python's 512 B small-object limit and below
    # the mmap threshold); the last one stays alive, so free() cannot shrink the heap's top
    blocks = [bytearray(4096) for _ in range(16_384)]  # 64 MiB
    for block in blocks:
        block[::512] = b"\x01" * 8  # touch every page
    keep = bytearray(4096)
    del blocks
    before = _rss_bytes()
    trim()
    after = _rss_bytes()
    assert before - after > 32 * 1024 * 1024, (before, after)
    assert len(keep) == 4096


def test_a_fetch_hands_out_at_most_a_batch_of_records(tmp_path: Path) -> None:
    """A backlog is decoded a batch at a time, not a whole fetch (~100,000 records) at once."""
    from streams.config import Settings
    from streams.domain.rules import load_rules
    from streams.worker.app import build

    settings = Settings(batch_max=500, data_dir=str(tmp_path))
    topology = build(settings, load_rules())
    assert topology.app.conf.broker_max_poll_records == 500


def test_the_cycle_collector_is_tuned_and_still_collects_cycles() -> None:
    """The young threshold is set (0 keeps Python's), and a garbage cycle is still freed."""
    import gc
    import weakref

    from streams.worker.memory import tune_cycle_collector

    original = gc.get_threshold()
    try:
        assert tune_cycle_collector(0) == original
        assert gc.get_threshold() == original
        assert tune_cycle_collector(50_000) == original
        assert gc.get_threshold() == (50_000, original[1], original[2])

        class Node:
            other: object

        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: refcounting alone does not free it
        gc.collect()
        assert gone() is None
    finally:
        gc.set_threshold(*original)


def test_the_startup_heap_is_frozen_and_later_cycles_are_still_collected() -> None:
    """Frozen: what lived at startup is skipped by every later collection; new garbage is not."""
    import gc
    import weakref

    from streams.worker.memory import freeze_startup_heap

    class Node:
        other: object

    survivor = Node()
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is survivor for o in gc.get_objects()), "frozen objects are not tracked"
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


_LARGE_BLOCKS = """
import sys
from pathlib import Path

from streams.worker.memory import fix_mmap_threshold

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


bytearray(1 << 20)  # a 1 MiB mapping freed at once: glibc's dynamic threshold rises above it
blocks, keep = [], []
for _ in range(64):
    block = bytearray(1 << 20)
    block[::4096] = b"\\x01" * 256  # touch every page
    blocks.append(block)
    keep.append(bytearray(4096))  # a long-lived heap block after each one
before = rss()
del blocks
print(before - rss())
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or malloc_trim() is None, reason="glibc only"
)
def test_a_fixed_mmap_threshold_gives_large_blocks_back_when_freed() -> None:
    """Fetch-sized blocks between long-lived ones: freed heap stays resident, mappings go."""
    import subprocess

    def freed(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _LARGE_BLOCKS, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(run.stdout.strip())

    mib = 1024 * 1024
    assert freed("dynamic") < 16 * mib  # glibc's default: holes in the heap, still resident
    assert freed("fixed") > 48 * mib  # each block was its own mapping, unmapped on free
