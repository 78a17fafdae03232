"""One example of every event on the wire, as plain JSON data.

schemas/CONTRACT.md shows them, the exported JSON Schema files embed them, and the tests check that
each one is valid, so the documentation cannot drift from the contract.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Final

import orjson

JsonObject = dict[str, Any]

PURCHASE: Final[JsonObject] = {
    "schema_version": 1,
    "type": "purchase",
    "event_id": "evt-7f3a9c21",
    "customer_id": "c-1042",
    "occurred_at": "2024-05-14T18:32:07+02:00",
    "order_id": "o-558210",
    "amount": 129.90,
    "currency": "EUR",
    "margin": "41.20",
    "line_items": [
        {"sku": "TSHIRT-BLK-M", "quantity": 2, "unit_price": 24.95, "category": "apparel"},
        {"sku": "JACKET-OLV-M", "quantity": 1, "unit_price": 80.00, "category": "apparel"},
    ],
}

REFUND: Final[JsonObject] = {
    "schema_version": 1,
    "type": "refund",
    "event_id": "evt-80b1e442",
    "customer_id": "c-1042",
    "occurred_at": "2024-05-20T09:15:00Z",
    "order_id": "o-558210",
    "amount": "24.95",
    "currency": "EUR",
    "margin": "7.90",
}

INTERACTION: Final[JsonObject] = {
    "schema_version": 1,
    "event_id": "evt-c41d0e07",
    "customer_id": "c-1042",
    "occurred_at": "2024-06-02T07:41:55Z",
    "type": "product_view",
    "channel": "ios",
    "properties": {"sku": "SNEAKER-WHT-42", "price": 89.0, "source": "push_campaign"},
}

_PROFILE: Final[JsonObject] = {
    "first_purchase_at": "2022-11-03T12:04:00Z",
    "last_purchase_at": "2024-05-14T16:32:07Z",
    "purchase_count": 14,
    "repeat_days": 13,
    "monetary_window_cents": 148_530,
    "frequency_window": 6,
    "window_days": 91,
    "mean_order_value_cents": 24_755,
    "avg_days_between_purchases": 42.6,
    "expected_next_purchase_at": "2024-06-26T06:00:00Z",
    "p_alive": 0.41,
    "churn_risk_band": "medium",
    "days_since_last_purchase": 71.3,
    "engagement": None,
    "last_interaction_at": None,
    "tenure_days": 650.2,
}

SEGMENT_CHANGE: Final[JsonObject] = {
    "type": "segment_change",
    "schema_version": 1,
    "id": "sc:c-1042:31",
    "customer_id": "c-1042",
    "event_time": "2024-07-24T23:00:00Z",
    "model_version": "2024-07-21.1",
    "cause": "time",
    "dimension": "rfm_segment",
    "from_value": "champions",
    "to_value": "at_risk",
    "scores": {"recency": 2, "frequency": 5, "monetary": 5},
    "quadrant": "true_friends",
    "rfm_segment": "at_risk",
    "profile": _PROFILE,
}

CHURN_ALERT: Final[JsonObject] = {
    "type": "churn_alert",
    "schema_version": 1,
    "id": "ca:c-1042:32",
    "customer_id": "c-1042",
    "event_time": "2024-07-24T23:00:00Z",
    "model_version": "2024-07-21.1",
    "cause": "time",
    "severity": "warning",
    "p_alive": 0.41,
    "elapsed_days": 71.3,
    "typical_gap_days": 42.6,
    "quadrant": "true_friends",
    "rfm_segment": "at_risk",
    "true_friend_drifting": True,
    "profile": _PROFILE,
}

RETENTION_OFFER: Final[JsonObject] = {
    "type": "retention_offer",
    "schema_version": 1,
    "id": "ro:ca:c-1042:32",
    "customer_id": "c-1042",
    "event_time": "2024-07-24T23:00:00Z",
    "model_version": "2024-07-21.1",
    "cause": "time",
    "offer_code": "TF-WINBACK-15",
    "decision": "offer",
    "reason": "true friend drifting: elapsed 71 days vs typical 43; reward and recognise",
    "quadrant": "true_friends",
    "trigger_id": "ca:c-1042:32",
    "expires_at": "2024-08-07T23:00:00Z",
    "channel": "email",
    "profile": _PROFILE,
}

UNSUPPORTED_PAYLOAD: Final = (
    b'{"schema_version":2,"event_id":"evt-91aa","customer_id":"c-2077",'
    b'"occurred_at":"2024-06-02T08:00:00Z","order_id":"o-9","total":{"value":"10.00"}}'
)
"""A purchase from a newer producer; decoding it gives ``DEAD_LETTER``."""

UNSUPPORTED_SOURCE: Final = ("rfm.purchases", 2, 118_204, b"c-2077")
"""topic, partition, offset, key of ``UNSUPPORTED_PAYLOAD`` in the dead-letter example."""

_UNSUPPORTED_REASON: Final = (
    "schema_version 2 is newer than this worker understands (max 1); "
    "upgrade rfm-stream or route this event elsewhere"
)

DEAD_LETTER: Final[JsonObject] = {
    "type": "dead_letter",
    "schema_version": 1,
    "id": "dl:rfm.purchases:2:118204",
    "reason_code": "unsupported_schema_version",
    "reason": _UNSUPPORTED_REASON,
    "errors": [{"field": "schema_version", "code": "unsupported", "message": _UNSUPPORTED_REASON}],
    "source_topic": "rfm.purchases",
    "source_partition": 2,
    "source_offset": 118_204,
    "source_key_b64": base64.b64encode(b"c-2077").decode("ascii"),
    "payload_b64": base64.b64encode(UNSUPPORTED_PAYLOAD).decode("ascii"),
    "payload_size": len(UNSUPPORTED_PAYLOAD),
    "payload_truncated": False,
    "payload_sha256": hashlib.sha256(UNSUPPORTED_PAYLOAD).hexdigest(),
    "payload_text": UNSUPPORTED_PAYLOAD.decode("utf-8"),
    "customer_id": "c-2077",
    "event_id": "evt-91aa",
    "event_time": "2024-06-02T08:00:00Z",
    "event_schema_version": 2,
    "model_version": None,
}

CUSTOMER_ERASED: Final[JsonObject] = {
    "type": "customer_erased",
    "schema_version": 1,
    "id": "erased:5f0c2a61d1b7e9a4c3d2b1a0f9e8d7c6",
    "customer_id": "c-2077",
    "customer_hash": "5f0c2a61d1b7e9a4c3d2b1a0f9e8d7c6",
    "event_time": "2024-07-01T00:00:00Z",
    "requested_at": "2024-07-01T09:30:00Z",
    "had_state": True,
}

OFFER_OUTCOME: Final[JsonObject] = {
    "type": "offer_outcome",
    "schema_version": 1,
    "id": "outcome:c-1042:32",
    "customer_id": "c-1042",
    "event_time": "2024-08-23T23:00:00Z",
    "offer_id": "offer:c-1042:32",
    "trigger_id": "c-1042:32",
    "decided_at": "2024-07-24T23:00:00Z",
    "window_days": 30,
    "arm": "treated",
    "offer_code": "TF-WINBACK-VIP",
    "quadrant": "true_friend",
    "trigger": "drifting",
    "converted": True,
    "purchases": 1,
    "refunds": 0,
    "net_revenue_cents": 8450,
    "first_purchase_at": "2024-08-02T17:12:09Z",
    "days_to_first_purchase": 8.7584375,
}

EXAMPLES: Final[dict[str, JsonObject]] = {
    "purchase": PURCHASE,
    "refund": REFUND,
    "interaction": INTERACTION,
    "segment_change": SEGMENT_CHANGE,
    "churn_alert": CHURN_ALERT,
    "retention_offer": RETENTION_OFFER,
    "offer_outcome": OFFER_OUTCOME,
    "dead_letter": DEAD_LETTER,
    "customer_erased": CUSTOMER_ERASED,
}
"""Every example by name; treat as read-only (use ``example_json`` for a payload)."""


def example_json(name: str) -> bytes:
    """The named example as the bytes a producer would send (compact UTF-8 JSON)."""
    return orjson.dumps(EXAMPLES[name])
