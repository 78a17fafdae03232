"""The streaming topology over the real broker: real workers give exactly the reference outputs.

Each test has its own topics and app id (``isolated_settings``), runs ``rfm-stream worker``
subprocesses in replay mode, produces a small deterministic log (``topology.small_log``) and
compares what the worker published with :func:`streams.tools.reference.run_reference` over the same
records: by output id, nothing missing, nothing unexpected, duplicates only byte-identical.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from schemas import ChurnAlert, DeadLetter, SegmentChange
from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.tools.reference import run_reference
from streams.tools.replay import as_consumed, partition_for, plan, produce
from streams.worker.topics import ensure_topics
from tests.integration.topology import (
    LATECOMER,
    ONE_OFF,
    TRUE_FRIEND,
    TRUE_FRIEND_LAST,
    LogBuilder,
    Out,
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    expected_outputs,
    group_assignment,
    is_split,
    iso,
    outs_of,
    read_inputs,
    run_cli,
    small_log,
    tick_plan,
    wait_for_workers,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()  # what a worker uses while no model has been published


def test_replay_equals_reference(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    assert settings.partitions == 4
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    expected = expected_outputs(settings, RULES, MODEL, planned)

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)
        actual = collect_expected(settings, expected, alive=worker.check_alive)
    assert_same_outputs(expected, actual, "one worker, 4 partitions")
    # the log exercises every kind of output
    kinds = {o.event.type for o in actual}
    assert kinds == {"segment_change", "churn_alert", "dead_letter", "offer_outcome"}


def test_two_workers_share_the_partitions(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    purchases = settings.topics.purchases
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    expected = expected_outputs(settings, RULES, MODEL, planned)

    with ExitStack() as stack:
        a = stack.enter_context(WorkerProcess(settings, tmp_path, "worker-a"))
        a.wait_ready()
        b = stack.enter_context(WorkerProcess(settings, tmp_path, "worker-b"))

        def shared() -> bool | None:
            split = is_split(group_assignment(settings, purchases), 2, settings.partitions)
            return True if split and a.is_ready() and b.is_ready() else None

        wait_for_workers(shared, 90, "two workers to split the 4 partitions", a, b)
        produce(planned, settings)

        def both_alive() -> None:
            a.check_alive()
            b.check_alive()

        actual = collect_expected(settings, expected, alive=both_alive)
    assert_same_outputs(expected, actual, "two workers")


def test_invalid_input_is_dead_lettered_and_the_stream_goes_on(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    lines, invalid = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    expected = expected_outputs(settings, RULES, MODEL, planned)
    consumed = {(r.topic, r.value): r for r in as_consumed(planned)}

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)
        actual = collect_expected(settings, expected, alive=worker.check_alive)
    assert_same_outputs(expected, actual, "invalid input")

    letters = {
        (e.source_topic, e.source_partition, e.source_offset): e
        for e in (o.event for o in actual)
        if isinstance(e, DeadLetter)
    }
    assert len(letters) == len(invalid)
    latest_bad_offset = -1
    eve_partition = partition_for(LATECOMER.encode(), settings.partitions)
    for bad in invalid:
        record = next(r for (_, value), r in consumed.items() if value == _payload_of(bad.line))
        letter = letters.get((record.topic, record.partition, record.offset))
        assert letter is not None, f"no dead letter for {bad.line!r}"
        assert letter.reason_code == bad.reason_code, (bad.line, letter.reason)
        assert bad.reason_contains in letter.reason, (bad.line, letter.reason)
        assert base64.b64decode(letter.payload_b64) == record.value
        if record.topic == settings.topics.purchases and record.partition == eve_partition:
            latest_bad_offset = max(latest_bad_offset, record.offset)

    # eve's valid order comes after her invalid ones on the same partition, and is processed
    eve_order = next(
        r
        for r in as_consumed(planned)
        if r.topic == settings.topics.purchases and r.value and b'"eve-1"' in r.value
    )
    assert eve_order.partition == eve_partition and eve_order.offset > latest_bad_offset
    eve_changes = [
        e
        for e in (o.event for o in actual)
        if isinstance(e, SegmentChange) and e.customer_id == LATECOMER
    ]
    assert eve_changes, "eve's valid order after the invalid ones gave no segment change"
    assert eve_changes[0].to_value == "new" and eve_changes[0].cause == "purchase"
    assert all(c.profile.purchase_count == 1 for c in eve_changes)


def _payload_of(line: bytes) -> bytes:
    """The record value replay produces for a log line (envelopes carry it in "value")."""
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if isinstance(parsed, dict) and "topic" in parsed and "value" in parsed:
        body = parsed["value"]
        return body.encode() if isinstance(body, str) else orjson.dumps(body)
    return line


def kcat_produce(
    settings: Settings, topic: str, key: str, lines: list[bytes], *options: str
) -> None:
    """``kcat -P -b BOOTSTRAP -t TOPIC -k KEY``: one message per line, all with KEY."""
    subprocess.run(
        ["kcat", "-P", "-b", settings.kafka_bootstrap, "-t", topic, "-k", key, *options],
        input=b"\n".join(lines) + b"\n",
        check=True,
        timeout=30,
    )


def test_events_produced_by_kcat(isolated_settings: Settings, tmp_path: Path, kcat: str) -> None:
    """kcat events are processed like any others.

    kcat (librdkafka) partitions by CRC32 of the key unless told otherwise, unlike the Java
    client, kafka-python and aiokafka (murmur2, see ``streams.tools.replay.partition_for``). A new
    customer whose every event comes through kcat is consistent either way; events of an
    existing customer must use ``-X partitioner=murmur2_random`` to reach its partition.
    """
    settings = isolated_settings
    t = settings.topics
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    newcomer = "kc-fred"
    first = TRUE_FRIEND_LAST + timedelta(days=1)
    fred = LogBuilder()
    fred.purchase("kc-fred-1", newcomer, first, "80.00")
    fred.purchase("kc-fred-2", newcomer, first + timedelta(days=9), "95.50")
    touch = LogBuilder()
    touch.interaction("kc-fred-v1", newcomer, first + timedelta(days=3), "product_view")
    comeback = LogBuilder()
    # after fred's last order: fred may share bob's partition, and moves its clock
    comeback.purchase("bob-2", ONE_OFF, first + timedelta(days=9, hours=1), "22.00")

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)  # the rest of the world, through kafka-python
        kcat_produce(settings, t.purchases, newcomer, fred.lines)
        kcat_produce(settings, t.interactions, newcomer, touch.lines)
        kcat_produce(
            settings, t.purchases, ONE_OFF, comeback.lines, "-X", "partitioner=murmur2_random"
        )
        run_cli(settings, "tick", iso(first + timedelta(days=10)))
        records = read_inputs(settings)
        expected = outs_of(settings, run_reference(settings, RULES, MODEL, records).outputs)
        actual = collect_expected(settings, expected, alive=worker.check_alive)
    assert_same_outputs(expected, actual, "kcat-produced events")

    by_kcat = [r for r in records if r.key == newcomer.encode()]
    assert len(by_kcat) == 3
    assert len({r.partition for r in by_kcat if r.topic == t.purchases}) == 1
    bob_partitions = {r.partition for r in records if r.key == ONE_OFF.encode()}
    assert bob_partitions == {partition_for(ONE_OFF.encode(), settings.partitions)}

    def changes_of(customer: str) -> list[SegmentChange]:
        events = (o.event for o in actual)
        return [e for e in events if isinstance(e, SegmentChange) and e.customer_id == customer]

    fred_changes = changes_of(newcomer)
    assert fred_changes, f"no segment change for {newcomer}, produced by kcat"
    assert fred_changes[0].to_value == "new" and fred_changes[0].cause == "purchase"
    assert max(c.profile.purchase_count for c in fred_changes) == 2
    back = [c for c in changes_of(ONE_OFF) if c.profile.purchase_count == 2]
    assert back, "bob's second order, produced by kcat, changed nothing"
    assert back[0].cause == "purchase"


def test_a_silent_true_friend_drifts_by_time_alone(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    tick_at = TRUE_FRIEND_LAST + timedelta(days=60)
    before = expected_outputs(settings, RULES, MODEL, planned)
    expected = expected_outputs(settings, RULES, MODEL, planned + tick_plan(settings, tick_at))

    def drifting(outs: Sequence[Out]) -> list[ChurnAlert]:
        return [
            e
            for e in (o.event for o in outs)
            if isinstance(e, ChurnAlert) and e.customer_id == TRUE_FRIEND and e.true_friend_drifting
        ]

    # the premise: the log alone does not flag her, the 60 silent days do
    assert not drifting(before)
    wanted = drifting(expected)
    assert wanted, "the reference has no drifting alert for the true friend: fix the test log"

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)
        collect_expected(settings, before, alive=worker.check_alive)
        run_cli(settings, "tick", iso(tick_at))
        actual = collect_expected(settings, expected, alive=worker.check_alive)
    assert_same_outputs(expected, actual, "after the tick")
    got = drifting(actual)
    assert got, "no churn alert with true_friend_drifting for the silent true friend"
    # she drifts as a true friend (warning); a critical drift also ends her loyalty
    assert got[0].quadrant == "true_friend"
    for alert in got:
        assert alert.cause == "time"
        assert alert.quadrant == ("butterfly" if alert.severity == "critical" else "true_friend")
        assert alert.event_time > TRUE_FRIEND_LAST
        assert alert.profile.last_purchase_at == TRUE_FRIEND_LAST
    assert {a.id for a in got} == {a.id for a in wanted}
