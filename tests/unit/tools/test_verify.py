"""The verifier's comparisons, without Kafka: it must fail on every kind of wrong output."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas import RetentionOffer, parse_output
from streams.config import Settings
from streams.domain.model import default_model
from streams.domain.offers import OfferDecision
from streams.domain.rules import load_rules
from streams.tools.reference import ReferenceRun, run_reference
from streams.tools.replay import as_consumed, plan
from streams.tools.verify import (
    DELIVERED,
    NOT_DELIVERED,
    Comparison,
    ExpectedOffer,
    Out,
    Verdict,
    check_offers,
    check_state,
    compare,
    compared_topics,
    expected_offers,
    offer_bytes,
    outs_of,
)

RULES = load_rules()
SETTINGS = Settings(topic_prefix="v.")


T0 = datetime(2025, 1, 6, 10, tzinfo=UTC)
# after the last purchase, time alone runs on for 90 days: ann, a true friend buying every
# 12 days, drifts (a second offer for her: the win-back after the recognition)
END_TICK_MS = int((T0 + timedelta(days=12 * 13 + 90)).timestamp() * 1000)


def _log() -> list[bytes]:
    t0 = T0
    lines = []
    for i in range(14):
        at = (t0 + timedelta(days=12 * i)).isoformat().replace("+00:00", "Z")
        for c, amount in (("ann", "300.00"), ("bob", "20.00")):
            event = {
                "event_id": f"{c}-{i}",
                "customer_id": c,
                "occurred_at": at,
                "order_id": f"o-{c}-{i}",
                "amount": amount,
                "currency": "USD",
            }
            lines.append(orjson.dumps(event))
    lines.append(b"{not json")
    return lines


@pytest.fixture(scope="module")
def ref() -> ReferenceRun:
    planned = plan(_log(), SETTINGS, lateness_ms=RULES.allowed_lateness_ms, end_tick_ms=END_TICK_MS)
    return run_reference(SETTINGS, RULES, default_model(), as_consumed(planned))


@pytest.fixture(scope="module")
def expected(ref: ReferenceRun) -> list[Out]:
    outs = outs_of(ref.outputs, compared_topics(SETTINGS))
    assert len(outs) > 10
    assert any(o.topic == SETTINGS.topics.dead_letters for o in outs)
    return outs


def test_identical_outputs_with_repeats_are_delivered(expected: list[Out]) -> None:
    result = compare(expected, expected + expected[:3])
    assert result.ok
    assert result.extra_copies == 3
    assert not (result.missing or result.unexpected or result.different)


def test_missing_unexpected_and_conflicting_outputs_are_found(expected: list[Out]) -> None:
    changed = replace(expected[1], value=expected[1].value.replace(b'"cause"', b'"cause" '))
    stray = Out.of(expected[0].topic, b"x", orjson.dumps({"id": "zed:1", "type": "x"}))
    actual = [expected[0], changed, *expected[3:], stray]
    result = compare(expected, actual)
    assert not result.ok
    assert result.missing == [expected[2].id]
    assert result.unexpected == ["zed:1"]
    assert list(result.different) == [expected[1].id]
    assert "MISSING 1" in result.report() and "DIFFERENT CONTENT 1" in result.report()


def test_two_contents_for_one_unexpected_id_conflict(expected: list[Out]) -> None:
    a = Out.of(expected[0].topic, b"k", orjson.dumps({"id": "zed:1", "n": 1}))
    b = Out.of(expected[0].topic, b"k", orjson.dumps({"id": "zed:1", "n": 2}))
    assert "zed:1" in compare(expected, [*expected, a, b]).different


def test_a_record_that_is_not_an_output_is_unexpected(expected: list[Out]) -> None:
    junk = Out.of(expected[0].topic, None, b"\xff\xfe", partition=1, offset=7)
    assert junk.id == f"?{expected[0].topic}:1:7"
    assert compare(expected, [*expected, junk]).unexpected == [junk.id]


def test_only_the_worker_clock_is_masked_in_dead_letters() -> None:
    def letter(clock: str, when: str = "2096-01-01T00:00:00+00:00") -> Out:
        reason = (
            f"occurred_at {when} is 25000 days ahead of the worker clock ({clock}), more "
            "than the allowed 1 day"
        )
        return Out.of("v.dead-letters", b"k", orjson.dumps({"id": "dl:1", "reason": reason}))

    early, late = letter("2026-01-01T00:00:00+00:00"), letter("2026-01-02T10:00:00.5+00:00")
    assert early.value != late.value and early.content == late.content
    other = letter("2026-01-01T00:00:00+00:00", when="2097-01-01T00:00:00+00:00")
    assert other.content != early.content


def test_only_the_distance_is_masked_in_late_event_dead_letters() -> None:
    def letter(seconds: str, code: str = "late_event") -> Out:
        reason = (
            f"event time is {seconds} s before this partition's closed event time (watermark "
            "minus the allowed lateness of 5 s); it was not applied."
        )
        value = orjson.dumps({"id": "dl:2", "reason_code": code, "reason": reason})
        return Out.of("v.dead-letters", b"k", value)

    first, again = letter("158.000"), letter("34020.000")
    assert first.value != again.value and first.content == again.content
    assert letter("158.000", code="other").content != first.content


# --------------------------------------------------------------------------- offers


def _offers(expected: list[Out]) -> list[ExpectedOffer]:
    wanted = expected_offers(expected, RULES.offers)
    assert wanted, "the test log has no trigger the offer policy covers"
    return wanted


def _as_out(value: bytes) -> Out:
    return Out.of("v.retention-offers", b"k", value)


def test_offers_as_the_policy_decides_are_delivered(expected: list[Out]) -> None:
    wanted = _offers(expected)
    actual = [_as_out(offer_bytes(w.base, w.trigger)) for w in wanted]
    result = check_offers(wanted, [*actual, actual[0]], RULES.offers)
    assert result.ok and result.duplicates == 1


def test_missing_unexpected_and_conflicting_offers_are_found(expected: list[Out]) -> None:
    wanted = _offers(expected)
    actual = [_as_out(offer_bytes(w.base, w.trigger)) for w in wanted]
    other = replace(wanted[0].base, reason="something else")
    stray = replace(wanted[0].base, id="offer:zed:1", trigger_id="zed:1")
    result = check_offers(
        wanted,
        [
            *actual[1:],
            _as_out(offer_bytes(other, wanted[0].trigger)),
            _as_out(offer_bytes(stray, wanted[0].trigger)),
        ],
        RULES.offers,
    )
    assert not result.ok
    assert list(result.conflicting) == [wanted[0].id]
    assert result.unexpected == ["offer:zed:1"]
    two = check_offers(
        wanted, [*actual, _as_out(offer_bytes(other, wanted[0].trigger))], RULES.offers
    )
    assert wanted[0].id in two.conflicting
    assert check_offers(wanted, actual[1:], RULES.offers).missing == [wanted[0].id]


def _limited(w: ExpectedOffer, decision: str) -> bytes:
    base = w.base
    limited = OfferDecision(
        id=base.id,
        customer_id=base.customer_id,
        trigger_id=base.trigger_id,
        at_ms=base.at_ms,
        decision=decision,  # type: ignore[arg-type]
        offer_code=None,
        channel=None,
        reason="limited",
        quadrant=base.quadrant,
        expires_at_ms=None,
    )
    return offer_bytes(limited, w.trigger)


def test_a_cooldown_needs_an_offer_before_it(expected: list[Out]) -> None:
    wanted = [w for w in _offers(expected) if w.base.decision in ("offer", "holdout")]
    by_customer = [w for w in wanted if w.customer_id == wanted[0].customer_id]
    assert len(by_customer) >= 2, "the test log needs two offers for one customer"
    first, second = sorted(by_customer, key=lambda w: w.at_ms)[:2]
    first = replace(first, at_ms=second.at_ms - 86_400_000)  # a day before: within cooldown
    justified = [
        _as_out(offer_bytes(first.base, first.trigger)),
        _as_out(_limited(second, "cooldown")),
    ]
    assert check_offers([first, second], justified, RULES.offers).ok
    # the same cooldown without a recorded offer before it is not justified
    alone = [_as_out(_limited(first, "cooldown")), _as_out(_limited(second, "cooldown"))]
    result = check_offers([first, second], alone, RULES.offers)
    assert set(result.unjustified) == {first.id, second.id}
    # nor is a cap with fewer offers than the cap count
    capped = [
        _as_out(offer_bytes(first.base, first.trigger)),
        _as_out(_limited(second, "capped")),
    ]
    assert RULES.offers.cap_count > 1
    assert list(check_offers([first, second], capped, RULES.offers).unjustified) == [second.id]
    # and a history-dependent decision is never accepted for a trigger that gets no offer
    no_rule = replace(
        second.base, decision="no_offer", offer_code=None, channel=None, expires_at_ms=None
    )
    no_offer = replace(second, base=no_rule)
    assert second.id in check_offers([first, no_offer], justified, RULES.offers).conflicting


def test_a_parsed_offer_round_trips(expected: list[Out]) -> None:
    w = _offers(expected)[0]
    parsed = parse_output(offer_bytes(w.base, w.trigger))
    assert isinstance(parsed, RetentionOffer) and parsed.id == w.id


# --------------------------------------------------------------------------- final state


def _table(ref: ReferenceRun) -> dict[str, bytes | None]:
    table: dict[str, bytes | None] = {}
    for partition, store in ref.stores.items():
        for cid, state in store.by_customer.items():
            table[cid] = state.to_bytes()
        if store.clock() != (None, None):
            table[f"\x00clock/{partition}"] = orjson.dumps(list(store.clock()))
    return table


def _profiles(ref: ReferenceRun) -> dict[str, bytes | None]:
    return {r.key.decode(): r.value for r in ref.outputs if r.topic == SETTINGS.topics.profiles}


def test_the_reference_state_matches_itself(ref: ReferenceRun) -> None:
    assert check_state(ref, SETTINGS, _table(ref), _profiles(ref)).ok


def test_a_lost_or_stale_state_is_found(ref: ReferenceRun) -> None:
    table = _table(ref)
    stale = dict(table)
    del stale["bob"]
    assert check_state(ref, SETTINGS, stale, _profiles(ref)).missing == ["bob"]
    state = next(s for st in ref.stores.values() for c, s in st.by_customer.items() if c == "ann")
    older = state.copy()
    older.orders -= 1
    table["ann"] = older.to_bytes()
    result = check_state(ref, SETTINGS, table, _profiles(ref))
    assert result.differing == ["ann"] and not result.ok


def test_a_profile_behind_is_found(ref: ReferenceRun) -> None:
    profiles = _profiles(ref)
    data = orjson.loads(profiles["ann"] or b"{}")
    data["profile"]["purchase_count"] -= 1
    profiles["ann"] = orjson.dumps(data)
    assert check_state(ref, SETTINGS, _table(ref), profiles).profiles_differing == ["ann"]
    # time-dependent fields are not compared (profiles are republished on change only)
    data["profile"]["purchase_count"] += 1
    data["profile"]["p_alive"] = 0.01
    profiles["ann"] = orjson.dumps(data)
    assert check_state(ref, SETTINGS, _table(ref), profiles).ok


def test_the_verdict_line(expected: list[Out]) -> None:
    good = Verdict(outputs=compare(expected, expected))
    assert good.ok and good.report().splitlines()[-1] == DELIVERED
    bad = Verdict(outputs=compare(expected, expected[1:]))
    assert not bad.ok
    assert bad.report().splitlines()[-1] == NOT_DELIVERED
    assert DELIVERED not in bad.report().replace(NOT_DELIVERED, "")
    assert bad.counts()["missing"] == 1
    assert isinstance(bad.outputs, Comparison)
