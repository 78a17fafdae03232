"""``rfm-stream import`` then a live worker: the history folded in-process, the rest streamed.

The log is cut in event time. The first part is imported (states into the changelog, profiles
into Redis, no outputs); a worker then starts, restores those states and consumes the second
part from Kafka. Its outputs must be exactly those of the core continuing from the imported
states, and the final states those of one in-order replay of the whole log (the applied
offsets aside: the imported history was never in the live topics).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from streams.adapters import connect
from streams.adapters.erasure import RedisEraser
from streams.config import Settings
from streams.domain.erasure import customer_hash
from streams.domain.model import Model, default_model
from streams.domain.rules import Rules, load_rules
from streams.domain.state import CustomerState
from streams.processor import OutRecord
from streams.tools import importer
from streams.tools.reference import run_reference
from streams.tools.replay import Planned, as_consumed, plan, produce
from streams.tools.verify import read_table_states
from streams.worker.topics import ensure_topics
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.integration.topology import (
    WorkerProcess,
    assert_same_outputs,
    collect_expected,
    large_log,
    outs_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RULES: Rules = load_rules()
MODEL: Model = default_model()
HISTORY_SHARE = 0.7


def without_offsets(state: CustomerState) -> bytes:
    """A state's bytes without what an import deliberately does not carry over.

    The applied offsets name the live topics' offsets. The offer bookkeeping (open outcome
    windows, recent decision times for the cooldown) comes from offers decided while the
    log was processed: a whole replay decides offers for the history, an import sends none
    for it (``importer.live_ready``), so those fields differ by design, and so does the time
    of the last evaluation (closing a historic decision's window is a due time of its own);
    the outputs of the live part, offers and outcomes included, are compared record by record
    above, and every figure and classification of the state still has to be equal.
    """
    copy = CustomerState.from_bytes(state.to_bytes())
    copy.offsets = {}
    copy.outcomes = []
    copy.offer_ms = []
    copy.evaluated_ms = None
    return copy.to_bytes()


def split_log(settings: Settings) -> tuple[list[bytes], list[Planned]]:
    """(history as JSON lines, the rest as planned records), cut at 70 % in event time."""
    planned = plan(large_log(), settings, lateness_ms=RULES.allowed_lateness_ms)
    events = [p for p in planned if not p.headers]  # the plan's closing ticks
    cut = int(len(events) * HISTORY_SHARE)
    history = [p.value for p in events[:cut]]
    live_lines = [p.value for p in events[cut:]]
    return history, plan(live_lines, settings, lateness_ms=RULES.allowed_lateness_ms)


def rfm_stream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_then_live(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    history, live = split_log(settings)
    history_file = tmp_path / "history.jsonl"
    history_file.write_bytes(b"\n".join(history) + b"\n")

    done = rfm_stream(
        settings,
        "import",
        str(history_file),
        "--keep-model",
        "--json",
        "--dead-letters",
        str(tmp_path / "dead.jsonl"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = orjson.loads(done.stdout)
    assert figures["written"] is True and figures["model_published"] is False
    assert figures["events"] == len(history)

    # what the core gives from the imported states on, over the live records as consumed
    folded = importer.fold(history, "jsonl", settings, RULES, MODEL)
    imported = {s.customer_id: s.to_bytes() for s in folded.states()}
    for state in folded.states():
        importer.live_ready(state)
    expected_records: list[OutRecord] = []
    for record in as_consumed(live):
        expected_records.extend(folded.processor.process(record))
    expected = outs_of(settings, expected_records)

    # the import wrote the states and the views, and published nothing
    table = read_table_states(settings)
    assert set(table) == set(imported)
    assert all(s.offsets and set(s.offsets.values()) == {-1} for s in table.values())
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        some = sorted(imported)[0]
        profile = client.hgetall(f"{settings.redis_prefix}profile:{some}")
        assert profile["customer_id"] == some and profile["quadrant"]
    finally:
        client.close()

    with WorkerProcess(settings, tmp_path) as worker:
        worker.wait_ready()
        refused = rfm_stream(settings, "import", str(history_file), "--keep-model")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "consuming" in refused.stdout + refused.stderr
        produce(live, settings)
        actual = collect_expected(settings, expected, alive=worker.check_alive)
    assert_same_outputs(expected, actual, "import, then live")

    # one in-order replay of the whole log reaches the same states
    whole = plan(
        history + [p.value for p in live if not p.headers],
        settings,
        lateness_ms=RULES.allowed_lateness_ms,
    )
    reference = run_reference(settings, RULES, MODEL, as_consumed(whole))
    replayed = {
        s.customer_id: without_offsets(s)
        for store in reference.stores.values()
        for s in store.states()
    }
    final = read_table_states(settings)
    assert {k: without_offsets(v) for k, v in final.items()} == replayed


def test_an_erased_customer_is_not_brought_back(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """A history that still holds an erased customer: the import leaves them out, says so."""
    settings = isolated_settings
    ensure_topics(settings)
    history, _ = split_log(settings)
    history = history[:3000]
    folded = importer.fold(history, "jsonl", settings, RULES, MODEL)
    everyone = sorted(s.customer_id for s in folded.states())
    erased = everyone[len(everyone) // 2]

    async def erase() -> None:
        client = connect(settings)
        try:
            salt = settings.erasure_salt.get_secret_value()
            await RedisEraser(client, settings.redis_prefix).erase(
                erased, customer_hash(erased, salt)
            )
        finally:
            await client.aclose()

    asyncio.run(erase())
    history_file = tmp_path / "history.jsonl"
    history_file.write_bytes(b"\n".join(history) + b"\n")
    done = rfm_stream(settings, "import", str(history_file), "--keep-model", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    figures = orjson.loads(done.stdout)
    assert figures["erased_left_out"] == 1
    assert figures["customers"] == len(everyone) - 1

    table = read_table_states(settings)
    assert set(table) == set(everyone) - {erased}
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        assert client.exists(f"{settings.redis_prefix}profile:{erased}") == 0
        assert client.exists(f"{settings.redis_prefix}profile:{everyone[0]}") == 1
    finally:
        client.close()
