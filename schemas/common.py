"""Field types shared by every event on the wire.

Constraints live in the types (not in ad-hoc validators) so that pydantic-core enforces them in
Rust while it parses, the JSON Schema files show them, and producers can check themselves
against the same rules before they send.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, Field, Strict, StringConstraints

CURRENT_SCHEMA_VERSION: Final = 1
"""The newest input schema version this worker understands; newer ones are dead-lettered."""

# C0 and C1 control characters (and DEL). They break logs, CSV exports and terminals, and in an
# id they are nearly always a producer bug, so they are refused everywhere.
_CONTROL = r"\x00-\x1F\x7F-\x9F"

ID_PATTERN: Final = rf"^[^\s{_CONTROL}](?:[^{_CONTROL}]*[^\s{_CONTROL}])?$"
"""Printable text without leading or trailing whitespace.

Leading/trailing whitespace is refused because "c42" and "c42 " would silently become two
customers; refusing it makes the producer bug visible in the dead-letter topic instead.
"""

TOKEN_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
"""lower_snake_case names (interaction types): stable keys for counters and audience rules."""

CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
"""The shape of an ISO 4217 alphabetic code; the list of codes itself is not checked."""

PATTERN_HELP: Final[dict[str, str]] = {
    ID_PATTERN: "must be printable text without control characters or leading/trailing spaces",
    TOKEN_PATTERN: "must be lower_snake_case (a-z, 0-9, _; starting with a letter; max 64)",
    CURRENCY_PATTERN: "must be a 3-letter upper-case ISO 4217 code such as USD or EUR",
}
"""Human wording for pattern errors, used when a dead-letter reason is written."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
"""Event, customer and order ids: 1-128 characters, see ``ID_PATTERN``."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""Short names: channels, segment and quadrant names, offer codes, model versions."""

Text = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=ID_PATTERN)]
"""Human-readable text that still fits in a table cell or an e-mail subject."""

OutputId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ID_PATTERN)]
"""Deterministic ids of output events (they embed customer ids, hence longer than those)."""

Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]
CurrencyCode = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]

AMOUNT_MAX_DIGITS: Final = 19
AMOUNT_DECIMAL_PLACES: Final = 4
AMOUNT_CEILING: Final = Decimal(10) ** (AMOUNT_MAX_DIGITS - AMOUNT_DECIMAL_PLACES)
"""Hard ceiling from the digit limits; the configurable ``Limits.max_amount`` must be below."""

Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES),
]
"""A non-negative amount: a JSON number or a numeric string, at most 4 decimal places.

Decimal, never float: the core counts integer cents and float input would make sums depend on
rounding. NaN and Infinity are refused, and so are float artefacts such as
0.30000000000000004 (too many decimal places). JSON numbers are read as IEEE-754 doubles,
which is exact for every amount the contract allows (at most 15 significant digits); send a
string to have longer numbers checked digit by digit.
"""

SignedMoney = Annotated[
    Decimal,
    Field(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES),
]
"""An amount that may be negative (a margin on an order sold at a loss)."""

EventTime = Annotated[AwareDatetime, Strict()]
"""An ISO 8601 string with a timezone offset (``Z`` or ``+02:00``).

Strict: epoch numbers are refused, because seconds and milliseconds cannot be told apart
reliably; naive times are refused, because their meaning depends on the producer's machine.
"""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_CENTS: Final = 2


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside the representable UTC range") from None


UtcTime = Annotated[AwareDatetime, Strict(), AfterValidator(_as_utc)]
"""An aware time normalised to UTC: outputs are byte-identical however the core built them."""


def epoch_ms(value: datetime) -> int:
    """Epoch milliseconds (UTC) of an aware time, exactly (no float rounding); floors sub-ms."""
    return (value - _EPOCH) // _ONE_MS


def to_cents(value: Decimal) -> int:
    """Integer cents, rounded half-to-even (banker's rounding: unbiased over many orders)."""
    return int(value.scaleb(_CENTS).to_integral_value(rounding=ROUND_HALF_EVEN))
