"""The right to be forgotten, pure: who is erased, and what an erasure reports.

An erased customer is remembered only by a salted hash of their id (:func:`customer_hash`),
so the suppression list never holds the id it suppresses. The stream keeps one
:class:`ErasureLedger` per input partition; the worker persists its hashes in the state table
(so a restart or a replay of the log still knows them) and does the deleting in Kafka and
Redis. Here are only the decisions:

* :meth:`ErasureLedger.erase` — record an erasure; a :class:`CustomerErased` to publish the
  first time, None when the hash was already erased (a second request changes nothing);
* :meth:`ErasureLedger.is_erased` — whether an event for this customer must be refused (it
  is dead-lettered ``erased`` instead of bringing the customer back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

HASH_BYTES: Final = 16
"""blake2b digest size: 128 bits, written as 32 hex characters."""
DEFAULT_SALT: Final = "rfm-stream-default-erasure-salt"
"""The salt when none is configured: hashes of well-known ids can then be recomputed by anyone
who knows the code, so deployments set their own (``RFM_ERASURE_SALT``)."""


def customer_hash(customer_id: str, salt: str) -> str:
    """The salted, keyed hash an erased customer is remembered by (hex).

    blake2b keyed with the salt: without the salt, the hash says nothing about the id, and a
    list of candidate ids cannot be checked against it.
    """
    key = salt.encode()
    if len(key) > 64:  # blake2b takes keys of up to 64 bytes
        key = hashlib.blake2b(key, digest_size=64).digest()
    return hashlib.blake2b(customer_id.encode(), digest_size=HASH_BYTES, key=key).hexdigest()


def marker_hash(hashed: str) -> str:
    """A second hash, for a marker kept where the first must not appear (Redis): a search of
    Redis for an erased customer's id or hash then finds nothing."""
    return hashlib.blake2b(
        hashed.encode(), digest_size=HASH_BYTES, person=b"rfm-marker"
    ).hexdigest()


def erased_id(hashed: str) -> str:
    """The deterministic id of the ``customer-erased`` output for one customer."""
    return f"erased:{hashed}"


@dataclass(frozen=True, slots=True)
class CustomerErased:
    """A customer was erased: downstream tools must delete what they hold about them.

    ``at_ms`` is the partition's event time when the erasure ran (deterministic in a replay),
    ``requested_ms`` the time the request carried.
    """

    id: str
    customer_id: str
    customer_hash: str
    at_ms: int | None
    requested_ms: int | None
    had_state: bool


class ErasureLedger:
    """The salted hashes of the customers erased on one partition."""

    def __init__(self, salt: str, hashes: Iterable[str] = ()) -> None:
        self.salt = salt
        self.hashes: set[str] = set(hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def hash_of(self, customer_id: str) -> str:
        return customer_hash(customer_id, self.salt)

    def is_erased(self, customer_id: str) -> bool:
        """Whether this customer was erased. Costs nothing while nobody is (no hash is made)."""
        return bool(self.hashes) and self.hash_of(customer_id) in self.hashes

    def erase(
        self,
        customer_id: str,
        *,
        at_ms: int | None,
        requested_ms: int | None,
        had_state: bool,
    ) -> CustomerErased | None:
        """Record the erasure; what to publish the first time, None if already erased."""
        hashed = self.hash_of(customer_id)
        if hashed in self.hashes:
            return None
        self.hashes.add(hashed)
        return CustomerErased(
            id=erased_id(hashed),
            customer_id=customer_id,
            customer_hash=hashed,
            at_ms=at_ms,
            requested_ms=requested_ms,
            had_state=had_state,
        )
