"""Data as it really arrives: purchases produced late, live, to a worker on the wall clock.

The worker runs with its live clock (``RFM_LIVE_CLOCK=true``): partition clocks follow the
wall clock, so anything stamped more than the allowed lateness (5 s) before *now* is late. A
purchase an hour late, produced with ``kcat`` (murmur2 partitioner, as the Java client), is
folded into the customer's state as a correction; one older than the late horizon is
dead-lettered. The worker's outputs equal the reference over the records it consumed, ticks
included.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from schemas import DeadLetter, SegmentChange
from streams.config import Settings
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.tools.reference import run_reference
from streams.tools.verify import Out, read_inputs, read_table_states
from streams.worker.topics import ensure_topics
from tests.integration.test_topology import kcat_produce
from tests.integration.topology import (
    LogBuilder,
    WorkerProcess,
    assert_same_outputs,
    collect,
    outs_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()
LIVE = {"RFM_LIVE_CLOCK": "true", "RFM_TICK_SECONDS": "0.5"}
MURMUR2 = ("-X", "partitioner=murmur2_random")
KIM = "late-kim"  # her first purchase arrives an hour late
LOU = "late-lou"  # buys now, then an order from an hour ago is uploaded
OLA = "late-ola"  # an order from 40 days ago: beyond the horizon


def _of(outs: list[Out], customer: str) -> list[Out]:
    return [o for o in outs if o.key == customer.encode()]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_a_purchase_an_hour_late_is_applied_live(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    t = settings.topics
    ensure_topics(settings)
    compared = [t.segment_changes, t.churn_alerts, t.dead_letters]
    with WorkerProcess(settings, tmp_path, env=LIVE) as worker:
        worker.wait_ready()
        now = datetime.now(UTC).replace(microsecond=0)
        lou_now = LogBuilder()
        lou_now.purchase("late-lou-1", LOU, now, "30.00")
        kcat_produce(settings, t.purchases, LOU, lou_now.lines, *MURMUR2)

        def lou_classified(outs: list[Out]) -> bool:
            return any(isinstance(o.event, SegmentChange) for o in _of(outs, LOU))

        # once time has closed past lou's order, every partition's clock is the wall clock
        # (ticks every 0.5 s): a partition's very first record would otherwise set its clock
        collect(settings, compared, lou_classified, 60, alive=worker.check_alive)
        kim = LogBuilder()
        kim.purchase("late-kim-1", KIM, now - timedelta(hours=1), "55.00")
        kcat_produce(settings, t.purchases, KIM, kim.lines, *MURMUR2)
        ola = LogBuilder()
        ola.purchase("late-ola-1", OLA, now - timedelta(days=40), "12.00")
        kcat_produce(settings, t.purchases, OLA, ola.lines, *MURMUR2)
        # and an older order of lou's is uploaded
        lou_late = LogBuilder()
        lou_late.purchase("late-lou-0", LOU, now - timedelta(hours=1), "20.00")
        kcat_produce(settings, t.purchases, LOU, lou_late.lines, *MURMUR2)

        def settled(outs: list[Out]) -> bool:
            states = read_table_states(settings)
            lou = states.get(LOU)
            return bool(_of(outs, KIM) and _of(outs, OLA) and lou is not None and lou.orders == 2)

        actual = collect(settings, compared, settled, 90, settle=2.0, alive=worker.check_alive)
        records = read_inputs(settings)

    # kim: her only purchase came an hour late, and is applied: a correction
    kim_changes = [o.event for o in _of(actual, KIM)]
    assert kim_changes, "the hour-late purchase gave no output"
    for change in kim_changes:
        assert isinstance(change, SegmentChange)
        assert change.cause == "late_purchase"
        assert change.from_value is None
        assert change.profile.purchase_count == 1
        assert change.profile.last_purchase_at == now - timedelta(hours=1)
        assert change.event_time > now - timedelta(hours=1)  # re-evaluated at closed time
    states = read_table_states(settings)
    assert states[KIM].orders == 1 and states[KIM].first_ms is not None
    # lou: the late order is folded in before his in-time one (same day or the day before)
    lou = states[LOU]
    assert lou.orders == 2
    assert lou.first_ms == int((now - timedelta(hours=1)).timestamp()) * 1000
    assert lou.last_ms == int(now.timestamp()) * 1000
    lou_causes = [getattr(o.event, "cause", None) for o in _of(actual, LOU)]
    assert lou_causes[0] == "purchase"
    assert set(lou_causes) <= {"purchase", "late_purchase"}
    # ola: beyond the horizon, a dead letter that says how to bring it in; no state
    (letter,) = [o.event for o in _of(actual, OLA)]
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == "beyond_late_horizon"
    assert "late horizon of 30 days" in letter.reason and "rfm-stream import" in letter.reason
    assert OLA not in states
    # and all of it is what the reference makes of the records consumed, ticks included
    ref = run_reference(settings, RULES, MODEL, records)
    ours = {KIM.encode(), LOU.encode(), OLA.encode()}
    expected = [o for o in outs_of(settings, ref.outputs) if o.key in ours and o.topic in compared]
    assert_same_outputs(expected, [o for o in actual if o.key in ours], "late data, live")
    profiles = [r for r in ref.outputs if r.topic == t.profiles and r.key == LOU.encode()]
    assert orjson.loads(profiles[-1].value)["profile"]["purchase_count"] == 2
