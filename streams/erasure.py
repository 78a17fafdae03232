"""Erasure requests on the wire: what ``rfm-stream forget`` and ``DELETE /api/customers/{id}``
produce, and the ``customer-erased`` output the worker publishes.

A request is a control record on the purchases topic, on the customer's own partition (the
one their events go to), with the header ``rfm-erase``: the worker that owns the partition
erases the customer in order with the customer's events, so the same log gives the same
erasure in a replay. The decisions are in :mod:`streams.domain.erasure`; the deleting is done
by the processor (state), the table store (changelog tombstone) and the views agent (Redis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson

from schemas import CustomerErased as CustomerErasedWire
from schemas import to_json_bytes
from schemas.common import ID_PATTERN
from streams.domain.erasure import CustomerErased
from streams.partitioning import key_partition

ERASE_HEADER: Final = "rfm-erase"
"""The header that marks an erasure request on the purchases topic."""

_ID: Final = re.compile(ID_PATTERN)


class BadEraseRequestError(ValueError):
    """An erasure request that cannot be carried out (its text says why)."""


@dataclass(frozen=True, slots=True)
class EraseRequest:
    """One erasure request record, ready to produce."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ((ERASE_HEADER, b"1"),)


def input_partition(customer_id: str, partitions: int) -> int:
    """The input partition of a customer's events: Kafka's default partitioner (murmur2)."""
    return key_partition(customer_id.encode(), partitions)


def check_customer_id(customer_id: str) -> str:
    """The wire contract's rule for ids; a request for an id no producer could send is refused."""
    if not 1 <= len(customer_id) <= 128 or not _ID.fullmatch(customer_id):
        raise BadEraseRequestError(
            "customer ids are 1-128 printable characters without leading or trailing spaces"
        )
    return customer_id


def erase_request(
    purchases_topic: str, partitions: int, customer_id: str, requested_ms: int
) -> EraseRequest:
    """The record that asks the worker owning the customer's partition to erase them."""
    check_customer_id(customer_id)
    return EraseRequest(
        purchases_topic,
        input_partition(customer_id, partitions),
        customer_id.encode(),
        orjson.dumps({"customer_id": customer_id, "requested_ms": requested_ms}),
    )


def parse_erase_request(raw: bytes) -> tuple[str, int | None]:
    """(customer id, requested time) of a request record, or :class:`BadEraseRequestError`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEraseRequestError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("customer_id"), str):
        raise BadEraseRequestError(
            'an erasure request must be {"customer_id": <id>, "requested_ms": <epoch ms>}'
        )
    requested = data.get("requested_ms")
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool)):
        raise BadEraseRequestError("requested_ms must be epoch milliseconds (an integer)")
    return check_customer_id(data["customer_id"]), requested


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def customer_erased_json(event: CustomerErased) -> bytes:
    """The ``customer-erased`` output (schema ``schemas/json/customer_erased.schema.json``)."""
    return to_json_bytes(
        CustomerErasedWire(
            id=event.id,
            customer_id=event.customer_id,
            customer_hash=event.customer_hash,
            event_time=_utc(event.at_ms),
            requested_at=_utc(event.requested_ms),
            had_state=event.had_state,
        )
    )
