"""Hand the C allocator's free memory back to the system after the worker read a backlog.

Why: reading a backlog makes short-lived objects by the hundred thousand (fetched records, a
batch's outputs and acknowledgement futures). Once they are freed, glibc keeps the pages they
used: in ``bench/bench_recovery.py --only-processed`` a worker that had created 65,757
customers held ~100 MiB of free heap it would never give back by itself. ``malloc_trim(0)``
returns the free pages of every heap; it walks the free lists (30-60 ms at that size), so it
runs in a thread (ctypes releases the GIL) and only after events were processed, never more
often than :data:`TRIM_EVERY_S` unless a backlog just drained. A bulk restore of the table
(:mod:`streams.worker.bulk_store`) trims once when it is done, for the same reason.

Large buffers are kept out of the heap (:func:`fix_mmap_threshold`): glibc serves blocks
of 128 KiB or more with their own mapping, until the first such block is freed; from then on
it raises the threshold up to 32 MiB, and the fetch responses (up to the fetch size, MiBs)
come from the heap between long-lived small blocks, where freeing them leaves holes a trim
cannot give back.

Linux with glibc only: elsewhere (macOS, musl) :func:`malloc_trim` is None and nothing runs.
Python's own small-object arenas are not affected (Python frees an arena when it empties).

The cycle collector is tuned here too (:func:`tune_cycle_collector`): the worker's garbage is
almost all acyclic and freed by refcounting, but with Python's default thresholds the collector
ran ~90 young and ~0.7 full collections per second of a backlog, ~14 % of the worker's CPU.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0
"""Shortest time between two trims while events keep coming (a timer also trims when idle)."""
BACKLOG_EVENTS = 20_000
"""Events since the last trim after which an empty inbox means a backlog drained: trim now."""
BACKLOG_MIN_GAP_S = 5.0
"""Even after a backlog, at most one trim per this many seconds."""


MMAP_THRESHOLD_B = 128 * 1024
"""Blocks this large or larger get a mapping of their own (glibc's initial threshold)."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def fix_mmap_threshold(threshold_b: int = MMAP_THRESHOLD_B) -> bool:
    """Fix glibc's mmap threshold (no dynamic raise); False where there is no ``mallopt``.

    Why: with the dynamic threshold, a worker that had created 76,276 customers held ~2,400 B
    of RSS per customer, ~60 MiB of it free heap; fixed at 128 KiB, 2,069 B
    (``bench/bench_recovery.py --only-processed --processed 100000 --processed-events
    600000``, 2026-12-07). ``MALLOC_MMAP_THRESHOLD_`` in the environment does the same.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_b))


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is none."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:  # not glibc (e.g. musl): no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


async def trim_now(trim: Callable[[], int] | None) -> bool:
    """Trim once, in a thread (e.g. after a bulk restore); False where there is no trim."""
    if trim is None:
        return False
    await asyncio.to_thread(trim)
    return True


class MemoryTrimmer:
    """Decides when to trim: after events, at most every ``every_s``, or when a backlog drained.

    ``trim`` is :func:`malloc_trim`'s result (None: every call is a no-op). ``clock`` is for
    tests.
    """

    def __init__(
        self,
        trim: Callable[[], int] | None,
        *,
        every_s: float = TRIM_EVERY_S,
        backlog_events: int = BACKLOG_EVENTS,
        backlog_gap_s: float = BACKLOG_MIN_GAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trim = trim
        self.every_s = every_s
        self.backlog_events = backlog_events
        self.backlog_gap_s = backlog_gap_s
        self.clock = clock
        self.pending = 0
        """Events processed since the last trim."""
        self.last = clock()
        self.trims = 0
        self.seconds = 0.0
        """Time spent in trims, in all (for the logs)."""
        self._running = False

    def processed(self, events: int) -> None:
        self.pending += events

    def due(self, drained: bool) -> bool:
        """Whether to trim now; ``drained``: nothing is waiting to be processed."""
        if self.trim is None or self._running or self.pending <= 0:
            return False
        since = self.clock() - self.last
        if drained and self.pending >= self.backlog_events and since >= self.backlog_gap_s:
            return True
        return since >= self.every_s

    async def maybe_trim(self, drained: bool) -> bool:
        """Trim (in a thread) if :meth:`due`; True if it did."""
        if not self.due(drained):
            return False
        trim = self.trim
        assert trim is not None
        self._running = True
        self.pending = 0
        started = time.perf_counter()
        try:
            await asyncio.to_thread(trim)
        finally:
            self._running = False
            self.last = self.clock()
        self.trims += 1
        self.seconds += time.perf_counter() - started
        log.debug("malloc_trim took %.3f s", time.perf_counter() - started)
        return True


def tune_cycle_collector(young_threshold: int) -> tuple[int, int, int]:
    """Collect Python's youngest generation every ``young_threshold`` allocations (0: keep
    Python's default); returns the thresholds before.

    Why: a batch of 2,000 events makes and drops ~100,000 container objects (decoded events,
    states, outputs, futures). At the default 700, the collector walks most of them before
    refcounting frees them at the batch's end, and every tenth young collection walks the
    older ones again; in ``bench_throughput``'s one-worker run (200,000 events) that was 6.3 s
    of 45.7 s of CPU, and the run took 4,483 -> 5,900-6,800 events/s at 50,000 (measured
    2026-12-07). Garbage cycles are still collected, a little later.
    """
    before = gc.get_threshold()
    if young_threshold > 0:
        gc.set_threshold(young_threshold, before[1], before[2])
    return before


def freeze_startup_heap() -> int:
    """Move everything alive now (modules, classes, Faust's services) out of the collector's
    reach; returns how many objects were frozen.

    Why: a full collection walks every tracked object, and a started worker has ~150,000 of
    them that live as long as the process. Each full collection stalled the event loop for
    tens of milliseconds, a latency spike for every event waiting behind it. Objects made
    later are collected as before; a frozen cycle is never freed (there are none worth it).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
