"""The Redis adapters against a real Redis: views, audiences, history, offers, restarts.

Each test writes under its own prefix below the session's ``settings.redis_prefix``, so the
session cleanup removes everything. The restart test runs a Redis server of its own on a free
port and never touches the shared one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

from streams.adapters import OfferStore, ProfileViews, connect, keep_ms_for, with_backoff
from streams.config import Settings
from streams.domain.events import OutputEvent
from streams.domain.offers import OfferDecision, OfferHistory, Trigger, decide
from streams.domain.rules import load_rules
from tests.unit.adapters.support import MS_PER_DAY, T, alert, entered, update

pytestmark = [pytest.mark.integration, pytest.mark.asyncio, pytest.mark.timeout(120)]

OFFER_RULES = load_rules().offers.model_copy(update={"holdout_percent": 0})
KEEP_MS = keep_ms_for(OFFER_RULES)

_prefixes = count(1)


@pytest.fixture
def prefix(settings: Settings) -> str:
    """A key prefix of this test's own, under the session's prefix."""
    return f"{settings.redis_prefix}adapters{next(_prefixes)}:"


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[Redis]:
    """An asyncio client on the shared Redis, bytes responses (as the worker uses it)."""
    c = connect(settings.redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def views(client: Redis, prefix: str) -> ProfileViews:
    return ProfileViews(client, prefix, history_cap=4)


@pytest.fixture
def offers(client: Redis, prefix: str) -> OfferStore:
    return OfferStore(client, prefix, keep_ms=KEEP_MS)


async def snapshot(client: Redis, prefix: str) -> dict[bytes, tuple[bytes, Any]]:
    """Every key under ``prefix`` with its type and contents (TTLs aside)."""
    out: dict[bytes, tuple[bytes, Any]] = {}
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind: Any = await client.type(key)
        value: Any
        if kind == b"hash":
            value = await client.hgetall(key)
        elif kind == b"set":
            value = sorted(await client.smembers(key))
        elif kind == b"list":
            value = await client.lrange(key, 0, -1)
        elif kind == b"zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = await client.get(key)
        out[key] = (kind, value)
    return out


# --- profile views ------------------------------------------------------------------------


async def test_apply_writes_profile_audiences_and_counts(views: ProfileViews) -> None:
    await views.apply(
        [
            update("c1", T, rfm_segment="champions", quadrant="true_friend"),
            update("c2", T, rfm_segment="champions", quadrant="butterfly"),
            update("c3", T, rfm_segment=None, quadrant=None),
        ]
    )
    stored = await views.profile("c1")
    assert stored is not None
    assert stored["rfm_segment"] == "champions"
    assert stored["quadrant"] == "true_friend"
    assert stored["at_ms"] == str(T)
    assert stored["updated_at"].endswith("Z")
    assert await views.profile("nobody") is None
    assert await views.segment_counts() == {
        "rfm_segment": {"champions": 2},
        "quadrant": {"butterfly": 1, "true_friend": 1},
    }
    assert await views.audience("rfm_segment", "champions", limit=10) == ["c1", "c2"]
    assert len(await views.audience("rfm_segment", "champions", limit=1)) == 1
    assert await views.audience("quadrant", "stranger", limit=10) == []
    with pytest.raises(ValueError, match="unknown dimension"):
        await views.audience("colour", "blue", limit=10)


async def test_moving_a_customer_never_double_counts(views: ProfileViews) -> None:
    await views.apply([update("c1", T, rfm_segment="promising", quadrant="butterfly")])
    await views.apply(
        [
            update(
                "c1",
                T + MS_PER_DAY,
                rfm_segment="champions",
                quadrant="true_friend",
                previous_segment="promising",
                previous_quadrant="butterfly",
            )
        ]
    )
    assert await views.segment_counts() == {
        "rfm_segment": {"champions": 1, "promising": 0},
        "quadrant": {"butterfly": 0, "true_friend": 1},
    }
    # unclassified again: out of every audience
    await views.apply([update("c1", T + 2 * MS_PER_DAY, rfm_segment=None, quadrant=None)])
    counts = await views.segment_counts()
    assert sum(counts["rfm_segment"].values()) == 0
    assert sum(counts["quadrant"].values()) == 0


async def test_stored_profile_decides_the_move_even_if_the_caller_forgot(
    views: ProfileViews,
) -> None:
    await views.apply([update("c1", T, rfm_segment="promising", quadrant="butterfly")])
    await views.apply([update("c1", T + 1, rfm_segment="champions", quadrant="true_friend")])
    counts = await views.segment_counts()
    assert counts["rfm_segment"] == {"champions": 1, "promising": 0}


async def test_reapplying_a_batch_changes_nothing(
    views: ProfileViews, client: Redis, prefix: str
) -> None:
    batch = [
        update("c1", T, rfm_segment="promising", quadrant="butterfly", history=("c1:1",)),
        update("c2", T, rfm_segment="champions", quadrant="true_friend", history=("c2:1",)),
        update(
            "c1",
            T + 5,
            rfm_segment="champions",
            quadrant="true_friend",
            previous_segment="promising",
            previous_quadrant="butterfly",
            history=("c1:2", "c1:3"),
        ),
    ]
    await views.apply(batch)
    first = await snapshot(client, prefix)
    await views.apply(batch)
    await views.apply(batch[1:])
    assert await snapshot(client, prefix) == first
    assert [e["id"] for e in await views.history("c1")] == ["c1:3", "c1:2", "c1:1"]


async def test_an_older_update_is_ignored(views: ProfileViews, client: Redis, prefix: str) -> None:
    await views.apply([update("c1", T + 10, rfm_segment="champions", history=("c1:5",))])
    before = await snapshot(client, prefix)
    await views.apply(
        [update("c1", T, rfm_segment="promising", quadrant="butterfly", history=("c1:4",))]
    )
    assert await snapshot(client, prefix) == before
    stored = await views.profile("c1")
    assert stored is not None
    assert (stored["at_ms"], stored["rfm_segment"]) == (str(T + 10), "champions")


async def test_history_is_deduplicated_capped_and_newest_first(
    views: ProfileViews, client: Redis
) -> None:
    await views.apply([update("c1", T, history=("c1:1", "c1:2"))])
    await views.apply([update("c1", T, history=("c1:2", "c1:1"))])  # redelivered
    assert [e["id"] for e in await views.history("c1")] == ["c1:2", "c1:1"]
    for seq in range(3, 8):
        await views.apply([update("c1", T + seq, history=(f"c1:{seq}",))])
    # cap is 4: the list and its id index keep the same four entries
    assert [e["id"] for e in await views.history("c1")] == ["c1:7", "c1:6", "c1:5", "c1:4"]
    assert [e["id"] for e in await views.history("c1", limit=2)] == ["c1:7", "c1:6"]
    ids = await client.zrange(views.keys.history_ids("c1"), 0, -1)
    assert sorted(ids) == [b"c1:4", b"c1:5", b"c1:6", b"c1:7"]
    assert await views.history("c1", limit=0) == []
    assert await views.history("nobody") == []


async def test_reads_work_with_a_decoding_client(settings: Settings, prefix: str) -> None:
    decoding = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        views = ProfileViews(decoding, prefix)
        await views.apply([update("c1", T, rfm_segment="champions", history=("c1:1",))])
        stored = await views.profile("c1")
        assert stored is not None
        assert stored["rfm_segment"] == "champions"
        assert (await views.segment_counts())["rfm_segment"] == {"champions": 1}
        assert await views.audience("rfm_segment", "champions") == ["c1"]
        assert [e["id"] for e in await views.history("c1")] == ["c1:1"]
    finally:
        await decoding.aclose()


async def test_any_printable_ids_and_names(views: ProfileViews) -> None:
    customer = "kunde:ø-42 ✓"
    await views.apply(
        [update(customer, T, rfm_segment="at:risk ✗", quadrant="true_friend", history=("é:1",))]
    )
    stored = await views.profile(customer)
    assert stored is not None
    assert (stored["customer_id"], stored["rfm_segment"]) == (customer, "at:risk ✗")
    assert (await views.segment_counts())["rfm_segment"] == {"at:risk ✗": 1}
    assert await views.audience("rfm_segment", "at:risk ✗") == [customer]
    assert [e["id"] for e in await views.history(customer)] == ["é:1"]


async def test_a_large_batch_in_one_call(views: ProfileViews) -> None:
    batch = [
        update(f"c{i}", T, rfm_segment=("champions", "promising")[i % 2], history=(f"c{i}:1",))
        for i in range(2000)
    ]
    await views.apply(batch)
    counts = await views.segment_counts()
    assert counts["rfm_segment"] == {"champions": 1000, "promising": 1000}


async def _stripped(client: Redis, prefix: str) -> dict[bytes, tuple[bytes, Any]]:
    """The snapshot of the keys under ``prefix``, named without it."""
    return {k[len(prefix) :]: v for k, v in (await snapshot(client, prefix)).items()}


async def test_bulk_load_leaves_what_apply_leaves(client: Redis, settings: Settings) -> None:
    """``load`` (the import's path) and ``apply`` give the same keys, values and audiences.

    Covers fresh customers, a customer stored already (and moving audience), a customer twice
    in the batch, a previous segment given by the caller, a repeated history id and a history
    longer than the cap.
    """
    long_history = tuple(f"c3:{i}" for i in range(7))
    earlier = [
        update("c2", T - 5, rfm_segment="promising", quadrant="butterfly", history=("c2:0",))
    ]
    batch = [
        update("c1", T, rfm_segment="champions", history=("c1:1", "c1:2", "c1:1")),
        update("c2", T, rfm_segment="champions", quadrant="true_friend", history=("c2:1",)),
        update("c3", T, rfm_segment=None, quadrant=None, history=long_history),
        update("c4", T, rfm_segment="loyal", previous_segment="promising"),
        update("c5", T - 1, rfm_segment="promising", history=("c5:1",)),
        update("c5", T, rfm_segment="loyal", history=("c5:2",)),
        update("c6", T),
    ]
    applied_prefix = f"{settings.redis_prefix}bulk-apply{next(_prefixes)}:"
    loaded_prefix = f"{settings.redis_prefix}bulk-load{next(_prefixes)}:"
    applied = ProfileViews(client, applied_prefix, history_cap=4)
    loaded = ProfileViews(client, loaded_prefix, history_cap=4)
    await client.sadd(f"{applied_prefix}audience:rfm_segment:promising", "c4")
    await client.sadd(f"{loaded_prefix}audience:rfm_segment:promising", "c4")
    await applied.apply(earlier)
    await loaded.apply(earlier)

    await applied.apply(batch)
    await loaded.load(batch)

    want = await _stripped(client, applied_prefix)
    assert b"profile:c1" in want and b"history:c3" in want  # the comparison is not vacuous
    assert await _stripped(client, loaded_prefix) == want
    assert [e["id"] for e in await loaded.history("c3")] == ["c3:6", "c3:5", "c3:4", "c3:3"]
    assert await loaded.audience("rfm_segment", "promising") == []

    # an import run again: everything is stored, so ``load`` is ``apply`` (which re-logs
    # history ids that were trimmed away: histories longer than the cap are not idempotent)
    await applied.apply(batch)
    await loaded.load(batch)
    assert await _stripped(client, loaded_prefix) == await _stripped(client, applied_prefix)


async def test_a_batch_over_several_script_runs_is_applied_in_order(
    client: Redis, settings: Settings
) -> None:
    """A batch longer than a script run's chunk leaves what updates one at a time leave,
    a customer updated on both sides of a chunk's edge included (older, then newer)."""
    from streams.adapters.redis_views import APPLY_CHUNK

    segments = ("champions", "loyal", "promising")
    batch = [
        update(f"c{i}", T + i, rfm_segment=segments[i % 3], history=(f"c{i}:1",))
        for i in range(2 * APPLY_CHUNK + 50)
    ]
    edge = APPLY_CHUNK - 1
    batch.insert(edge, update("edge", T, rfm_segment="loyal", history=("edge:1",)))
    batch.insert(edge + 2, update("edge", T + 1, rfm_segment="champions", history=("edge:2",)))
    batch.append(update("edge", T - 1, rfm_segment="promising"))  # older: ignored
    together = f"{settings.redis_prefix}chunks-together{next(_prefixes)}:"
    alone = f"{settings.redis_prefix}chunks-alone{next(_prefixes)}:"
    await ProfileViews(client, together).apply(batch)
    one_by_one = ProfileViews(client, alone)
    for u in batch:
        await one_by_one.apply([u])

    want = await _stripped(client, alone)
    assert len([k for k in want if k.startswith(b"profile:")]) == 2 * APPLY_CHUNK + 51
    assert await _stripped(client, together) == want
    stored = await ProfileViews(client, together).profile("edge")
    assert stored is not None and stored["rfm_segment"] == "champions"
    assert [e["id"] for e in await ProfileViews(client, together).history("edge")] == [
        "edge:2",
        "edge:1",
    ]


# --- offer store --------------------------------------------------------------------------


def _decision(decision_id: str = "offer:c1:7", at_ms: int = T, **changes: Any) -> OfferDecision:
    base = OfferDecision(
        id=decision_id,
        customer_id="c1",
        trigger_id=decision_id.removeprefix("offer:"),
        at_ms=at_ms,
        decision="offer",
        offer_code="TF-WINBACK-VIP",
        channel="email",
        reason="True friend drifting",
        quadrant="true_friend",
        expires_at_ms=at_ms + 30 * MS_PER_DAY,
    )
    return dataclasses.replace(base, **changes)


async def test_record_is_set_once_and_returns_what_is_stored(
    offers: OfferStore, client: Redis
) -> None:
    first = _decision()
    assert await offers.existing(first.id) is None
    assert await offers.record(first) == first
    assert await offers.existing(first.id) == first
    # a redelivered trigger decided differently (say the rules changed): the first one stands
    second = _decision(decision="capped", offer_code=None, channel=None, expires_at_ms=None)
    assert await offers.record(second) == first
    assert await offers.history("c1") == OfferHistory((T,))
    ttl_ms = await client.pttl(offers.keys.decision(first.id))
    assert 399 * MS_PER_DAY < ttl_ms <= 400 * MS_PER_DAY


async def test_only_offers_and_holdouts_count(offers: OfferStore) -> None:
    await offers.record(_decision("offer:c1:1", T))
    await offers.record(_decision("offer:c1:2", T + 1, decision="holdout", offer_code=None))
    for n, kind in enumerate(("capped", "cooldown", "no_offer"), start=3):
        await offers.record(_decision(f"offer:c1:{n}", T + n, decision=kind, offer_code=None))
        assert await offers.existing(f"offer:c1:{n}") is not None
    assert await offers.history("c1") == OfferHistory((T, T + 1))
    assert await offers.history("c2") == OfferHistory()


async def test_history_drops_what_no_decision_needs(offers: OfferStore) -> None:
    old = T - KEEP_MS - MS_PER_DAY
    await offers.record(_decision("offer:c1:1", old))
    await offers.record(_decision("offer:c1:2", T - 10 * MS_PER_DAY))
    assert await offers.history("c1") == OfferHistory((old, T - 10 * MS_PER_DAY))
    await offers.record(_decision("offer:c1:3", T))
    assert await offers.history("c1") == OfferHistory((T - 10 * MS_PER_DAY, T))


async def test_concurrent_records_of_one_trigger_agree(offers: OfferStore) -> None:
    variants = [_decision(reason=f"attempt {n}") for n in range(20)]
    results = await asyncio.gather(*(offers.record(v) for v in variants))
    assert len(set(results)) == 1
    assert results[0] in variants
    assert await offers.history("c1") == OfferHistory((T,))


async def _handle(event: OutputEvent, offers: OfferStore) -> OfferDecision | None:
    """The offers agent's steps: existing → history → decide → record."""
    trigger = Trigger.from_event(event)
    if trigger is None:
        return None
    done = await offers.existing(f"offer:{trigger.id}")
    if done is not None:
        return done
    decision = decide(trigger, await offers.history(trigger.customer_id), OFFER_RULES)
    return None if decision is None else await offers.record(decision)


async def test_caps_and_cooldown_end_to_end_with_redeliveries(offers: OfferStore) -> None:
    day = MS_PER_DAY
    triggers: list[OutputEvent] = [
        entered("c1", 1, T, "true_friend"),  # offer
        alert("c1", 2, T + 5 * day),  # cooldown (14 days)
        alert("c1", 3, T + 20 * day),  # offer
        alert("c1", 4, T + 40 * day),  # offer
        alert("c1", 5, T + 60 * day),  # capped: 3 in 90 days
        alert("c1", 6, T + 95 * day),  # offer: the first one left the window
        alert("c1", 7, T + 100 * day, severity="critical", quadrant="stranger"),  # no_offer
        entered("c1", 8, T + 101 * day, "stranger"),  # no rule: nothing
    ]
    # the same policy over an in-memory history: what the store must reproduce
    expected: list[str | None] = []
    recorded: list[int] = []
    for event in triggers:
        trigger = Trigger.from_event(event)
        d = None if trigger is None else decide(trigger, OfferHistory(tuple(recorded)), OFFER_RULES)
        expected.append(None if d is None else d.decision)
        if d is not None and d.records:
            recorded.append(d.at_ms)
    assert expected == [
        "offer",
        "cooldown",
        "offer",
        "offer",
        "capped",
        "offer",
        "no_offer",
        None,
    ]

    first = [await _handle(t, offers) for t in triggers]
    assert [None if d is None else d.decision for d in first] == expected
    # the whole stream redelivered, and a crash after record (record called again)
    again = [await _handle(t, offers) for t in triggers]
    assert again == first
    for d in first:
        if d is not None:
            assert await offers.record(d) == d
    history = await offers.history("c1")
    assert history.recorded_ms[-2:] == (T + 40 * day, T + 95 * day)
    assert len(history.recorded_ms) == 4  # nothing counted twice, nothing trimmed too early


async def test_a_batch_decides_as_one_trigger_at_a_time(client: Redis, settings: Settings) -> None:
    """``decide_batch`` (the agent's path) stores and returns what ``_handle`` one by one does.

    Two customers interleaved, caps and cooldown inside the batch, a trigger twice in the
    batch, a trigger recorded before the batch, a trigger no rule covers, a history trimmed
    by a short ``keep_ms``; then the batch redelivered whole.
    """
    day = MS_PER_DAY
    events: list[OutputEvent] = [
        entered("c1", 1, T, "true_friend"),
        entered("c2", 1, T + day, "true_friend"),
        alert("c1", 2, T + 5 * day),
        alert("c1", 3, T + 20 * day),
        alert("c2", 2, T + 20 * day),
        alert("c1", 3, T + 20 * day),  # the same trigger again within the batch
        alert("c1", 4, T + 40 * day),
        alert("c1", 5, T + 60 * day),
        alert("c2", 3, T + 200 * day),  # the history before it is trimmed by keep_ms
        alert("c1", 6, T + 95 * day),
        alert("c1", 7, T + 100 * day, severity="critical", quadrant="stranger"),
        entered("c1", 8, T + 101 * day, "stranger"),
    ]
    keep_ms = 100 * day
    one_prefix = f"{settings.redis_prefix}offers-one{next(_prefixes)}:"
    batch_prefix = f"{settings.redis_prefix}offers-batch{next(_prefixes)}:"
    one = OfferStore(client, one_prefix, keep_ms=keep_ms)
    batched = OfferStore(client, batch_prefix, keep_ms=keep_ms)
    earlier = Trigger.from_event(events[1])
    assert earlier is not None
    for store in (one, batched):  # recorded before the batch (a redelivery after a crash)
        made = decide(earlier, OfferHistory(), OFFER_RULES)
        assert made is not None
        await store.record(made)

    want = [await _handle(event, one) for event in events]
    triggers = [Trigger.from_event(event) for event in events]
    got = await batched.decide_batch([t for t in triggers if t is not None], OFFER_RULES)
    assert [d for t, d in zip(triggers, want, strict=True) if t is not None] == got
    assert {d.decision for d in got if d is not None} >= {"offer", "cooldown", "capped"}
    for customer in ("c1", "c2"):
        assert await batched.history(customer) == await one.history(customer)
    strip = len(batch_prefix)
    assert {k[strip:]: v for k, v in (await snapshot(client, batch_prefix)).items()} == {
        k[len(one_prefix) :]: v for k, v in (await snapshot(client, one_prefix)).items()
    }
    again = await batched.decide_batch([t for t in triggers if t is not None], OFFER_RULES)
    assert again == got


# --- Redis restarts -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class OwnRedis:
    """A throw-away redis-server on a free port, in a temporary directory, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not found; `deploy/local/stack.sh start redis` installs it")
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        probe = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log_text = (self.directory / "redis.log").read_text(errors="replace")
                        pytest.fail(f"own redis-server did not start:\n{log_text}")
                    time.sleep(0.05)
        finally:
            probe.close()

    def kill(self) -> None:
        """Stop abruptly, like a crash: no shutdown handshake with clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


async def _eventually(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:.0f} s waiting for {what}", pytrace=False)
        await asyncio.sleep(0.02)


async def test_writes_wait_for_a_restarted_redis_and_then_complete(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(own_redis.url, timeout_s=1.0)
    views = ProfileViews(client, "own:")
    offers = OfferStore(client, "own:", keep_ms=KEEP_MS)
    retries: list[tuple[int, float, BaseException]] = []
    written: list[int] = []
    stop = asyncio.Event()

    async def writer() -> None:
        """The stream: one batch after another, each retried until Redis takes it."""
        seq = 0
        while not stop.is_set():
            seq += 1
            batch = [update("c1", T + seq, history=(f"c1:{seq}",))]
            decision = _decision(f"offer:c1:{seq}", T + seq * MS_PER_DAY)
            await with_backoff(
                partial(views.apply, batch),
                what="profile views",
                initial=0.02,
                maximum=0.2,
                where=own_redis.url,
                on_retry=lambda n, d, e: retries.append((n, d, e)),
            )
            await with_backoff(
                partial(offers.record, decision),
                what="offer store",
                initial=0.02,
                maximum=0.2,
                where=own_redis.url,
                on_retry=lambda n, d, e: retries.append((n, d, e)),
            )
            written.append(seq)
            await asyncio.sleep(0.005)

    try:
        with caplog.at_level(logging.WARNING, logger="streams.adapters.retry"):
            task = asyncio.create_task(writer())
            await _eventually(lambda: len(written) >= 5, "writes before the outage")
            own_redis.kill()
            await _eventually(lambda: len(retries) >= 5, "retries during the outage")
            stalled_at = len(written)
            await asyncio.sleep(0.3)
            assert not task.done()
            assert len(written) <= stalled_at + 1  # at most the batch in flight finished
            own_redis.start()  # empty again: no persistence, and no Lua scripts loaded
            resumed_at = len(written)
            await _eventually(lambda: len(written) >= resumed_at + 5, "writes after the restart")
            stop.set()
            await asyncio.wait_for(task, timeout=30)

        assert all(isinstance(e, redis.ConnectionError) for _, _, e in retries)
        assert [d for _, d, _ in retries[:4]] == pytest.approx([0.02, 0.04, 0.08, 0.16])
        last = written[-1]
        stored = await views.profile("c1")
        assert stored is not None
        assert stored["at_ms"] == str(T + last)
        assert (await views.history("c1", limit=1))[0]["id"] == f"c1:{last}"
        assert await offers.existing(f"offer:c1:{last}") is not None
        warnings = [r.getMessage() for r in caplog.records]
        location = f"127.0.0.1:{own_redis.port}/0"
        assert any(f"Redis unavailable at {location}" in w for w in warnings)
        assert all("retrying in" in w and "./dev stack start redis" in w for w in warnings)
    finally:
        await client.aclose()
