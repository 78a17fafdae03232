"""The right to be forgotten, and profiles that stay true, against the real Kafka and Redis.

One worker (``rfm-stream worker``, API token set) reads the small log and a tick 60 days past
the true friend's last purchase. Then:

* the true friend, silent for 60 days, shows the new days-since and churn band: through the
  API as of the current closed event time, and in Redis as republished by time alone;
* ``DELETE /api/customers/cat`` and ``rfm-stream forget bob`` erase two customers: the API
  answers 404, no Redis key names them or their hash, the table's changelog holds a
  tombstone, ``customer-erased`` says so once each;
* the whole log replayed again, then a worker restart and another replay: neither brings them
  back, and every event of theirs is dead-lettered ``erased``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from schemas import CustomerErased, DeadLetter, parse_output
from streams.adapters.redis_views import iso_ms
from streams.config import Settings
from streams.domain.erasure import customer_hash
from streams.domain.facts import MS_PER_DAY
from streams.domain.freshness import time_figures
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.tools.replay import plan, read_lines
from streams.tools.verify import LatestReader, OutputReader, _changelog_key, changelog_topic
from tests.integration.conftest import wait_for
from tests.integration.topology import (
    ONE_OFF,
    REFUNDER,
    TRUE_FRIEND,
    TRUE_FRIEND_LAST,
    WorkerProcess,
    iso,
    run_cli,
    small_log,
    wait_for_workers,
)

RULES = load_rules()
MODEL = default_model()
TOKEN = "erasure-test-token"
SALT = "erasure-test-salt"
TICK_AT = TRUE_FRIEND_LAST + timedelta(days=60)
TICK_MS = int(TICK_AT.timestamp() * 1000)
CLI_TIMEOUT_S = 120.0


def http(
    port: int, path: str, method: str = "GET", token: str | None = TOKEN
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def keys_naming(client: redis.Redis, prefix: str, *needles: str) -> list[str]:
    """Every Redis key of the run whose name contains one of ``needles``."""
    found = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        text = key.decode() if isinstance(key, bytes) else str(key)
        if any(n in text for n in needles):
            found.append(text)
    return found


def members_naming(client: redis.Redis, prefix: str, customer_id: str) -> list[str]:
    """Audience sets and recent-feed entries that still hold the customer."""
    found = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "set" and client.sismember(key, customer_id):
            found.append(str(key))
        elif kind == "zset":
            for member in client.zrange(key, 0, -1):
                text = member.decode() if isinstance(member, bytes) else str(member)
                if f'"customer_id":"{customer_id}"' in text:
                    found.append(str(key))
    return found


@dataclass
class Erased:
    settings: Settings
    workdir: Path
    log: Path
    worker: WorkerProcess


def _profile(client: redis.Redis, settings: Settings, customer_id: str) -> dict[str, str]:
    raw = client.hgetall(f"{settings.redis_prefix}profile:{customer_id}")
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


@pytest.fixture(scope="module")
def erased(
    settings: Settings,
    run_id: str,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Erased]:
    workdir = tmp_path_factory.mktemp("erasure")
    own = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.erase.",
            "redis_prefix": f"{run_id}:erase:",
            "app_id": f"{run_id}-erase",
            "data_dir": str(workdir / "worker-data"),
            "erasure_salt": SecretStr(SALT),
        }
    )
    log = workdir / "small.jsonl"
    log.write_bytes(b"".join(line + b"\n" for line in small_log()[0]))
    worker = WorkerProcess(own, workdir, env={"RFM_API_TOKEN": TOKEN}).start()
    state = Erased(own, workdir, log, worker)
    try:
        wait_for_workers(
            lambda: http(worker.web_port, "/ready", token=None)[0] == 200 or None,
            180,
            "the worker's /ready to say 200",
            worker,
        )
        run_cli(own, "replay", str(log), timeout=CLI_TIMEOUT_S)
        run_cli(own, "tick", iso(TICK_AT), timeout=CLI_TIMEOUT_S)

        def settled() -> bool | None:
            fields = _profile(redis_client, own, TRUE_FRIEND)
            stale = TRUE_FRIEND_LAST.timestamp() * 1000 + 28 * MS_PER_DAY
            return True if fields and int(fields["at_ms"]) > stale else None

        wait_for_workers(settled, 120, "the true friend's profile to move with time", worker)
        wait_for(lambda: _profile(redis_client, own, REFUNDER) or None, 60, "cat's profile")
        wait_for(lambda: _profile(redis_client, own, ONE_OFF) or None, 60, "bob's profile")
        yield state
    finally:
        worker.stop()
        state.worker.stop()  # the restart test swaps in its restarted worker


def test_a_silent_customer_shows_the_new_days_since_and_band(
    erased: Erased, redis_client: redis.Redis
) -> None:
    settings = erased.settings
    stored = _profile(redis_client, settings, TRUE_FRIEND)
    last_ms = int(TRUE_FRIEND_LAST.timestamp() * 1000)
    first = stored["first_purchase_at"]
    assert stored["last_purchase_at"] == iso_ms(last_ms)
    # Redis: republished by time alone, its figures those of its own event time
    at_ms = int(stored["at_ms"])
    assert at_ms > last_ms + 28 * MS_PER_DAY
    then = time_figures(
        MODEL,
        RULES,
        repeat_days=int(stored["repeat_days"]),
        first_purchase_ms=_ms(first),
        last_purchase_ms=last_ms,
        at_ms=at_ms,
    )
    assert float(stored["days_since_last_purchase"]) == pytest.approx(then.days_since_last_purchase)
    assert stored["churn_risk_band"] == then.churn_risk_band
    # the API: as of the current closed event time (the tick minus the allowed lateness)
    status, body = http(erased.worker.web_port, f"/api/customers/{TRUE_FRIEND}")
    assert status == 200, body
    profile = body["profile"]
    now_ms = TICK_MS - RULES.allowed_lateness_ms - 1
    assert profile["as_of_ms"] == now_ms and profile["as_of"] == iso_ms(now_ms)
    expected = time_figures(
        MODEL,
        RULES,
        repeat_days=int(stored["repeat_days"]),
        first_purchase_ms=_ms(first),
        last_purchase_ms=last_ms,
        at_ms=now_ms,
    )
    assert profile["days_since_last_purchase"] == pytest.approx(60.0, abs=0.001)
    assert profile["days_since_last_purchase"] == pytest.approx(expected.days_since_last_purchase)
    assert profile["churn_risk_band"] == expected.churn_risk_band
    assert profile["churn_risk"] == pytest.approx(expected.churn_risk)
    assert profile["p_alive"] == pytest.approx(expected.p_alive)
    assert profile["days_since_last_purchase"] > float(stored["days_since_last_purchase"])


def _ms(iso_text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp() * 1000)


def _gone(erased: Erased, client: redis.Redis, customer_id: str) -> bool | None:
    status, _ = http(erased.worker.web_port, f"/api/customers/{customer_id}")
    if status != 404:
        return None
    hashed = customer_hash(customer_id, SALT)
    prefix = erased.settings.redis_prefix
    left = keys_naming(client, prefix, f":{customer_id}", hashed)
    return True if not left and not members_naming(client, prefix, customer_id) else None


def _erased_letters(settings: Settings) -> list[DeadLetter]:
    with OutputReader(settings, [settings.topics.dead_letters]) as reader:
        reader.read_to_end()
        letters = [parse_output(o.value) for o in reader.records]
    return [d for d in letters if isinstance(d, DeadLetter) and d.reason_code == "erased"]


# bob: a purchase and an interaction; cat: two purchases and a refund
ERASED_RECORDS_PER_REPLAY = 5


def test_erasure_deletes_everything_and_survives_replays_and_restarts(
    erased: Erased, redis_client: redis.Redis
) -> None:
    settings, port = erased.settings, erased.worker.web_port
    assert http(port, f"/api/customers/{REFUNDER}")[0] == 200
    # the DELETE route needs the token, like every API route
    assert http(port, f"/api/customers/{REFUNDER}", "DELETE", token=None)[0] == 401
    assert http(port, f"/api/customers/{REFUNDER}", "DELETE", token="wrong")[0] == 401
    assert http(port, "/api/customers/%20padded", "DELETE")[0] == 400
    status, body = http(port, f"/api/customers/{REFUNDER}", "DELETE")
    assert status == 202 and body["status"] == "erasure_requested", body
    run_cli(settings, "forget", ONE_OFF, timeout=CLI_TIMEOUT_S)
    for customer_id in (REFUNDER, ONE_OFF):
        wait_for_workers(
            lambda c=customer_id: _gone(erased, redis_client, c),  # type: ignore[misc]
            60,
            f"{customer_id} to be erased from the API and Redis",
            erased.worker,
        )
    # the others are untouched
    assert http(port, f"/api/customers/{TRUE_FRIEND}")[0] == 200

    # downstream tools are told once per customer, with a deterministic id
    with OutputReader(settings, [settings.topics.customer_erased]) as reader:
        reader.read_to_end()
        told = [parse_output(o.value) for o in reader.records]
    assert sorted((e.customer_id, e.id) for e in told if isinstance(e, CustomerErased)) == sorted(
        (c, f"erased:{customer_hash(c, SALT)}") for c in (ONE_OFF, REFUNDER)
    )
    # the table's changelog: a tombstone for each, so compaction removes their states
    changelog = LatestReader(settings, changelog_topic(settings), _changelog_key)
    with changelog:
        changelog.read_to_end()
    for customer_id in (REFUNDER, ONE_OFF):
        assert customer_id in changelog.latest and changelog.latest[customer_id] is None
        assert f"\x00erased/{customer_hash(customer_id, SALT)}" in changelog.latest
    assert changelog.latest.get(TRUE_FRIEND) is not None

    # the whole log again: nothing comes back, their events are dead-lettered "erased"
    assert _erased_letters(settings) == []
    run_cli(settings, "replay", str(erased.log), timeout=CLI_TIMEOUT_S)
    wait_for(
        lambda: len(_erased_letters(settings)) >= ERASED_RECORDS_PER_REPLAY or None,
        60,
        "the replayed events of the erased customers to be dead-lettered",
    )
    for customer_id in (REFUNDER, ONE_OFF):
        assert _gone(erased, redis_client, customer_id), f"the replay brought {customer_id} back"

    # a restart (the table recovered from its changelog), then the log once more
    erased.worker.stop()
    restarted = WorkerProcess(
        settings,
        erased.workdir,
        "restarted",
        data_dir=Path(settings.data_dir),
        env={"RFM_API_TOKEN": TOKEN},
    ).start()
    erased.worker = restarted
    wait_for_workers(
        lambda: http(restarted.web_port, "/ready", token=None)[0] == 200 or None,
        180,
        "the restarted worker's /ready to say 200",
        restarted,
    )
    run_cli(settings, "replay", str(erased.log), timeout=CLI_TIMEOUT_S)
    wait_for(
        lambda: len(_erased_letters(settings)) >= 2 * ERASED_RECORDS_PER_REPLAY or None,
        90,
        "the events replayed after the restart to be dead-lettered",
    )
    letters = _erased_letters(settings)
    assert len(letters) == 2 * ERASED_RECORDS_PER_REPLAY
    assert all(d.customer_id is None and d.payload_size == 0 for d in letters)
    for customer_id in (REFUNDER, ONE_OFF):
        assert _gone(erased, redis_client, customer_id), f"the restart brought {customer_id} back"
    planned = plan(read_lines(erased.log), settings, lateness_ms=RULES.allowed_lateness_ms)
    theirs = [p for p in planned if p.key in (REFUNDER.encode(), ONE_OFF.encode())]
    assert len(theirs) == ERASED_RECORDS_PER_REPLAY
    # and the verifier agrees: every output, the final table and the profiles are what the
    # pure core gives for the input topics, erasure requests included
    said = run_cli(settings, "verify", "--wait", "120", timeout=300)
    assert "ALL-RECORDS-DELIVERED" in said, said
