"""Erasure through the Processor (no Kafka): the state goes, the customer-erased output is
published once, and the customer's later or replayed events are dead-lettered ``erased``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas import CustomerErased, DeadLetter, parse_output
from streams.config import Settings
from streams.domain.erasure import customer_hash
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.erasure import (
    ERASE_HEADER,
    BadEraseRequestError,
    erase_request,
    input_partition,
    parse_erase_request,
)
from streams.processor import InRecord, MemoryPartitionStore, OutRecord, Processor

SETTINGS = Settings(topic_prefix="rfm.", partitions=2, erasure_salt="unit-salt")
T = SETTINGS.topics
START = datetime(2025, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=400)


def purchase(customer_id: str, day: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{customer_id}-{day}",
            "customer_id": customer_id,
            "occurred_at": (START + timedelta(days=day)).isoformat(),
            "order_id": f"o-{customer_id}-{day}",
            "amount": "25.00",
            "currency": "USD",
        }
    )


class Log:
    """Input records with the producer's partitioning and per-partition offsets."""

    def __init__(self) -> None:
        self.records: list[InRecord] = []
        self._next: dict[int, int] = {}

    def _add(
        self, partition: int, key: bytes, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        offset = self._next.get(partition, 0)
        self._next[partition] = offset + 1
        self.records.append(InRecord(T.purchases, partition, offset, key, value, headers))

    def buy(self, customer_id: str, day: int) -> None:
        p = input_partition(customer_id, SETTINGS.partitions)
        self._add(p, customer_id.encode(), purchase(customer_id, day))

    def erase(self, customer_id: str) -> None:
        r = erase_request(T.purchases, SETTINGS.partitions, customer_id, 1_700_000_000_000)
        self._add(r.partition, r.key, r.value, r.headers)


def new_processor(stores: dict[int, MemoryPartitionStore] | None = None) -> Processor:
    held = stores if stores is not None else {}
    return Processor(
        SETTINGS,
        load_rules(),
        default_model(),
        lambda p: held.setdefault(p, MemoryPartitionStore()),
        wall_clock=lambda: NOW,
    )


def run(processor: Processor, records: Iterable[InRecord]) -> list[OutRecord]:
    out: list[OutRecord] = []
    for record in records:
        out.extend(processor.process(record))
        out.extend(processor.drain_profiles())
    return out


def on(topic: str, out: Iterable[OutRecord]) -> list[OutRecord]:
    return [o for o in out if o.topic == topic]


def the_log() -> Log:
    log = Log()
    for day in range(0, 120, 10):
        log.buy("alice", day)
        log.buy("bob", day + 1)
    log.erase("alice")
    log.buy("alice", 130)
    log.buy("bob", 131)
    return log


def test_the_request_lands_on_the_customers_own_partition() -> None:
    r = erase_request(T.purchases, 4, "alice", 5)
    assert r.partition == input_partition("alice", 4)
    assert dict(r.headers) == {ERASE_HEADER: b"1"}
    assert parse_erase_request(r.value) == ("alice", 5)
    for bad in (
        b"nope",
        b"[]",
        b'{"customer_id": 3}',
        b'{"customer_id": "a", "requested_ms": "x"}',
    ):
        with pytest.raises(BadEraseRequestError):
            parse_erase_request(bad)
    with pytest.raises(BadEraseRequestError):
        erase_request(T.purchases, 4, " padded ", 5)


def test_erasure_removes_the_state_and_refuses_later_events() -> None:
    stores: dict[int, MemoryPartitionStore] = {}
    processor = new_processor(stores)
    out = run(processor, the_log().records)
    alice_p = input_partition("alice", SETTINGS.partitions)
    assert "alice" not in stores[alice_p].by_customer
    assert any(s.customer_id == "bob" for st in stores.values() for s in st.by_customer.values())
    hashed = customer_hash("alice", "unit-salt")
    assert stores[alice_p].erased == {hashed}

    # one customer-erased output, valid against the contract, with a deterministic id
    erased = on(T.customer_erased, out)
    assert len(erased) == 1
    event = parse_output(erased[0].value)
    assert isinstance(event, CustomerErased)
    assert event.id == f"erased:{hashed}" and event.customer_id == "alice" and event.had_state
    # a tombstone on profiles, after alice's last profile and none after it
    alice_profiles = [o for o in on(T.profiles, out) if o.key == b"alice"]
    assert alice_profiles and alice_profiles[-1].tombstone
    assert sum(o.tombstone for o in alice_profiles) == 1
    # alice's purchase after the erasure: dead-lettered "erased", with neither payload nor id
    letters = [parse_output(o.value) for o in on(T.dead_letters, out)]
    assert [d.reason_code for d in letters if isinstance(d, DeadLetter)] == ["erased"]
    letter = letters[0]
    assert isinstance(letter, DeadLetter)
    assert letter.customer_id is None and letter.payload_size == 0
    assert letter.source_key_b64 is None
    assert b"alice" not in on(T.dead_letters, out)[0].value
    assert processor.counters.erasures == 1


def test_a_replay_or_a_restart_does_not_bring_the_customer_back() -> None:
    stores: dict[int, MemoryPartitionStore] = {}
    run(new_processor(stores), the_log().records)
    # the whole log produced again (new offsets), read by a restarted processor
    again = Log()
    again._next = dict.fromkeys(range(SETTINGS.partitions), 1000)
    for day in range(0, 120, 10):
        again.buy("alice", day)
    again.erase("alice")
    out = run(new_processor(stores), again.records)
    assert all("alice" not in st.by_customer for st in stores.values()), (
        "a replay resurrected the customer"
    )
    codes = [orjson.loads(o.value)["reason_code"] for o in on(T.dead_letters, out)]
    assert codes == ["erased"] * 12
    assert on(T.customer_erased, out) == []  # already erased: reported once
    assert not [o for o in on(T.profiles, out) if o.key == b"alice" and not o.tombstone]


def test_erasure_is_deterministic_in_a_replay() -> None:
    first = run(new_processor(), the_log().records)
    second = run(new_processor(), the_log().records)
    assert first == second


def test_a_bad_request_is_dead_lettered() -> None:
    log = Log()
    log._add(0, b"x", b'{"who": "alice"}', ((ERASE_HEADER, b"1"),))
    out = run(new_processor(), log.records)
    assert [orjson.loads(o.value)["reason_code"] for o in out] == ["invalid_event"]
