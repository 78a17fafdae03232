"""Output events: what rfm-stream publishes for marketing tools and operators.

Every output carries a deterministic ``id`` (replays and redeliveries produce the same id, so
consumers drop duplicates by id), the customer, the event time that caused it, and, for the
domain outputs, the model version and a ``ProfileSnapshot`` so a consumer can act without
looking the customer up. Times are normalised to UTC. There is no wall-clock field anywhere:
the same input log and model give byte-identical outputs.

Each output has a ``type`` discriminator; ``parse_output`` reads any of them back. Unknown
fields are ignored when parsing, so consumers keep working when fields are added.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.common import Identifier, Label, OutputId, Text, UtcTime

NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Score = Annotated[int, Field(ge=1, le=5)]
Cause = Literal["purchase", "refund", "interaction", "time", "late_purchase", "import"]

MAX_REASON_CHARS: Final = 2048
MAX_PAYLOAD_TEXT_CHARS: Final = 8192
MAX_FIELD_ERRORS: Final = 10


class _Wire(BaseModel):
    # Outputs are built by the core in Python: NaN would serialise as null and break the
    # round trip, so non-finite floats are refused at construction.
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class RfmScores(_Wire):
    """Population-quintile scores; 5 is best (for recency: most recent)."""

    recency: Score
    frequency: Score
    monetary: Score


class ProfileSnapshot(_Wire):
    """The customer's state when the output was produced, in the vocabulary marketing tools
    use (average days between orders, expected next order, churn-risk band)."""

    first_purchase_at: UtcTime | None = None
    last_purchase_at: UtcTime | None = None
    purchase_count: NonNegativeInt = Field(description="Lifetime distinct orders.")
    repeat_days: NonNegativeInt = Field(description="BG/NBD x: distinct repeat purchase days.")
    monetary_window_cents: int = Field(description="Spend in the window, net of refunds.")
    frequency_window: NonNegativeInt = Field(description="Orders in the window.")
    window_days: Annotated[int, Field(ge=1)]
    mean_order_value_cents: int | None = None
    avg_days_between_purchases: NonNegativeFloat | None = None
    expected_next_purchase_at: UtcTime | None = None
    p_alive: Probability | None = Field(None, description="BG/NBD P(alive), 0..1.")
    churn_risk_band: Literal["low", "medium", "high"] | None = Field(
        None, description="Risk of no purchase in the next 90 days: <33%, 33-66%, >66%."
    )
    days_since_last_purchase: NonNegativeFloat | None = None
    engagement: NonNegativeInt | None = Field(
        None,
        description=(
            "Interactions in the engagement window (rules: windows.engagement_days). Null in "
            "output events: interactions arrive on their own topic and their interleaving "
            "with purchases is not reproducible, while outputs are. Profiles show it."
        ),
    )
    last_interaction_at: UtcTime | None = Field(None, description="Null in output events too.")
    tenure_days: NonNegativeFloat | None = None


class _DomainOutput(_Wire):
    # ``type`` is declared here so it serialises first; subclasses narrow it to a literal.
    type: str
    schema_version: Literal[1] = 1
    id: OutputId = Field(description="Deterministic: the same cause always gives the same id.")
    customer_id: Identifier
    event_time: UtcTime = Field(description="Event time of what caused this output.")
    model_version: Label = Field(description="Scoring/churn model version used.")
    cause: Cause = Field(
        description="What moved the customer: an event, time alone, a late purchase or "
        "refund folded in as a correction (late_purchase), or an import of history stating "
        "current memberships (import; no offer is made for it)."
    )


class SegmentChange(_DomainOutput):
    """A customer moved from one RFM segment or loyalty x profitability quadrant to another."""

    type: Literal["segment_change"] = "segment_change"
    dimension: Literal["rfm_segment", "quadrant"]
    from_value: Label | None = Field(description="None when the customer is new.")
    to_value: Label
    scores: RfmScores
    quadrant: Label
    rfm_segment: Label
    profile: ProfileSnapshot


class ChurnAlert(_DomainOutput):
    """P(alive) or the purchase gap crossed a threshold. ``true_friend_drifting`` flags the
    alert that matters most: a loyal, profitable customer going quiet."""

    type: Literal["churn_alert"] = "churn_alert"
    severity: Literal["watch", "warning", "critical"]
    p_alive: Probability
    elapsed_days: NonNegativeFloat = Field(description="Days since the last purchase.")
    typical_gap_days: NonNegativeFloat | None = Field(
        None, description="The customer's usual days between purchases, if known."
    )
    quadrant: Label
    rfm_segment: Label
    true_friend_drifting: bool
    profile: ProfileSnapshot


class RetentionOffer(_DomainOutput):
    """The offer policy's decision for a trigger; "no offer" decisions are published too, so
    every trigger has an auditable outcome."""

    type: Literal["retention_offer"] = "retention_offer"
    offer_code: Label | None = Field(description="None exactly when decision is not 'offer'.")
    decision: Literal["offer", "no_offer", "holdout", "capped", "cooldown"]
    reason: Text
    quadrant: Label
    trigger_id: OutputId = Field(description="id of the segment change or churn alert.")
    expires_at: UtcTime | None = None
    channel: Label | None = None
    profile: ProfileSnapshot

    @model_validator(mode="after")
    def _offer_code_matches_decision(self) -> Self:
        if (self.decision == "offer") != (self.offer_code is not None):
            raise ValueError("offer_code is required for decision 'offer' and only for it")
        return self


class OfferOutcome(_Wire):
    """What followed one offer decision — an offer sent (``treated``) or held out for the
    control group (``holdout``) — counted in event time over the decision's outcome window
    and published once the window has closed (by time alone if the customer stays silent).
    Lift is measured from these: conversion of treated against holdout."""

    type: Literal["offer_outcome"] = "offer_outcome"
    schema_version: Literal[1] = 1
    id: OutputId = Field(description="outcome:<trigger id>: one per decision, deterministic.")
    customer_id: Identifier
    event_time: UtcTime = Field(description="When the outcome window closed.")
    offer_id: OutputId = Field(description="id of the retention offer (offer:<trigger id>).")
    trigger_id: OutputId = Field(description="id of the segment change or churn alert.")
    decided_at: UtcTime = Field(description="Event time of the decision: the window's start.")
    window_days: Annotated[int, Field(ge=1, le=365)]
    arm: Literal["treated", "holdout"] = Field(
        description="treated: the offer was sent; holdout: the control group's decision."
    )
    offer_code: Label = Field(
        description="The strategy: the offer the policy sends (held back for the holdout)."
    )
    quadrant: Label
    trigger: Literal["entered", "drifting"]
    converted: bool = Field(description="At least one purchase within the window.")
    purchases: NonNegativeInt
    refunds: NonNegativeInt
    net_revenue_cents: int = Field(
        description="Purchases minus refunds within the window, in the reporting currency."
    )
    first_purchase_at: UtcTime | None = None
    days_to_first_purchase: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _converted_matches_purchases(self) -> Self:
        if self.converted != (self.purchases > 0):
            raise ValueError("converted must be true exactly when purchases > 0")
        if (self.first_purchase_at is None) != (self.purchases == 0):
            raise ValueError("first_purchase_at is set exactly when purchases > 0")
        return self


class DeadLetterReason(StrEnum):
    """Why an input did not reach (or did not get through) the core. Stable codes for alerts
    and dashboards; the human explanation is in ``DeadLetter.reason``."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    LATE_EVENT = "late_event"
    BEYOND_LATE_HORIZON = "beyond_late_horizon"
    PROCESSING_ERROR = "processing_error"
    INTERNAL_ERROR = "internal_error"
    ERASED = "erased"


class FieldError(_Wire):
    """One validation problem, machine-readable (``reason`` has the same in prose)."""

    field: str = Field(max_length=256, description="Dotted path, '' for the whole payload.")
    code: str = Field(max_length=64, description="pydantic error type or a limit name.")
    message: str = Field(max_length=512)


class DeadLetter(_Wire):
    """An input that was not applied, with everything needed to fix and replay it.

    The raw payload is kept losslessly in ``payload_b64`` (also for bytes that are not
    UTF-8) up to ``Limits.max_dead_letter_payload_bytes``; beyond that it is truncated so the
    record still fits in a Kafka message, and ``payload_size``/``payload_sha256`` plus the
    source coordinates identify the original, which stays in the source topic.
    """

    type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = 1
    id: OutputId = Field(description="dl:{topic}:{partition}:{offset}, deterministic.")
    reason_code: DeadLetterReason
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    errors: tuple[FieldError, ...] = Field((), max_length=MAX_FIELD_ERRORS)
    source_topic: str = Field(min_length=1, max_length=255)
    source_partition: int
    source_offset: int
    source_key_b64: str | None = None
    payload_b64: str
    payload_size: NonNegativeInt = Field(description="Length of the original payload.")
    payload_truncated: bool = False
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the full payload.")
    payload_text: str | None = Field(
        None,
        max_length=MAX_PAYLOAD_TEXT_CHARS,
        description="The payload as text when it is UTF-8 (possibly cut), else null.",
    )
    customer_id: Identifier | None = Field(None, description="When it could be extracted.")
    event_id: Identifier | None = Field(None, description="When it could be extracted.")
    event_time: UtcTime | None = Field(None, description="When it could be extracted.")
    event_schema_version: int | None = Field(None, description="schema_version of the input.")
    model_version: Label | None = Field(None, description="Set for processing errors.")


class CustomerErased(_Wire):
    """A customer was erased (the right to be forgotten): delete what you hold about them.

    Published once per customer, on ``customer-erased``. rfm-stream has deleted the
    customer's state, profile, audience memberships, history and offer records; events for
    them that arrive later, or are replayed, are dead-lettered ``erased`` without their
    payload. ``customer_hash`` is what rfm-stream keeps instead of the id (salted: it cannot be
    recomputed without the deployment's salt).
    """

    type: Literal["customer_erased"] = "customer_erased"
    schema_version: Literal[1] = 1
    id: OutputId = Field(description="erased:{customer_hash}, deterministic.")
    customer_id: Identifier
    customer_hash: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="Salted blake2b-128 of the customer id."
    )
    event_time: UtcTime | None = Field(
        None, description="The partition's event time when the erasure ran (null before any)."
    )
    requested_at: UtcTime | None = Field(None, description="When the erasure was requested.")
    had_state: bool = Field(description="Whether rfm-stream held any state for the customer.")


OutputEvent = (
    SegmentChange | ChurnAlert | RetentionOffer | OfferOutcome | DeadLetter | CustomerErased
)

_OUTPUT_ADAPTER: Final[TypeAdapter[OutputEvent]] = TypeAdapter(
    Annotated[OutputEvent, Field(discriminator="type")]
)


def to_json_bytes(event: BaseModel) -> bytes:
    """Compact UTF-8 JSON of any wire model (outputs, and inputs for producers and tests)."""
    return event.__pydantic_serializer__.to_json(event)


def parse_output(raw: bytes | str) -> OutputEvent:
    """Read any output event back, dispatching on ``type``.

    Raises ``pydantic.ValidationError`` on bad input: consumers of our own topics should fail
    loudly on a broken contract rather than dead-letter it.
    """
    return _OUTPUT_ADAPTER.validate_json(raw)
