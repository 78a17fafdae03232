"""Faults: a worker SIGKILLed in the middle of a log and restarted gives the reference outputs.

Effectively once (docs/architecture.md): a redelivered record is a no-op for the state, and outputs
carry deterministic ids, so after a crash the output topics may hold some ids twice, but always with
identical content, nothing is missing, and no state counts an event twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.domain.state import CustomerState
from streams.tools.replay import plan, produce
from streams.worker.topics import ensure_topics
from tests.integration.topology import (
    FAST_FAILOVER,
    OutputReader,
    PacedProducer,
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    compare,
    compared_topics,
    large_log,
    last_output_per_customer,
    outs_of,
    read_table_states,
    reference,
    small_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()
CHUNKS = 20  # the log is produced over ~8 s, so the kill lands in the middle of it
CHUNK_PAUSE_S = 0.4
KILL_AFTER_FRACTION = 0.15  # of the expected output ids seen


def stopped(worker: WorkerProcess) -> bool:
    """SIGTERM ended the worker: cleanly (0), or killed after the grace period (None).

    Faust's take buffers can leave a message un-acknowledged at shutdown, and the worker then
    waits for it until it is killed (Faust's shutdown can hang). That is as safe as the
    SIGKILL these tests already exercise (nothing un-acknowledged is committed); a non-zero
    exit code (a crash) still fails.
    """
    return worker.stop() in (0, None)


def _counts(state: CustomerState) -> dict[str, object]:
    return {
        "orders": state.orders,
        "refunds": state.refunds,
        "refunded_cents": state.refunded_cents,
        "interactions": state.interactions,
        "repeat_days": state.repeat_days,
        "seq": state.seq,
        "first_ms": state.first_ms,
        "last_ms": state.last_ms,
        "pending": len(state.pending),
    }


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkill_mid_log_and_restart_gives_the_reference(
    isolated_settings: Settings,
    tmp_path: Path,
    store: str,
) -> None:
    settings = isolated_settings.model_copy(update={"store": store})
    ensure_topics(settings)
    planned = plan(large_log(), settings, lateness_ms=RULES.allowed_lateness_ms)
    ref = reference(settings, RULES, MODEL, planned)
    expected = outs_of(settings, ref.outputs)
    assert len(planned) > 3000 and len(expected) > 1000
    topics = compared_topics(settings)
    data_dir = tmp_path / "worker-data"  # shared by the killed worker and its replacement

    producer = PacedProducer(planned, settings, chunks=CHUNKS, pause=CHUNK_PAUSE_S)
    with WorkerProcess(
        settings, tmp_path, "worker-1", data_dir=data_dir, env=FAST_FAILOVER
    ) as first:
        first.wait_ready()
        producer.start()
        with OutputReader(settings, topics) as reader:
            deadline = time.monotonic() + 90
            while len({o.id for o in reader.records}) < KILL_AFTER_FRACTION * len(expected):
                first.check_alive()
                assert time.monotonic() < deadline, "no outputs from the first worker"
                reader.poll(timeout_ms=100)
            first.kill()
            seen_before_kill = len({o.id for o in reader.records})
            chunks_before_kill = producer.chunks
    assert producer.is_alive(), "the whole log was produced before the kill: slow it down"
    assert seen_before_kill < len(expected), "everything was out before the kill"

    # the replacement starts while the rest of the log is still coming in
    with WorkerProcess(
        settings, tmp_path, "worker-2", data_dir=data_dir, env=FAST_FAILOVER
    ) as second:
        second.wait_ready(timeout=90)
        producer.finish()
        actual = collect_expected(settings, expected, 120, alive=second.check_alive)
        assert stopped(second), second.log_tail()

    result = compare(expected, actual)
    print(  # shown with -rP: how much the run exercised
        f"killed after {seen_before_kill}/{len(expected)} outputs and "
        f"{chunks_before_kill}/{CHUNKS} input chunks; "
        f"{sum(result.duplicates.values()) - len(result.duplicates)} redelivered duplicates"
    )
    assert_same_outputs(expected, actual, f"SIGKILL after {seen_before_kill} outputs, restart")

    # counts in the last published profile of every customer: nothing counted twice
    want_last = last_output_per_customer(expected)
    got_last = last_output_per_customer(actual)
    assert set(got_last) == set(want_last)
    wrong = {
        c: (got_last[c].profile.purchase_count, e.profile.purchase_count)
        for c, e in want_last.items()
        if got_last[c].profile.purchase_count != e.profile.purchase_count
    }
    assert not wrong, f"purchase_count (worker, reference) differs: {wrong}"

    # and the states the worker left in its table equal the reference's
    ref_states = {
        cid: state for store_ in ref.stores.values() for cid, state in store_.by_customer.items()
    }
    table = read_table_states(settings)
    assert set(table) == set(ref_states)
    differing = {
        cid: (_counts(table[cid]), _counts(state))
        for cid, state in ref_states.items()
        if _counts(table[cid]) != _counts(state)
    }
    assert not differing, (
        f"{len(differing)} table states differ from the reference (worker, reference): "
        f"{dict(list(differing.items())[:3])}"
    )


def test_graceful_restart_resumes_from_the_changelog(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """SIGTERM half way through the small log; a new worker on the same data dir finishes it."""
    settings = isolated_settings
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    half = len(planned) // 2
    first_half = outs_of(settings, reference(settings, RULES, MODEL, planned[:half]).outputs)
    expected = outs_of(settings, reference(settings, RULES, MODEL, planned).outputs)
    data_dir = tmp_path / "worker-data"

    with WorkerProcess(settings, tmp_path, "worker-1", data_dir=data_dir) as first:
        first.wait_ready()
        produce(planned[:half], settings)
        collect_expected(settings, first_half, alive=first.check_alive)
        assert stopped(first), first.log_tail()
    produce(planned[half:], settings)
    with WorkerProcess(settings, tmp_path, "worker-2", data_dir=data_dir) as second:
        second.wait_ready(timeout=90)
        actual = collect_expected(settings, expected, alive=second.check_alive)
    assert_same_outputs(expected, actual, "restart after SIGTERM half way")
