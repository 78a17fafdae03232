"""RocksDB: a SIGKILLed worker's local state is never ahead of the changelog.

A worker restarted on its data dir trusts its local RocksDB rows (a redelivered event they
have applied is skipped). If those rows could be ahead of the changelog, a partition that
then moved to a worker restoring from the changelog would lose those events' effects. The
worker writes RocksDB only with changelog records the broker acknowledged
(``streams.worker.bulk_store``); this drives the whole sequence against the real stack and
compares with a whole in-order replay (the reference fold).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.domain.state import CustomerState
from streams.tools.replay import plan
from streams.worker.topics import ensure_topics
from tests.integration.topology import (
    FAST_FAILOVER,
    OutputReader,
    PacedProducer,
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    compared_topics,
    large_log,
    outs_of,
    read_table_states,
    reference,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()
CHUNKS = 24
CHUNK_PAUSE_S = 0.5


def _fold(state: CustomerState) -> dict[str, object]:
    """What an event's effect changes in a state (its applied offsets included)."""
    return {
        "orders": state.orders,
        "refunds": state.refunds,
        "refunded_cents": state.refunded_cents,
        "interactions": state.interactions,
        "repeat_days": state.repeat_days,
        "seq": state.seq,
        "first_ms": state.first_ms,
        "last_ms": state.last_ms,
        "offsets": dict(state.offsets),
    }


def _wait_for_outputs(reader: OutputReader, worker: WorkerProcess, count: int) -> int:
    deadline = time.monotonic() + 90
    while len({o.id for o in reader.records}) < count:
        worker.check_alive()
        assert time.monotonic() < deadline, f"{worker.name} made no outputs"
        reader.poll(timeout_ms=100)
    return len({o.id for o in reader.records})


def test_sigkill_restart_then_partitions_move_to_a_new_machine(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """SIGKILL (RocksDB), restart on the same data dir, then hand every partition to a worker
    with an empty data dir and stop the first for good: no event's effect is lost."""
    settings = isolated_settings.model_copy(update={"store": "rocksdb"})
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=RULES.allowed_lateness_ms)
    ref = reference(settings, RULES, MODEL, planned)
    expected = outs_of(settings, ref.outputs)
    assert len(planned) > 3000 and len(expected) > 1000
    topics = compared_topics(settings)
    first_dir = tmp_path / "first-data"

    # the second half of the log waits until the partitions have moved
    producer = PacedProducer(
        planned, settings, chunks=CHUNKS, pause=CHUNK_PAUSE_S, hold_at=CHUNKS // 2
    )
    with OutputReader(settings, topics) as reader:
        with WorkerProcess(
            settings, tmp_path, "first", data_dir=first_dir, env=FAST_FAILOVER
        ) as first:
            first.wait_ready()
            producer.start()
            killed_at = _wait_for_outputs(reader, first, int(0.15 * len(expected)))
            first.kill()
        # the same machine again: its RocksDB rows are trusted, redeliveries are skipped
        with WorkerProcess(
            settings, tmp_path, "first-again", data_dir=first_dir, env=FAST_FAILOVER
        ) as again:
            again.wait_ready(timeout=90)
            moved_at = _wait_for_outputs(reader, again, killed_at + int(0.1 * len(expected)))
            # a new machine joins, then the first leaves for good: all partitions move
            with WorkerProcess(
                settings, tmp_path, "new-machine", data_dir=tmp_path / "new-data", env=FAST_FAILOVER
            ) as new:
                time.sleep(3.0)
                again.kill()
                new.wait_ready(timeout=90)
                producer.finish()
                actual = collect_expected(settings, expected, 150, alive=new.check_alive)
                # every state the new machine restored or wrote, against the whole replay
                ref_states = {
                    cid: state
                    for store in ref.stores.values()
                    for cid, state in store.by_customer.items()
                }
                deadline = time.monotonic() + 60
                while True:
                    table = read_table_states(settings)
                    differing = {
                        cid: (_fold(table[cid]), _fold(state))
                        for cid, state in ref_states.items()
                        if cid not in table or _fold(table[cid]) != _fold(state)
                    }
                    if not differing or time.monotonic() > deadline:
                        break
                    time.sleep(2.0)  # the last batch's changelog writes may still be on the way
    print(f"killed after {killed_at} outputs, moved after {moved_at} of {len(expected)}")
    assert_same_outputs(expected, actual, f"SIGKILL after {killed_at}, move after {moved_at}")
    assert set(table) == set(ref_states)
    assert not differing, (
        f"{len(differing)} changelog states differ from the in-order replay (worker, "
        f"reference): {dict(list(differing.items())[:2])}"
    )
