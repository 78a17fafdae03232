"""Erasure decisions: the salted hash names no one, and an erased customer stays erased."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.erasure import (
    DEFAULT_SALT,
    ErasureLedger,
    customer_hash,
    erased_id,
)

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128
).filter(lambda s: s.strip() == s)
salts = st.text(min_size=1, max_size=200)


@given(ids, salts)
def test_the_hash_is_stable_hex_and_never_the_id(customer_id: str, salt: str) -> None:
    hashed = customer_hash(customer_id, salt)
    assert hashed == customer_hash(customer_id, salt)
    assert len(hashed) == 32 and all(c in "0123456789abcdef" for c in hashed)
    assert customer_id not in hashed or len(customer_id) <= 3  # a short id may appear by chance


@given(ids, salts, salts)
def test_another_salt_gives_another_hash(customer_id: str, a: str, b: str) -> None:
    if a.encode() != b.encode():
        assert customer_hash(customer_id, a) != customer_hash(customer_id, b)


@given(ids, ids)
def test_distinct_ids_get_distinct_hashes(a: str, b: str) -> None:
    if a != b:
        assert customer_hash(a, DEFAULT_SALT) != customer_hash(b, DEFAULT_SALT)


@given(st.lists(ids, min_size=1, max_size=20), ids, salts)
def test_an_erased_customer_stays_erased_and_is_reported_once(
    erased: list[str], other: str, salt: str
) -> None:
    ledger = ErasureLedger(salt)
    reported = []
    for customer_id in erased:
        event = ledger.erase(customer_id, at_ms=1, requested_ms=2, had_state=True)
        if event is not None:
            assert event.id == erased_id(event.customer_hash)
            assert event.customer_hash == customer_hash(customer_id, salt)
            reported.append(event.customer_id)
    assert sorted(reported) == sorted(set(erased))  # once per customer, however often asked
    assert all(ledger.is_erased(c) for c in erased)
    assert ledger.is_erased(other) == (other in erased)
    # a restart rebuilds the ledger from the stored hashes alone: same answers
    restarted = ErasureLedger(salt, ledger.hashes)
    assert all(restarted.is_erased(c) for c in erased)
    assert all(restarted.erase(c, at_ms=3, requested_ms=4, had_state=False) is None for c in erased)


def test_an_empty_ledger_erases_no_one() -> None:
    ledger = ErasureLedger(DEFAULT_SALT)
    assert not ledger.is_erased("anyone") and len(ledger) == 0
