"""The rfm-stream wire contract: input events, output events, decoders and their limits.

Producers integrate against the models here (or the JSON Schema files in ``schemas/json/``,
generated from them); the stream glue calls ``decode_purchase`` / ``decode_interaction`` on
every message and publishes outputs with ``to_json_bytes``.
"""

from schemas.common import CURRENT_SCHEMA_VERSION, epoch_ms, to_cents
from schemas.decode import (
    DEFAULT_LIMITS,
    Limits,
    RawPayload,
    SourceRef,
    dead_letter,
    decode_interaction,
    decode_purchase,
)
from schemas.examples import EXAMPLES, example_json
from schemas.inputs import (
    InputEvent,
    Interaction,
    InteractionType,
    LineItem,
    Purchase,
    amount_cents,
    margin_cents,
    occurred_at_ms,
)
from schemas.outputs import (
    ChurnAlert,
    CustomerErased,
    DeadLetter,
    DeadLetterReason,
    FieldError,
    OfferOutcome,
    OutputEvent,
    ProfileSnapshot,
    RetentionOffer,
    RfmScores,
    SegmentChange,
    parse_output,
    to_json_bytes,
)

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_LIMITS",
    "EXAMPLES",
    "ChurnAlert",
    "CustomerErased",
    "DeadLetter",
    "DeadLetterReason",
    "FieldError",
    "InputEvent",
    "Interaction",
    "InteractionType",
    "Limits",
    "LineItem",
    "OfferOutcome",
    "OutputEvent",
    "ProfileSnapshot",
    "Purchase",
    "RawPayload",
    "RetentionOffer",
    "RfmScores",
    "SegmentChange",
    "SourceRef",
    "amount_cents",
    "dead_letter",
    "decode_interaction",
    "decode_purchase",
    "epoch_ms",
    "example_json",
    "margin_cents",
    "occurred_at_ms",
    "parse_output",
    "to_cents",
    "to_json_bytes",
]
