"""The commit rule of :mod:`streams.worker.consumer`: only a run from the committed offset.

A commit that passes an offset nobody processed is a lost record; one that never moves is a
stalled partition. :func:`committable` must do neither, whatever the order of acknowledgements,
their duplicates, and the holes of the log.
"""

from __future__ import annotations

import random
from importlib import metadata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.worker import consumer
from streams.worker.consumer import committable, version_mismatches


def test_a_run_from_the_committed_offset_is_committed() -> None:
    assert committable(10, [10, 11, 12, 14], []) == (13, 3, 0)


def test_a_missing_first_offset_stops_the_commit() -> None:
    """Faust would commit here: its head gap of one offset is tolerated."""
    assert committable(10, [11, 12, 13], []) == (10, 0, 0)


def test_holes_are_committed_over_but_not_past_a_missing_record() -> None:
    assert committable(10, [10, 13, 14], [(11, 13)]) == (15, 3, 1)
    assert committable(10, [10, 14], [(11, 13)]) == (13, 1, 1)


def test_offsets_already_committed_are_used_up() -> None:
    assert committable(10, [3, 4, 10], []) == (11, 3, 0)
    assert committable(10, [3, 4], []) == (10, 2, 0)


def test_a_hole_at_the_committed_offset() -> None:
    """A transaction marker right at the committed offset: the next record is still reached."""
    assert committable(10, [11, 12], [(10, 11)]) == (13, 2, 1)


@st.composite
def logs(draw: st.DrawFn) -> tuple[int, set[int], list[tuple[int, int]]]:
    """A partition from ``start``: some offsets are holes, the rest records, some processed."""
    start = draw(st.integers(0, 50))
    kinds = draw(st.lists(st.sampled_from("rph"), max_size=60))  # record, processed, hole
    processed = {start + i for i, k in enumerate(kinds) if k == "p"}
    holes: list[tuple[int, int]] = []
    for i, k in enumerate(kinds):
        if k == "h":
            offset = start + i
            if holes and holes[-1][1] == offset and draw(st.booleans()):
                holes[-1] = (holes[-1][0], offset + 1)  # a longer hole (compaction)
            else:
                holes.append((offset, offset + 1))
    return start, processed, holes


@given(logs(), st.lists(st.integers(0, 120), max_size=20), st.randoms(use_true_random=False))
def test_never_past_an_unprocessed_record_and_never_short_of_a_processed_run(
    log: tuple[int, set[int], list[tuple[int, int]]], stale: list[int], rnd: random.Random
) -> None:
    start, processed, holes = log
    # acknowledgements come in any order, some twice; those below start were committed already
    again = rnd.sample(sorted(processed), k=len(processed) // 2)
    acked = sorted([*processed, *again, *(o for o in stale if o < start)])
    done = processed | {o for a, b in holes for o in range(a, b)}
    offset, used, holes_used = committable(start, acked, holes)
    expected = start
    while expected in done:
        expected += 1
    assert offset == expected  # everything below it processed or a hole; it is not
    assert all(a < offset for a in acked[:used])
    assert all(a >= offset for a in acked[used:])
    assert all(b <= offset for _, b in holes[:holes_used])


def test_the_installed_clients_are_the_ones_the_overrides_were_written_for() -> None:
    """The consumer overrides private parts of these packages: another version may break the
    loss guarantees silently, so a different one fails here, loudly."""
    assert version_mismatches() == [], (
        "install the versions pinned in pyproject.toml, or re-read the overridden internals "
        "(streams/worker/consumer.py) and re-run the fault suite and a soak before changing "
        "WRITTEN_FOR"
    )


def test_a_version_mismatch_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(consumer.WRITTEN_FOR, "aiokafka", "0.0.1")
    assert version_mismatches() == [
        f"aiokafka installed {metadata.version('aiokafka')}, written for 0.0.1"
    ]
