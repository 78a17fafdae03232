"""The live clock: a silent true friend's drift alert comes from wall-clock ticks alone.

A worker runs with ``RFM_LIVE_CLOCK=true``. A true friend's purchases are produced stamped in
the past, placed so that the rule's drift warning fell due after the last of them but before
now. They are produced before the worker starts, so its ticks (on the same partitions) come
after them. No further event is produced: the alert can only come from the worker's own
wall-clock ticks, and it must carry exactly the event time the pure core computes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import ChurnAlert
from streams.config import Settings
from streams.domain.engine import DictStore, PartitionEngine
from streams.domain.events import ChurnRiskRaised
from streams.domain.facts import MS_PER_DAY, PurchaseFact, SourcePosition
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.replay import plan, produce
from streams.worker.topics import ensure_topics
from tests.integration.topology import LogBuilder, Out, WorkerProcess, collect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180, func_only=True)]

CUSTOMER = "live-true-friend"
GAPS_DAYS = (14, 13, 15, 14, 14, 13, 15, 14, 14, 15, 13)  # a regular rhythm, 12 purchases
LEAD_S = 3_600.0  # the warning falls due at least this long after the last purchase


def _purchase_offsets_ms() -> list[int]:
    offsets, at = [0], 0
    for gap in GAPS_DAYS:
        at += gap * MS_PER_DAY
        offsets.append(at)
    return offsets


def _first_drifting_alert_ms(first_ms: int) -> int:
    """Event time of the first drifting-true-friend alert, by the pure core, with no event
    after the purchases (the clock moved far ahead)."""
    rules = load_rules()
    store = DictStore()
    engine = PartitionEngine(rules, default_model(), store)
    for i, offset in enumerate(_purchase_offsets_ms()):
        fact = PurchaseFact(f"{CUSTOMER}.{i}", CUSTOMER, first_ms + offset, f"o{i}", 15_000)
        engine.on_purchase(fact, SourcePosition("purchases", 0, i))
    events = engine.tick(first_ms + 3_650 * MS_PER_DAY)
    alerts = [e for e in events if isinstance(e, ChurnRiskRaised) and e.true_friend_drifting]
    assert alerts, "the log must make a drifting true friend"
    return alerts[0].at_ms


def test_silent_true_friend_is_alerted_by_wall_clock_ticks(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    # The alert's event time is a whole number of days plus a fixed fraction from the first
    # purchase's day (the state counts days), so it cannot be put at an arbitrary wall-clock
    # time: place the purchases so that it fell due within the last day. Only a clock moved
    # past it can raise it; the purchases move the partition clock to the last one only.
    probe_first = 1_700_000_000_000 // MS_PER_DAY * MS_PER_DAY
    delay = _first_drifting_alert_ms(probe_first) - probe_first
    now_ms = int(time.time() * 1000)
    first_ms = (now_ms - delay) // MS_PER_DAY * MS_PER_DAY
    if first_ms + delay > now_ms - 60_000:
        first_ms -= MS_PER_DAY
    expected_at = _first_drifting_alert_ms(first_ms)
    assert now_ms - 2 * MS_PER_DAY < expected_at < now_ms
    last_ms = first_ms + _purchase_offsets_ms()[-1]
    assert expected_at > last_ms + LEAD_S * 1000
    log = LogBuilder()
    for i, offset in enumerate(_purchase_offsets_ms()):
        at = datetime.fromtimestamp((first_ms + offset) / 1000, UTC)
        log.purchase(f"{CUSTOMER}.{i}", CUSTOMER, at, "150.00")

    def drifting(records: list[Out]) -> list[ChurnAlert]:
        events = [r.event for r in records]
        return [
            e
            for e in events
            if isinstance(e, ChurnAlert) and e.customer_id == CUSTOMER and e.true_friend_drifting
        ]

    # The purchases go in before the worker starts: its wall-clock ticks go to the same
    # partitions after them, so they are read first and are not late.
    produce(plan(log.lines, settings), settings)
    with WorkerProcess(settings, tmp_path, env={"RFM_LIVE_CLOCK": "true"}) as worker:
        worker.wait_ready()
        records = collect(
            settings,
            [settings.topics.churn_alerts],
            lambda rs: bool(drifting(rs)),
            timeout=120,
            alive=worker.check_alive,
        )
    alerts = drifting(records)
    assert alerts, "no drifting-true-friend alert from the live clock"
    alert = alerts[0]
    assert alert.severity in ("warning", "critical")
    assert alert.cause == "time"
    at_ms = int(alert.event_time.timestamp() * 1000)
    # exactly when the rule fires (the pure core's due time), not at the tick that found it
    assert at_ms == expected_at
    assert at_ms > last_ms
