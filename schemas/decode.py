"""Decoders: the bytes of one input-topic message become a validated event or a DeadLetter.

They never raise on bad input ("errors are data"): whatever the bytes, the caller gets either
an event that passed every check, or a ``DeadLetter`` that says what is wrong and what to do,
keeps the raw payload losslessly and points back at the source message.

Decoding is deterministic given its arguments: the clock is the ``now`` argument (the stream
glue passes the wall clock, tests pass fixed times), so replays dead-letter the same events
with the same records.

The valid path is the hot path: a size check, one ``model_validate_json`` (JSON parsed and
validated in Rust), then a few comparisons against ``Limits``. Everything expensive (error
wording, best-effort extraction of ids from a broken payload) happens only on rejection.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, from_json

from schemas.common import (
    AMOUNT_CEILING,
    CURRENT_SCHEMA_VERSION,
    PATTERN_HELP,
    Identifier,
    Label,
)
from schemas.inputs import LOOKALIKES, MAX_PROPERTIES_DEPTH, Interaction, Purchase
from schemas.outputs import (
    MAX_FIELD_ERRORS,
    MAX_PAYLOAD_TEXT_CHARS,
    MAX_REASON_CHARS,
    DeadLetter,
    DeadLetterReason,
    FieldError,
)

RawPayload = bytes | bytearray | memoryview | None
"""What a Kafka consumer hands over; ``None`` is a tombstone (a message without a value)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that protect the stream from oversized or absurd events.

    ``earliest`` catches zero/default dates; ``max_future`` (measured from the decoder's
    ``now``) catches producer clocks or timezones that are off. Lower ``earliest`` to backfill
    older history. ``max_dead_letter_payload_bytes`` keeps a dead letter small enough to be
    produced to Kafka even when the offending payload is huge.
    """

    max_payload_bytes: int = 65_536
    max_amount: Decimal = Decimal(1_000_000)
    earliest: datetime = datetime(1990, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(days=1)
    max_properties_bytes: int = 4_096
    max_dead_letter_payload_bytes: int = 262_144

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1 or self.max_properties_bytes < 1:
            raise ValueError("max_payload_bytes and max_properties_bytes must be positive")
        if self.max_dead_letter_payload_bytes < 0:
            raise ValueError("max_dead_letter_payload_bytes must be >= 0")
        if not Decimal(0) < self.max_amount < AMOUNT_CEILING:
            raise ValueError(f"max_amount must be > 0 and < {AMOUNT_CEILING}")
        if self.earliest.tzinfo is None:
            raise ValueError("earliest must be timezone-aware")
        if self.max_future < timedelta(0):
            raise ValueError("max_future must not be negative")


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a message was read from; becomes the dead letter's coordinates and id."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None

    @property
    def dead_letter_id(self) -> str:
        """Deterministic: one source message has at most one dead letter."""
        return f"dl:{self.topic}:{self.partition}:{self.offset}"


_ZERO: Final = timedelta(0)


class _Breach(NamedTuple):
    code: DeadLetterReason
    reason: str
    field: str
    limit: str


# A lookalike only matters for a field that may be absent: a required one would be missing.
_DEFAULTED: Final = {
    name: frozenset(field for field, info in model.model_fields.items() if not info.is_required())
    for name, model in (("purchase", Purchase), ("interaction", Interaction))
}

_Event = TypeVar("_Event", Purchase, Interaction)
_Check = Callable[[_Event, datetime, Limits], _Breach | None]


def decode_purchase(
    raw: RawPayload,
    source: SourceRef,
    *,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Purchase | DeadLetter:
    """Decode one message of the purchases topic. Never raises on any payload.

    Raises ``ValueError`` only for a naive ``now``: that is a bug in the caller, not bad data.
    """
    return _decode(Purchase, _purchase_breach, raw, source, now, limits)


def decode_interaction(
    raw: RawPayload,
    source: SourceRef,
    *,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Interaction | DeadLetter:
    """Decode one message of the interactions topic. Never raises on any payload.

    Raises ``ValueError`` only for a naive ``now``: that is a bug in the caller, not bad data.
    """
    return _decode(Interaction, _interaction_breach, raw, source, now, limits)


def dead_letter(
    source: SourceRef,
    raw: RawPayload,
    code: DeadLetterReason,
    reason: str,
    *,
    event: Purchase | Interaction | None = None,
    model_version: str | None = None,
    errors: Sequence[FieldError] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> DeadLetter:
    """A dead letter for ``raw`` read at ``source``; for the glue's late events and core errors.

    With ``event`` the ids, event time and version come from it; without, they are extracted
    from ``raw`` on a best-effort basis. Never raises: if a field cannot be filled it is left
    empty, and in the last resort a minimal record is returned.
    """
    try:
        data = _as_bytes(raw)
        if event is not None:
            return _build(
                source,
                data,
                code,
                reason,
                limits,
                errors=errors,
                customer_id=event.customer_id,
                event_id=event.event_id,
                event_time=_utc_or_none(event.occurred_at),
                event_schema_version=event.schema_version,
                model_version=_valid_or_none(_LABEL, model_version),
            )
        fields = _extract(data) if len(data) <= limits.max_payload_bytes else None
        return _build_from_fields(
            source, data, code, reason, limits, fields, errors, model_version=model_version
        )
    except Exception:
        return _fallback(source, raw, code, reason, limits)


# --- the decode path ----------------------------------------------------------------------


def _decode(
    model: type[_Event],
    breach_of: _Check[_Event],
    raw: RawPayload,
    source: SourceRef,
    now: datetime,
    limits: Limits,
) -> _Event | DeadLetter:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (pass datetime.now(UTC))")
    try:
        data = raw if type(raw) is bytes else _as_bytes(raw)
        if len(data) > limits.max_payload_bytes:
            return _too_large(source, data, limits)
        try:
            event = model.model_validate_json(data)
        except ValidationError as exc:
            return _rejected(model, source, data, exc, limits)
        breach = breach_of(event, now, limits)
        if breach is None:
            return event
        return _breached(source, data, event, breach, limits)
    except Exception as exc:
        return _internal_error(source, raw, exc, limits)


def _purchase_breach(event: Purchase, now: datetime, limits: Limits) -> _Breach | None:
    breach = _time_breach(event.occurred_at, now, limits)
    if breach is not None:
        return breach
    if event.__pydantic_extra__:
        breach = _lookalike_breach(event.__pydantic_extra__, "purchase")
        if breach is not None:
            return breach
    top = limits.max_amount
    if event.amount > top:
        return _amount_breach("amount", event.amount, limits)
    if event.margin is not None and abs(event.margin) > top:
        return _amount_breach("margin", event.margin, limits)
    if event.cost is not None and event.cost > top:
        return _amount_breach("cost", event.cost, limits)
    if event.line_items:
        for index, item in enumerate(event.line_items):
            if item.unit_price is not None and item.unit_price > top:
                return _amount_breach(f"line_items.{index}.unit_price", item.unit_price, limits)
    return None


def _interaction_breach(event: Interaction, now: datetime, limits: Limits) -> _Breach | None:
    breach = _time_breach(event.occurred_at, now, limits)
    if breach is None and event.__pydantic_extra__:
        breach = _lookalike_breach(event.__pydantic_extra__, "interaction")
    if breach is not None or not event.properties:
        return breach
    problem = _json_problem(event.properties, 1)
    if problem is not None:
        field = problem.field()
        reason = f"{field}: {problem.message}"
        return _Breach(DeadLetterReason.INVALID_EVENT, reason, field, "properties")
    size = len(orjson.dumps(event.properties))
    if size > limits.max_properties_bytes:
        return _Breach(
            DeadLetterReason.INVALID_EVENT,
            f"properties serialize to {size} bytes, over the limit of "
            f"{limits.max_properties_bytes}; keep bulky data elsewhere and reference it by id",
            "properties",
            "max_properties_bytes",
        )
    return None


def _time_breach(at: datetime, now: datetime, limits: Limits) -> _Breach | None:
    # One subtraction instead of two aware comparisons: comparing datetimes whose tzinfo
    # objects differ calls utcoffset() on both every time, a measurable share of the decode.
    try:
        since_earliest = at - limits.earliest
        if since_earliest < _ZERO:
            return _Breach(
                DeadLetterReason.TIMESTAMP_OUT_OF_RANGE,
                f"occurred_at {at.isoformat()} is before the earliest accepted time "
                f"{limits.earliest.isoformat()}; fix the producer's timestamps (a default or "
                "zero date?), or lower Limits.earliest to backfill older history",
                "occurred_at",
                "earliest",
            )
        if since_earliest > now - limits.earliest + limits.max_future:
            return _Breach(
                DeadLetterReason.TIMESTAMP_OUT_OF_RANGE,
                f"occurred_at {at.isoformat()} is {_duration(at - now)} ahead of the worker "
                f"clock ({now.isoformat()}), more than the allowed {_duration(limits.max_future)};"
                " check the producer's clock and timezone offset",
                "occurred_at",
                "max_future",
            )
    except OverflowError:
        return _Breach(
            DeadLetterReason.TIMESTAMP_OUT_OF_RANGE,
            f"occurred_at {at.isoformat()} is outside the representable time range",
            "occurred_at",
            "earliest",
        )
    return None


def _lookalike_breach(extra: dict[str, Any], name: str) -> _Breach | None:
    for field in extra:
        meant = LOOKALIKES.get(field)
        if meant is not None and meant in _DEFAULTED[name]:
            return _Breach(
                DeadLetterReason.INVALID_EVENT,
                f"unknown field {field!r} looks like {meant!r}: refused rather than ignored "
                f"because ignoring it could change what the event means; send {meant!r} "
                f"(see schemas/json/{name}.schema.json) and rename or drop {field!r}",
                field,
                "lookalike",
            )
    return None


def _amount_breach(field: str, value: Decimal, limits: Limits) -> _Breach:
    return _Breach(
        DeadLetterReason.AMOUNT_OUT_OF_RANGE,
        f"{field} {value} is above the maximum of {limits.max_amount} accepted per event; "
        "check the producer's units (cents sent as currency units?) or raise Limits.max_amount",
        field,
        "max_amount",
    )


_I64_MIN: Final = -(2**63)
_U64_MAX: Final = 2**64 - 1


def _json_problem(container: dict[str, Any] | list[Any], depth: int) -> _JsonProblem | None:
    """The first value in a properties container that JSON consumers could not rely on.

    Scalars are checked inline and the path is only built on failure: this runs for every
    interaction that carries properties.
    """
    items = container.items() if type(container) is dict else enumerate(container)
    for key, item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                return _JsonProblem([key], "NaN and Infinity are not JSON numbers; send null")
        elif kind is int:
            if not _I64_MIN <= item <= _U64_MAX:
                return _JsonProblem([key], "integer outside the 64-bit range; send a string")
        elif depth >= MAX_PROPERTIES_DEPTH:
            return _JsonProblem(
                [key],
                f"nested deeper than {MAX_PROPERTIES_DEPTH} levels of objects/arrays "
                "(counting properties itself); flatten it",
            )
        else:
            problem = _json_problem(item, depth + 1)
            if problem is not None:
                problem.path.append(key)
                return problem
    return None


class _JsonProblem(NamedTuple):
    path: list[str | int]  # innermost key first
    message: str

    def field(self) -> str:
        return ".".join(["properties", *(str(key) for key in reversed(self.path))])


# --- the rejection path: only runs for bad events -----------------------------------------

_AMOUNT_ERRORS: Final = frozenset(
    {
        "greater_than_equal",
        "less_than_equal",
        "decimal_max_digits",
        "decimal_whole_digits",
        "finite_number",
    }
)
_MONEY_FIELDS: Final = frozenset({"amount", "margin", "cost", "unit_price"})
_JSON_TYPES: Final = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
_TIME_HINT: Final = "send ISO 8601 with an offset, e.g. 2024-05-01T12:00:00Z"
_SCHEMA_FILES: Final = {Purchase: "purchase", Interaction: "interaction"}
_SHOWN_ERRORS: Final = 3
_ID: Final[TypeAdapter[str]] = TypeAdapter(Identifier)
_LABEL: Final[TypeAdapter[str]] = TypeAdapter(Label)
_MAX_FIELD_CHARS: Final = 256
_MAX_MESSAGE_CHARS: Final = 512


def _too_large(source: SourceRef, data: bytes, limits: Limits) -> DeadLetter:
    reason = (
        f"payload is {len(data)} bytes, over the limit of {limits.max_payload_bytes}; "
        "send one event per message and keep bulky data out of events"
    )
    error = FieldError(field="", code="max_payload_bytes", message=reason[:_MAX_MESSAGE_CHARS])
    return _build(source, data, DeadLetterReason.PAYLOAD_TOO_LARGE, reason, limits, (error,))


def _rejected(
    model: type[Purchase | Interaction],
    source: SourceRef,
    data: bytes,
    exc: ValidationError,
    limits: Limits,
) -> DeadLetter:
    details = exc.errors(include_url=False)
    if details[0]["type"] == "json_invalid":
        code, reason = _unparseable(data, details[0]["msg"])
        error = FieldError(field="", code=code.value, message=reason[:_MAX_MESSAGE_CHARS])
        return _build(source, data, code, reason, limits, (error,))
    fields = _extract(data)
    version = fields.get("schema_version") if fields is not None else None
    if type(version) is int and CURRENT_SCHEMA_VERSION < version < 2**31:
        reason = (
            f"schema_version {version} is newer than this worker understands "
            f"(max {CURRENT_SCHEMA_VERSION}); upgrade rfm-stream or route this event elsewhere"
        )
        error = FieldError(field="schema_version", code="unsupported", message=reason)
        code = DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION
        return _build_from_fields(source, data, code, reason, limits, fields, (error,))
    errors = tuple(_field_error(detail) for detail in details[:MAX_FIELD_ERRORS])
    shown = "; ".join(f"{e.field or 'payload'}: {e.message}" for e in errors[:_SHOWN_ERRORS])
    if len(details) > _SHOWN_ERRORS:
        shown += f" (and {len(details) - _SHOWN_ERRORS} more)"
    if all(_is_amount_error(detail) for detail in details):
        code = DeadLetterReason.AMOUNT_OUT_OF_RANGE
        reason = (
            f"amount out of range: {shown}. Amounts must be finite numbers from 0 to "
            f"{limits.max_amount} with at most 4 decimal places"
        )
    else:
        code = DeadLetterReason.INVALID_EVENT
        name = _SCHEMA_FILES[model]
        reason = (
            f"not a valid {name} event: {shown}. Fix the producer to follow "
            f"schemas/json/{name}.schema.json and re-send"
        )
    return _build_from_fields(source, data, code, reason, limits, fields, errors)


def _unparseable(data: bytes, parser_message: str) -> tuple[DeadLetterReason, str]:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DeadLetterReason.NOT_UTF8, (
            f"payload is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "events must be JSON encoded as UTF-8"
        )
    if not data.strip():
        reason = "payload is empty (a tombstone or blank message); send one JSON object"
    elif data.startswith(b"\xef\xbb\xbf"):
        reason = "payload starts with a UTF-8 byte-order mark; send JSON without a BOM"
    else:
        reason = f"payload is not valid JSON ({parser_message}); send one JSON object"
    return DeadLetterReason.INVALID_JSON, reason


def _is_amount_error(detail: ErrorDetails) -> bool:
    loc = detail["loc"]
    return (
        detail["type"] in _AMOUNT_ERRORS
        and bool(loc)
        and loc[-1] in _MONEY_FIELDS
        and (len(loc) == 1 or loc[0] == "line_items")
    )


def _field_error(detail: ErrorDetails) -> FieldError:
    field = ".".join(str(part) for part in detail["loc"])
    return FieldError(
        field=_clip(field, _MAX_FIELD_CHARS),
        code=detail["type"][:64],
        message=_clip(_message(detail), _MAX_MESSAGE_CHARS),
    )


def _message(detail: ErrorDetails) -> str:
    kind, loc = detail["type"], detail["loc"]
    if kind == "missing":
        return "is required"
    if kind == "timezone_aware":
        return f"has no timezone offset; {_TIME_HINT}"
    if kind == "datetime_type":
        return f"must be a date-time string (epoch numbers are not accepted); {_TIME_HINT}"
    if kind.startswith("datetime_"):
        return f"is not an ISO 8601 date-time; {_TIME_HINT}"
    if kind == "string_pattern_mismatch":
        pattern = detail.get("ctx", {}).get("pattern", "")
        return PATTERN_HELP.get(pattern, detail["msg"])
    if kind == "model_type" and not loc:
        return f"must be a JSON object, got {_JSON_TYPES.get(type(detail['input']), 'a value')}"
    if kind == "decimal_max_places":
        return (
            "must have at most 4 decimal places (float artefacts like 0.30000000000000004 "
            "count: round before sending, or send the amount as a string)"
        )
    if kind == "greater_than_equal" and loc and loc[-1] in _MONEY_FIELDS:
        return 'must be >= 0 (refunds are type "refund" with a positive amount)'
    if kind in ("greater_than_equal", "less_than_equal", "int_type") and loc == ("schema_version",):
        return f"must be an integer from 1 to {CURRENT_SCHEMA_VERSION}"
    return detail["msg"]


def _breached(
    source: SourceRef, data: bytes, event: Purchase | Interaction, breach: _Breach, limits: Limits
) -> DeadLetter:
    error = FieldError(
        field=breach.field, code=breach.limit, message=_clip(breach.reason, _MAX_MESSAGE_CHARS)
    )
    return _build(
        source,
        data,
        breach.code,
        breach.reason,
        limits,
        (error,),
        customer_id=event.customer_id,
        event_id=event.event_id,
        event_time=_utc_or_none(event.occurred_at),
        event_schema_version=event.schema_version,
    )


def _internal_error(
    source: SourceRef, raw: RawPayload, exc: Exception, limits: Limits
) -> DeadLetter:
    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:
        detail = type(exc).__name__
    reason = (
        f"unexpected error while decoding ({_clip(detail, 500)}); this is a bug in "
        "rfm-stream: report it with this dead letter, then replay the event"
    )
    return dead_letter(source, raw, DeadLetterReason.INTERNAL_ERROR, reason, limits=limits)


# --- building the record ------------------------------------------------------------------


def _extract(data: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object, when it is one (the same parser validation uses)."""
    try:
        value = from_json(data)
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def _build_from_fields(
    source: SourceRef,
    data: bytes,
    code: DeadLetterReason,
    reason: str,
    limits: Limits,
    fields: dict[str, Any] | None,
    errors: Sequence[FieldError] = (),
    *,
    model_version: str | None = None,
) -> DeadLetter:
    get = (fields or {}).get
    version = get("schema_version")
    return _build(
        source,
        data,
        code,
        reason,
        limits,
        errors,
        customer_id=_valid_or_none(_ID, get("customer_id")),
        event_id=_valid_or_none(_ID, get("event_id")),
        event_time=_time_or_none(get("occurred_at")),
        event_schema_version=version if type(version) is int and abs(version) < 2**31 else None,
        model_version=_valid_or_none(_LABEL, model_version),
    )


def _build(
    source: SourceRef,
    data: bytes,
    code: DeadLetterReason,
    reason: str,
    limits: Limits,
    errors: Sequence[FieldError] = (),
    *,
    customer_id: str | None = None,
    event_id: str | None = None,
    event_time: datetime | None = None,
    event_schema_version: int | None = None,
    model_version: str | None = None,
) -> DeadLetter:
    kept = data[: limits.max_dead_letter_payload_bytes]
    return DeadLetter(
        id=source.dead_letter_id,
        reason_code=code,
        reason=_clip(reason, MAX_REASON_CHARS) or str(code),
        errors=tuple(errors[:MAX_FIELD_ERRORS]),
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        source_key_b64=_b64(source.key) if source.key is not None else None,
        payload_b64=_b64(kept),
        payload_size=len(data),
        payload_truncated=len(kept) < len(data),
        payload_sha256=hashlib.sha256(data).hexdigest(),
        payload_text=_text_or_none(data),
        customer_id=customer_id,
        event_id=event_id,
        event_time=event_time,
        event_schema_version=event_schema_version,
        model_version=model_version,
    )


def _fallback(
    source: SourceRef, raw: object, code: DeadLetterReason, reason: str, limits: Limits
) -> DeadLetter:
    """A minimal record when even building a normal one failed (e.g. odd glue arguments)."""
    data = bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else b""
    kept = data[: max(limits.max_dead_letter_payload_bytes, 0)]
    return DeadLetter.model_construct(
        id=_clip(f"dl:{source.topic}:{source.partition}:{source.offset}", 256),
        reason_code=_reason_code(code),
        reason=_clip(str(reason), MAX_REASON_CHARS) or "unknown",
        source_topic=str(source.topic)[:255] or "unknown",
        source_partition=int(source.partition),
        source_offset=int(source.offset),
        payload_b64=_b64(kept),
        payload_size=len(data),
        payload_truncated=len(kept) < len(data),
        payload_sha256=hashlib.sha256(data).hexdigest(),
    )


def _reason_code(code: object) -> DeadLetterReason:
    try:
        return DeadLetterReason(str(code))
    except ValueError:
        return DeadLetterReason.INTERNAL_ERROR


def _as_bytes(raw: object) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    raise TypeError(f"expected bytes, got {type(raw).__name__}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text_or_none(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _clip(text, MAX_PAYLOAD_TEXT_CHARS)


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, always encodable as UTF-8 (no lone surrogates)."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8")


def _valid_or_none(adapter: TypeAdapter[str], value: object) -> str | None:
    if value is None:
        return None
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError:
        return None


def _utc_or_none(value: datetime) -> datetime | None:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _time_or_none(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _utc_or_none(parsed) if parsed.tzinfo is not None else None


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    value, unit = seconds, "second"
    if seconds >= 86_400:
        value, unit = seconds / 86_400, "day"
    elif seconds >= 3_600:
        value, unit = seconds / 3_600, "hour"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}" if text == "1" else f"{text} {unit}s"
