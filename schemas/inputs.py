"""Input events: what producers send to the purchases and interactions topics.

Compatibility policy, shared by both events:

* ``schema_version`` says which contract the producer followed. Adding an optional field is a
  compatible change and keeps the version; anything that changes the meaning of an existing
  field bumps it. A worker dead-letters versions newer than it understands
  (``unsupported_schema_version``) instead of guessing.
* Unknown top-level fields are **accepted but not used** (kept in ``model_extra``), so
  producers can send their own attributes, or fields of a newer minor revision, without their
  events being dead-lettered. A misspelt required field is still refused as missing. The
  danger of accepting unknown fields is a misspelt *defaulted* field: ``"kind": "refund"``
  would silently count a refund as a purchase, ``"schemaVersion": 2`` would be read as
  version 1. Such lookalikes (``LOOKALIKES``) are refused with a reason naming the field to use.
* Validation is structural and deterministic. Limits that depend on configuration or on the
  worker's clock (amount ceiling, timestamp window, property size) are checked by the
  decoders in ``schemas.decode``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, StringConstraints

from schemas.common import (
    CURRENT_SCHEMA_VERSION,
    ID_PATTERN,
    CurrencyCode,
    EventTime,
    Identifier,
    Label,
    Money,
    SignedMoney,
    Text,
    Token,
    epoch_ms,
    to_cents,
)

MAX_LINE_ITEMS: Final = 500
MAX_PROPERTY_KEYS: Final = 64
MAX_PROPERTIES_DEPTH: Final = 4
"""Objects/arrays nested at most this deep, counting ``properties`` itself as level 1."""

SchemaVersion = Annotated[int, Strict(), Field(ge=1, le=CURRENT_SCHEMA_VERSION)]
PropertyKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]


LOOKALIKES: Final[dict[str, str]] = {
    "schemaVersion": "schema_version",
    "schema": "schema_version",
    "kind": "type",
    "event_type": "type",
    "transaction_type": "type",
    "refund": "type",
    "is_refund": "type",
    "is_return": "type",
    "lineItems": "line_items",
}
"""Unknown top-level field -> the contract field it most likely meant. Only fields whose loss
would change the event's meaning silently (defaulted or optional ones) are listed."""


class _InputEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    schema_version: SchemaVersion = Field(
        CURRENT_SCHEMA_VERSION,
        description="Contract version the producer followed; newer than the worker's "
        "maximum is dead-lettered as unsupported_schema_version.",
    )
    event_id: Identifier = Field(
        description="Unique per event and stable across retries: the idempotency key by "
        "which duplicates are recognised.",
    )
    customer_id: Identifier = Field(description="The customer; also the Kafka message key.")
    occurred_at: EventTime = Field(
        description="When it happened (event time), ISO 8601 with an offset. Naive times and "
        "epoch numbers are refused.",
    )


class LineItem(BaseModel):
    """One line of an order; informational (the order's ``amount`` is what counts)."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    sku: Identifier
    quantity: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] = 1
    unit_price: Money | None = None
    name: Text | None = None
    category: Text | None = None


class Purchase(_InputEvent):
    """An order (``type="purchase"``) or money given back on one (``type="refund"``).

    ``amount`` is never negative: for a refund it is the amount given back, and the refund
    carries the ``order_id`` of the original order (partial refunds are several refund events).
    Returns are sent as refunds.

    A **zero-amount purchase** (common in real logs, e.g. free samples or fully discounted
    orders) is a real purchase occasion: it counts for recency and frequency and adds 0 to
    monetary value. Send nothing at all if the row is not a purchase.

    ``amount`` is the order total in ``currency`` as the customer paid it (taxes and shipping
    included or not, but consistently per producer). ``line_items`` are informational and need
    not add up to it. ``margin`` (profit on the order, may be negative) or ``cost`` (cost of
    goods) lets profitability use margin instead of revenue; when both are sent, ``margin``
    wins.
    """

    type: Literal["purchase", "refund"] = Field(
        "purchase", description="purchase adds value; refund (or return) takes value back."
    )
    order_id: Identifier = Field(
        description="The order; for a refund, the id of the order being refunded."
    )
    amount: Money = Field(
        description="Order total (or amount refunded), >= 0, at most 4 decimal places, as a "
        "JSON number or numeric string; at most the configured maximum (default 1,000,000).",
    )
    currency: CurrencyCode = Field(description="ISO 4217 code of amount, margin and cost.")
    margin: SignedMoney | None = Field(None, description="Profit on this order; may be < 0.")
    cost: Money | None = Field(None, description="Cost of goods; margin = amount - cost.")
    line_items: Annotated[tuple[LineItem, ...], Field(max_length=MAX_LINE_ITEMS)] | None = None


class InteractionType(StrEnum):
    """Well-known interaction types. Any lower_snake_case type is accepted; these have
    documented meaning and are the ones engagement rules use by default."""

    VISIT = "visit"
    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    SEARCH = "search"
    CART_ADD = "cart_add"
    CART_REMOVE = "cart_remove"
    CHECKOUT_START = "checkout_start"
    WISHLIST_ADD = "wishlist_add"
    LOGIN = "login"
    APP_OPEN = "app_open"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    EMAIL_UNSUBSCRIBE = "email_unsubscribe"
    SMS_CLICK = "sms_click"
    PUSH_OPEN = "push_open"
    SUPPORT_TICKET = "support_ticket"
    REVIEW = "review"
    SURVEY_RESPONSE = "survey_response"


class Interaction(_InputEvent):
    """A non-purchase touch point: visits, views, cart adds, e-mail opens, tickets, reviews.

    ``type`` is open (extensible): any lower_snake_case name up to 64 characters is accepted,
    so new touch points need no schema change; ``InteractionType`` lists the well-known ones.

    ``properties`` carries free-form context (sku, page, campaign, rating, ...). It is stored
    by nothing on the hot path and is bounded: at most 64 keys, 4 levels of nesting, finite
    numbers, 64-bit integers, and a serialized size of at most the configured limit (default
    4 KiB).
    """

    type: Token = Field(
        description="lower_snake_case interaction type; well-known values are listed in "
        "examples, others are accepted.",
        json_schema_extra={"examples": [t.value for t in InteractionType]},
    )
    channel: Label | None = Field(None, description="web, ios, android, email, store, ...")
    properties: Annotated[dict[PropertyKey, JsonValue], Field(max_length=MAX_PROPERTY_KEYS)] = (
        Field(default_factory=dict, description="Free-form context, bounded in size and depth.")
    )


InputEvent = Purchase | Interaction


def occurred_at_ms(event: Purchase | Interaction) -> int:
    """Epoch milliseconds (UTC) of the event time: the core's unit of time."""
    return epoch_ms(event.occurred_at)


def amount_cents(purchase: Purchase) -> int:
    """The amount in integer cents (half-even), always >= 0; ``type`` gives the sign."""
    return to_cents(purchase.amount)


def margin_cents(purchase: Purchase) -> int | None:
    """Margin in integer cents: ``margin`` if sent, else ``amount - cost``, else None."""
    if purchase.margin is not None:
        return to_cents(purchase.margin)
    if purchase.cost is not None:
        return to_cents(purchase.amount - purchase.cost)
    return None
