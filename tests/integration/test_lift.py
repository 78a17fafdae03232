"""Offer outcomes and lift through the real worker: a replayed log, real Kafka and Redis.

The worker must publish on ``offer-outcomes`` exactly what the pure reference publishes for the
same records (by id, content byte for byte) — including outcomes closed by time alone, after
the log, by clock ticks — and its ``outcomes`` agent must fold them into the lift counters in
Redis once each, which ``rfm-stream lift`` and ``/metrics`` then show.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from streams.adapters import connect
from streams.adapters.outcome_store import OutcomeStore
from streams.config import Settings
from streams.domain.lift import ArmCounts, Key, aggregates_from_outcomes
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.tools.replay import plan, produce
from streams.worker.topics import ensure_topics
from tests.integration.topology import (
    SMALL_T0,
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    expected_outputs,
    run_cli,
    small_log,
    tick_plan,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180, func_only=True)]

RULES: Rules = load_rules()
MODEL: Model = default_model()


def _aggregates(settings: Settings) -> dict[Key, ArmCounts]:
    async def read() -> dict[Key, ArmCounts]:
        client = connect(settings)
        try:
            return await OutcomeStore(client, settings.redis_prefix).aggregates()
        finally:
            await client.aclose()

    return asyncio.run(read())


def _add_again(settings: Settings, outcomes: list[dict[str, object]]) -> int:
    async def add() -> int:
        client = connect(settings)
        try:
            return await OutcomeStore(client, settings.redis_prefix).add(outcomes)
        finally:
            await client.aclose()

    return asyncio.run(add())


def test_outcomes_and_lift_from_a_replayed_log(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    lines, _ = small_log()
    planned = plan(lines, settings, lateness_ms=RULES.allowed_lateness_ms)
    # a year later, with no purchase: every open outcome window closes by time alone
    later = tick_plan(settings, SMALL_T0 + timedelta(days=730))
    expected = expected_outputs(settings, RULES, MODEL, planned + later)
    topic = settings.topics.offer_outcomes
    outcomes = [o for o in expected if o.topic == topic]
    closed_by_time = expected_outputs(settings, RULES, MODEL, planned)
    assert len(outcomes) > len([o for o in closed_by_time if o.topic == topic]), (
        "the ticks must close outcomes the log left open"
    )

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        produce(planned, settings)
        produce(later, settings)
        actual = collect_expected(settings, expected, alive=worker.check_alive)
        assert_same_outputs(expected, actual, "outcomes through the worker")
        published = [orjson.loads(o.value) for o in actual if o.topic == topic]
        assert len({o["id"] for o in published}) == len(outcomes)

        want = aggregates_from_outcomes(published)
        deadline = time.monotonic() + 60
        while _aggregates(settings) != want:
            worker.check_alive()
            assert time.monotonic() < deadline, (_aggregates(settings), want)
            time.sleep(0.5)

        # a redelivered outcome changes nothing: counted once per id
        assert _add_again(settings, published) == 0
        assert _aggregates(settings) == want

        shown = orjson.loads(_json_out(run_cli(settings, "lift", "--json")))
        overall = next(r for r in shown["rows"] if r["offer_code"] == r["quadrant"] == "*")
        assert overall["treated"]["outcomes"] + overall["holdout"]["outcomes"] == len(published)
        assert worker.metric("rfm_offer_outcomes_closed") == 3 * len(published)


def _json_out(text: str) -> str:
    """The JSON document in a command's output (stderr may carry log lines before it)."""
    return text[text.index("{") : text.rindex("}") + 1]
