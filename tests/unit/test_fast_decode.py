"""The fast input path never disagrees with the contract's decoders.

``streams.convert.fast_purchase`` / ``fast_interaction`` read plain payloads without pydantic
and return None for anything else. For any payload, either they return None, or the full
decoder accepts it too and gives the same fact. The Processor's records are the same with and
without the fast path, dead letters included.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.processor as processor_module
from bench.workload import Workload, generate
from schemas import DEFAULT_LIMITS, Interaction, Purchase, SourceRef
from schemas.decode import decode_interaction, decode_purchase
from streams.config import Settings
from streams.convert import fast_interaction, fast_purchase, interaction_fact, purchase_fact
from streams.domain.model import default_model
from streams.domain.rules import load_rules
from streams.processor import InRecord, MemoryPartitionStore, OutRecord, Processor

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SOURCE = SourceRef("rfm.purchases", 0, 7, b"c1")

IDS = st.one_of(
    st.sampled_from(
        ["c1", "cust-0000042", "a b", " a", "a ", "", "a\n", "a\t", "é", "x" * 128, "x" * 129]
    ),
    st.text(max_size=6),
    st.integers(),
    st.none(),
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "2026-05-01T12:00:00Z",
            "2026-05-01T12:00:00+02:00",
            "2026-05-01T12:00:00-05:30",
            "2026-05-01T12:00:00.5Z",
            "2026-05-01T12:00:00.123456Z",
            "2026-05-01T12:00:00.1234567Z",
            "2026-05-01T12:00:00",
            "2026-05-01 12:00:00Z",
            "2026-05-01t12:00:00z",
            "2026-05-01T24:00:00Z",
            "2026-05-01T23:59:60Z",
            "2026-02-30T12:00:00Z",
            "2026-05-01T12:00:00+24:00",
            "2026-05-01T12:00:00+01:75",
            "2026-05-01T12:00Z",
            "2026-06-03T00:00:00Z",  # beyond max_future
            "1980-01-01T00:00:00Z",  # before earliest
            "1990-01-01T00:00:00Z",
            "2026-06-02T00:00:00Z",
            "20260501T120000Z",
            "2026-05-01T12:00:00.000001+00:00",
        ]
    ),
    st.integers(min_value=0, max_value=2**40),
    st.text(max_size=25),
)
AMOUNTS = st.one_of(
    st.sampled_from(
        [
            *(0, 5, 12.5, 0.1, 2.675, 1.12345, 0.30000000000000004, -0.0, -1, 1e2, 1e-2, 1e300),
            *("12.30", "1.10000", " 12.3", "1e2", "+5", ".5", "12.", "-0", "007.5", "abc", "1_0"),
            *(1_000_000, 1_000_000.0001, "1000000.0001", 10**20, True, None),
        ]
    ),
    st.integers(min_value=-10, max_value=2_000_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=2_000_000, places=4).map(str),
)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
PROPERTIES = st.one_of(
    st.sampled_from(
        [
            *({}, [], None, {"": 1}, {" a": 1}, {"é": 1}, {"k" * 65: 1}, {"x": "y" * 5000}),
            *({f"k{i}": i for i in range(65)}, {"a": {"b": {"c": {"d": 1}}}}, {"a": [[[1]]]}),
        ]
    ),
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
)
ABSENT = object()


def field(valid: object, other: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Mostly the valid value (so that whole payloads often are), else absent or another."""
    alternative = other if other is not None else st.just(ABSENT)
    return st.integers(0, 11).flatmap(
        lambda n: st.just(valid) if n < 9 else st.just(ABSENT) if n == 9 else alternative
    )


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 11).flatmap(lambda n: strategy if n == 0 else st.just(ABSENT))


@st.composite
def purchases(draw: st.DrawFn) -> bytes:
    fields = {
        "schema_version": draw(field(1, st.sampled_from([2, 0, True, "1", 1.0, None]))),
        "type": draw(field("refund", st.sampled_from(["purchase", "return", None, 1]))),
        "event_id": draw(field("e1", IDS)),
        "customer_id": draw(field("c1", IDS)),
        "occurred_at": draw(field("2026-05-01T12:00:00Z", TIMES)),
        "order_id": draw(field("o1", IDS)),
        "amount": draw(field(19.99, AMOUNTS)),
        "currency": draw(field("USD", st.sampled_from(["EUR", "usd", "US", "USDX", None]))),
        "margin": draw(maybe(st.sampled_from([1, None, "x"]))),
        "kind": draw(maybe(st.just("refund"))),
        "note": draw(maybe(st.just("hello"))),
    }
    return encode(fields, draw)


@st.composite
def interactions(draw: st.DrawFn) -> bytes:
    fields = {
        "schema_version": draw(field(1, st.sampled_from([2, True, None]))),
        "event_id": draw(field("i1", IDS)),
        "customer_id": draw(field("c1", IDS)),
        "occurred_at": draw(field("2026-05-01T12:00:00+02:00", TIMES)),
        "type": draw(field("visit", st.sampled_from(["cart_add", "Visit", "9x", "a" * 65, "", 3]))),
        "channel": draw(field("web", st.one_of(IDS, st.just("x" * 65)))),
        "properties": draw(field({"sku": "A-1", "price": 89.0}, PROPERTIES)),
        "schemaVersion": draw(maybe(st.just(2))),
    }
    return encode(fields, draw)


def encode(fields: dict[str, Any], draw: st.DrawFn) -> bytes:
    data = {k: v for k, v in fields.items() if v is not ABSENT}
    raw = json.dumps(data, separators=(",", ":")).encode()  # big ints, NaN: as producers might
    if draw(st.integers(0, 3)) == 0 and len(raw) > 2:  # a byte-level mutation now and then
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw


@settings(max_examples=1500, deadline=None)
@given(purchases())
def test_a_fast_purchase_is_the_decoded_purchase(raw: bytes) -> None:
    fast = fast_purchase(raw, NOW, DEFAULT_LIMITS)
    if fast is None:
        return
    decoded = decode_purchase(raw, SOURCE, now=NOW)
    assert isinstance(decoded, Purchase), decoded
    assert (purchase_fact(decoded), decoded.currency) == fast


@settings(max_examples=1500, deadline=None)
@given(interactions())
def test_a_fast_interaction_is_the_decoded_interaction(raw: bytes) -> None:
    fast = fast_interaction(raw, NOW, DEFAULT_LIMITS)
    if fast is None:
        return
    decoded = decode_interaction(raw, SOURCE, now=NOW)
    assert isinstance(decoded, Interaction), decoded
    assert interaction_fact(decoded) == fast


@pytest.mark.parametrize(
    ("amount", "cents"),
    [(12.5, 1250), ("12.30", 1230), (2.675, 268), ("0.125", 12), ("0.135", 14), (7, 700)],
)
def test_plain_payloads_take_the_fast_path(amount: object, cents: int) -> None:
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "customer_id": "c1",
            "occurred_at": "2026-05-01T12:00:00.5+02:00",
            "order_id": "o1",
            "amount": amount,
            "currency": "USD",
        }
    )
    fast = fast_purchase(raw, NOW, DEFAULT_LIMITS)
    assert fast is not None
    assert fast[0].amount_cents == cents
    assert fast[0].at_ms == int(datetime(2026, 5, 1, 10, 0, 0, 500_000, UTC).timestamp() * 1000)
    touch = orjson.dumps(
        {"event_id": "i1", "customer_id": "c1", "occurred_at": "2026-05-01T12:00:00Z"}
        | {"type": "visit", "channel": "web", "schema_version": 1, "properties": {}}
    )
    assert fast_interaction(touch, NOW, DEFAULT_LIMITS) is not None


def run_processor(records: list[InRecord]) -> str:
    settings = Settings(topic_prefix="rfm.", partitions=2, currency="USD")
    processor = Processor(
        settings,
        load_rules(),
        default_model(),
        lambda _p: MemoryPartitionStore(),
        wall_clock=lambda: NOW,
    )
    digest = hashlib.sha256()

    def add(out: list[OutRecord]) -> None:
        for o in out:
            digest.update(f"{o.topic}|{o.partition}|".encode() + o.key + b"|" + o.value + b"\n")

    for i, record in enumerate(records):
        add(processor.process(record))
        if i % 300 == 0:
            add(processor.drain_profiles())
    add(processor.drain_profiles())
    digest.update(repr(processor.counters).encode())
    return digest.hexdigest()


def test_the_processor_writes_the_same_records_with_and_without_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(topic_prefix="rfm.", partitions=2, currency="USD")
    w = Workload(events=4_000, customers=300, span_days=120.0, invalid_share=0.03)
    records = [
        InRecord(r.topic, r.partition, offset, r.key, r.value)
        for offset, r in enumerate(generate(w, settings))
    ]
    t = settings.topics
    odd = [  # another currency, an extra field, a late purchase, a repeated id
        b'{"event_id":"x1","customer_id":"c1","occurred_at":"2026-05-30T00:00:00Z",'
        b'"order_id":"o","amount":5,"currency":"EUR"}',
        b'{"event_id":"x2","customer_id":"c1","occurred_at":"2026-05-30T00:00:00Z",'
        b'"order_id":"o","amount":5,"currency":"USD","note":"hi"}',
        b'{"event_id":"x3","customer_id":"c1","occurred_at":"2020-05-30T00:00:00Z",'
        b'"order_id":"o","amount":5,"currency":"USD"}',
        b'{"event_id":"x2","customer_id":"c1","occurred_at":"2026-05-30T00:00:00Z",'
        b'"order_id":"o","amount":5,"currency":"USD"}',
    ]
    base = len(records)
    records += [InRecord(t.purchases, 0, base + i, b"c1", v) for i, v in enumerate(odd)]
    fast = run_processor(records)
    monkeypatch.setattr(processor_module, "fast_purchase", lambda *_: None)
    monkeypatch.setattr(processor_module, "fast_interaction", lambda *_: None)
    assert run_processor(records) == fast


def test_a_core_failure_on_a_fast_event_dead_letters_it_with_its_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(topic_prefix="rfm.", partitions=1, currency="USD")
    processor = Processor(
        settings,
        load_rules(),
        default_model(),
        lambda _p: MemoryPartitionStore(),
        wall_clock=lambda: NOW,
    )
    engine = processor.engine(0)

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(processor, "_publish", broken)
    raw = (
        b'{"event_id":"e9","customer_id":"c9","occurred_at":"2026-05-30T00:00:00Z",'
        b'"order_id":"o9","amount":"10.00","currency":"USD"}'
    )
    assert fast_purchase(raw, NOW, DEFAULT_LIMITS) is not None
    (out,) = processor.process(InRecord(settings.topics.purchases, 0, 3, b"c9", raw))
    letter = orjson.loads(out.value)
    assert letter["reason_code"] == "processing_error"
    assert letter["reason"] == "RuntimeError: boom"
    assert (letter["customer_id"], letter["event_id"]) == ("c9", "e9")
    assert letter["event_time"] == "2026-05-30T00:00:00Z"
    assert letter["model_version"] == processor.model.version
    assert "c9" not in engine.changed
