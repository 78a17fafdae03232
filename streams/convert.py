"""Wire contract ↔ core: the only place that knows both ``schemas`` and ``streams.domain``.

Inputs become facts in the core's units (epoch ms, integer cents); core outputs become the
published events. Kept free of Kafka and Faust so that the worker, replay references and
benchmarks convert identically.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeGuard

import orjson

from schemas import (
    ChurnAlert,
    Interaction,
    ProfileSnapshot,
    Purchase,
    RetentionOffer,
    RfmScores,
    SegmentChange,
    amount_cents,
    epoch_ms,
    occurred_at_ms,
    to_json_bytes,
)
from schemas.common import CURRENCY_PATTERN, ID_PATTERN, TOKEN_PATTERN, to_cents
from schemas.decode import Limits
from schemas.decode import _json_problem as json_problem
from schemas.inputs import MAX_PROPERTY_KEYS
from schemas.outputs import OfferOutcome as OfferOutcomeWire
from streams.domain.events import ChurnRiskRaised, OfferOutcome, Profile, SegmentChanged
from streams.domain.facts import InteractionFact, PurchaseFact, PurchaseKind
from streams.domain.offers import OfferDecision, Trigger
from streams.domain.rules import Rules


def utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def purchase_fact(event: Purchase) -> PurchaseFact:
    return PurchaseFact(
        event_id=event.event_id,
        customer_id=event.customer_id,
        at_ms=occurred_at_ms(event),
        order_id=event.order_id,
        amount_cents=amount_cents(event),
        kind=PurchaseKind.REFUND if event.type == "refund" else PurchaseKind.PURCHASE,
    )


def interaction_fact(event: Interaction) -> InteractionFact:
    return InteractionFact(
        event_id=event.event_id,
        customer_id=event.customer_id,
        at_ms=occurred_at_ms(event),
        kind=str(event.type),
    )


# --- inputs: a fast path for the common payload ----------------------------------------------
#
# ``decode_purchase`` / ``decode_interaction`` (pydantic, then the limit checks) remain the
# contract. Most payloads are plain: the required fields and a few optional ones, ASCII ids,
# an ISO time with Z or an offset, an amount with at most 4 decimals. For those the functions
# below read the fact with orjson and a few checks, each at least as strict as the models';
# anything else (an extra or unknown field, a non-ASCII id, a null, an odd number or time
# format, anything out of limits) returns None and the caller takes the full decoder, which
# accepts it or writes the dead letter with its usual reason. So a fast fact is always the
# fact the full path gives (a property test compares them on valid and broken payloads).

_ID: Final = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_TOKEN: Final = re.compile(TOKEN_PATTERN.removeprefix("^").removesuffix("$"))
_CURRENCY: Final = re.compile(CURRENCY_PATTERN.removeprefix("^").removesuffix("$"))
_TIME: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_PURCHASE_KEYS: Final = frozenset(
    {"schema_version", "event_id", "customer_id", "occurred_at", "type", "order_id"}
    | {"amount", "currency"}
)
_INTERACTION_KEYS: Final = frozenset(
    {"schema_version", "event_id", "customer_id", "occurred_at", "type", "channel", "properties"}
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def _plain_id(value: object, longest: int = 128) -> TypeGuard[str]:
    """ID_PATTERN for ASCII text: printable (no control character), no space at either end.

    For ASCII this is the pattern exactly: its whitespace other than the space is control
    characters. Non-ASCII ids take the full decoder.
    """
    return (
        type(value) is str
        and 0 < len(value) <= longest
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )


# values seen to match each pattern (interaction types, currencies: a handful each)
_SEEN: dict[re.Pattern[str], set[str]] = {}


def _token(value: object, pattern: re.Pattern[str]) -> TypeGuard[str]:
    if type(value) is not str:
        return False
    seen = _SEEN.setdefault(pattern, set())
    if value in seen:
        return True
    if not value.isascii() or pattern.fullmatch(value) is None:
        return False
    if len(seen) < 1_024:
        seen.add(value)
    return True


def _plain_time(value: object, now: datetime, limits: Limits) -> int | None:
    """Epoch ms of an ISO time in the common form within the limits' window, else None."""
    if (
        type(value) is not str
        or len(value) < 20
        or value[10] != "T"
        or not value.isascii()
        or _TIME.fullmatch(value) is None
    ):
        return None
    try:
        at = datetime.fromisoformat(value)
        since_earliest = at - limits.earliest
    except (ValueError, OverflowError):
        return None
    if since_earliest < _ZERO or since_earliest > now - limits.earliest + limits.max_future:
        return None
    return (at - _EPOCH) // _MS


_ZERO: Final = timedelta(0)


def _plain_cents(value: object, limits: Limits) -> int | None:
    """Integer cents of a plain non-negative amount up to the limit, else None.

    pydantic reads a JSON number into a float and the float into a Decimal by its shortest
    text, so ``repr`` gives the same value here. Up to 2 decimals the cents are exact
    integers; 3 or 4 round half-even as ``to_cents`` does.
    """
    if type(value) is int:
        cents = value * 100
    elif type(value) is float or type(value) is str:
        text = repr(value) if type(value) is float else str(value)
        whole, dot, fraction = text.partition(".")
        if not (
            text.isascii()
            and 0 < len(whole) <= 15
            and whole.isdigit()
            and (not dot or (0 < len(fraction) <= 4 and fraction.isdigit()))
        ):
            return None
        if len(fraction) > 2:
            amount = Decimal(text)
            return to_cents(amount) if amount <= limits.max_amount else None
        cents = int(whole) * 100 + (int(fraction.ljust(2, "0")) if fraction else 0)
    else:
        return None
    if cents < 0 or cents > _max_cents(limits):
        return None
    return cents


_LIMIT_CENTS: dict[int, tuple[Limits, int]] = {}


def _max_cents(limits: Limits) -> int:
    """Whole cents of ``max_amount``, rounded down: for whole cents, above one is above both."""
    cached = _LIMIT_CENTS.get(id(limits))
    if cached is None or cached[0] is not limits:
        cents = math.floor(limits.max_amount * 100)
        cached = _LIMIT_CENTS[id(limits)] = (limits, cents)
    return cached[1]


def fast_purchase(raw: bytes, now: datetime, limits: Limits) -> tuple[PurchaseFact, str] | None:
    """(fact, currency) of a plain, valid purchase payload; None: use ``decode_purchase``."""
    if len(raw) > limits.max_payload_bytes or b'"line_items"' in raw or b'"margin"' in raw:
        return None  # (margin, cost and line items are left to the decoder: declined early)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _PURCHASE_KEYS.issuperset(data):
        return None
    kind = data.get("type", "purchase")
    version = data.get("schema_version", 1)
    event_id, customer_id, order_id = (
        data.get("event_id"),
        data.get("customer_id"),
        data.get("order_id"),
    )
    currency = data.get("currency")
    if (
        (kind != "purchase" and kind != "refund")
        or type(version) is not int
        or version != 1
        or not _plain_id(event_id)
        or not _plain_id(customer_id)
        or not _plain_id(order_id)
        or not _token(currency, _CURRENCY)
    ):
        return None
    at_ms = _plain_time(data.get("occurred_at"), now, limits)
    cents = _plain_cents(data.get("amount"), limits)
    if at_ms is None or cents is None:
        return None
    fact = PurchaseFact(
        event_id=event_id,
        customer_id=customer_id,
        at_ms=at_ms,
        order_id=order_id,
        amount_cents=cents,
        kind=PurchaseKind.REFUND if kind == "refund" else PurchaseKind.PURCHASE,
    )
    return fact, currency


def fast_interaction(raw: bytes, now: datetime, limits: Limits) -> InteractionFact | None:
    """The fact of a plain, valid interaction payload; None: use ``decode_interaction``."""
    if len(raw) > limits.max_payload_bytes:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _INTERACTION_KEYS.issuperset(data):
        return None
    kind = data.get("type")
    version = data.get("schema_version", 1)
    event_id, customer_id = data.get("event_id"), data.get("customer_id")
    channel = data.get("channel")
    if (
        not _token(kind, _TOKEN)
        or type(version) is not int
        or version != 1
        or not _plain_id(event_id)
        or not _plain_id(customer_id)
        or (channel is not None and not _plain_id(channel, 64))
        or not _plain_properties(data.get("properties", _NO_PROPERTIES), limits)
    ):
        return None
    at_ms = _plain_time(data.get("occurred_at"), now, limits)
    if at_ms is None:
        return None
    return InteractionFact(event_id=event_id, customer_id=customer_id, at_ms=at_ms, kind=kind)


_NO_PROPERTIES: Final[dict[str, Any]] = {}


def _plain_properties(value: object, limits: Limits) -> bool:
    """What the model and ``decode_interaction``'s checks accept, for ASCII keys."""
    if type(value) is not dict:
        return False
    if not value:
        return True
    return (
        len(value) <= MAX_PROPERTY_KEYS
        and all(_plain_id(key, 64) for key in value)
        and json_problem(value, 1) is None
        and len(orjson.dumps(value)) <= limits.max_properties_bytes
    )


def snapshot(profile: Profile, rules: Rules) -> ProfileSnapshot:
    """The profile part of an output, in the vocabulary of marketing tools."""
    return ProfileSnapshot(
        first_purchase_at=utc(profile.first_purchase_ms),
        last_purchase_at=utc(profile.last_purchase_ms),
        purchase_count=profile.purchase_count,
        repeat_days=profile.repeat_days,
        monetary_window_cents=profile.monetary_window_cents,
        frequency_window=profile.frequency_window,
        window_days=rules.windows.short_days,
        mean_order_value_cents=profile.mean_order_value_cents,
        avg_days_between_purchases=profile.avg_days_between_purchases,
        expected_next_purchase_at=utc(profile.expected_next_purchase_ms),
        p_alive=profile.p_alive,
        churn_risk_band=profile.churn_risk_band,
        days_since_last_purchase=profile.days_since_last_purchase,
        engagement=profile.engagement,
        last_interaction_at=utc(profile.last_interaction_ms),
        tenure_days=profile.tenure_days,
    )


def _scores(profile: Profile) -> RfmScores:
    assert profile.scores is not None
    r, f, m = profile.scores
    return RfmScores(recency=r, frequency=f, monetary=m)


def segment_change(event: SegmentChanged, rules: Rules) -> SegmentChange:
    p = event.profile
    assert p.rfm_segment is not None
    assert p.quadrant is not None
    return SegmentChange(
        id=event.id,
        customer_id=event.customer_id,
        event_time=_utc(event.at_ms),
        model_version=p.model_version,
        cause=event.cause,
        dimension=event.dimension,
        from_value=event.from_value,
        to_value=event.to_value,
        scores=_scores(p),
        quadrant=p.quadrant,
        rfm_segment=p.rfm_segment,
        profile=snapshot(p, rules),
    )


def churn_alert(event: ChurnRiskRaised, rules: Rules) -> ChurnAlert:
    p = event.profile
    assert p.rfm_segment is not None
    assert p.quadrant is not None
    return ChurnAlert(
        id=event.id,
        customer_id=event.customer_id,
        event_time=_utc(event.at_ms),
        model_version=p.model_version,
        cause=event.cause,
        severity=event.severity,
        p_alive=event.p_alive,
        elapsed_days=event.elapsed_days,
        typical_gap_days=event.typical_gap_days,
        quadrant=p.quadrant,
        rfm_segment=p.rfm_segment,
        true_friend_drifting=event.true_friend_drifting,
        profile=snapshot(p, rules),
    )


# --- outputs as bytes, without validating them again --------------------------------------
#
# The core's values already satisfy the output contract (the property tests check every
# output it makes against the models), so on the hot path the JSON is written directly: the
# same keys in the models' field order, datetimes and floats in the same notation as
# pydantic's serializer (orjson's UTC "Z" form and shortest round-trip floats). The result is
# byte-identical to ``to_json_bytes(segment_change(...))``, which tests assert over many
# logs, at a fraction of the cost. A non-finite float, which the models refuse, takes the
# validated path so it fails exactly as before.

_DUMPS = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


def _snapshot_dict(p: Profile, window_days: int) -> dict[str, Any]:
    return {
        "first_purchase_at": utc(p.first_purchase_ms),
        "last_purchase_at": utc(p.last_purchase_ms),
        "purchase_count": p.purchase_count,
        "repeat_days": p.repeat_days,
        "monetary_window_cents": p.monetary_window_cents,
        "frequency_window": p.frequency_window,
        "window_days": window_days,
        "mean_order_value_cents": p.mean_order_value_cents,
        "avg_days_between_purchases": p.avg_days_between_purchases,
        "expected_next_purchase_at": utc(p.expected_next_purchase_ms),
        "p_alive": p.p_alive,
        "churn_risk_band": p.churn_risk_band,
        "days_since_last_purchase": p.days_since_last_purchase,
        "engagement": p.engagement,
        "last_interaction_at": utc(p.last_interaction_ms),
        "tenure_days": p.tenure_days,
    }


def _finite(*values: float | None) -> bool:
    """No value is infinite or NaN (None is fine): a plain loop, called twice per output."""
    total = 0.0
    for value in values:
        if value is not None:
            total += value
    return math.isfinite(total)


def segment_change_json(event: SegmentChanged, rules: Rules) -> bytes:
    """``to_json_bytes(segment_change(event, rules))``, byte for byte, without validation."""
    p = event.profile
    if (
        p.scores is None
        or p.rfm_segment is None
        or p.quadrant is None
        or not _finite(
            p.avg_days_between_purchases, p.p_alive, p.days_since_last_purchase, p.tenure_days
        )
    ):
        return to_json_bytes(segment_change(event, rules))
    r, f, m = p.scores
    return _DUMPS(
        {
            "type": "segment_change",
            "schema_version": 1,
            "id": event.id,
            "customer_id": event.customer_id,
            "event_time": _utc(event.at_ms),
            "model_version": p.model_version,
            "cause": event.cause,
            "dimension": event.dimension,
            "from_value": event.from_value,
            "to_value": event.to_value,
            "scores": {"recency": r, "frequency": f, "monetary": m},
            "quadrant": p.quadrant,
            "rfm_segment": p.rfm_segment,
            "profile": _snapshot_dict(p, rules.windows.short_days),
        },
        option=_UTC_Z,
    )


def churn_alert_json(event: ChurnRiskRaised, rules: Rules) -> bytes:
    """``to_json_bytes(churn_alert(event, rules))``, byte for byte, without validation."""
    p = event.profile
    if (
        p.rfm_segment is None
        or p.quadrant is None
        or not _finite(
            event.p_alive,
            event.elapsed_days,
            event.typical_gap_days,
            p.avg_days_between_purchases,
            p.p_alive,
            p.days_since_last_purchase,
            p.tenure_days,
        )
    ):
        return to_json_bytes(churn_alert(event, rules))
    return _DUMPS(
        {
            "type": "churn_alert",
            "schema_version": 1,
            "id": event.id,
            "customer_id": event.customer_id,
            "event_time": _utc(event.at_ms),
            "model_version": p.model_version,
            "cause": event.cause,
            "severity": event.severity,
            "p_alive": event.p_alive,
            "elapsed_days": event.elapsed_days,
            "typical_gap_days": event.typical_gap_days,
            "quadrant": p.quadrant,
            "rfm_segment": p.rfm_segment,
            "true_friend_drifting": event.true_friend_drifting,
            "profile": _snapshot_dict(p, rules.windows.short_days),
        },
        option=_UTC_Z,
    )


def trigger_of(event: SegmentChange | ChurnAlert) -> Trigger | None:
    """The offer-policy trigger a published output amounts to (read back by the offers agent)."""
    at = epoch_ms(event.event_time)
    if isinstance(event, SegmentChange):
        # an import states where a customer is (from_value None); it is not a move to act on
        if event.dimension != "quadrant" or event.cause == "import":
            return None
        return Trigger(event.id, event.customer_id, at, "entered", event.to_value)
    return Trigger(event.id, event.customer_id, at, "drifting", event.quadrant, event.severity)


def retention_offer(decision: OfferDecision, trigger: SegmentChange | ChurnAlert) -> RetentionOffer:
    return RetentionOffer(
        id=decision.id,
        customer_id=decision.customer_id,
        event_time=_utc(decision.at_ms),
        model_version=trigger.model_version,
        cause=trigger.cause,
        offer_code=decision.offer_code,
        decision=decision.decision,
        reason=decision.reason,
        quadrant=decision.quadrant,
        trigger_id=decision.trigger_id,
        expires_at=utc(decision.expires_at_ms),
        channel=decision.channel,
        profile=trigger.profile,
    )


def offer_outcome(event: OfferOutcome) -> OfferOutcomeWire:
    """The wire form of an offer outcome (a few per customer per year: validated)."""
    return OfferOutcomeWire(
        id=event.id,
        customer_id=event.customer_id,
        event_time=_utc(event.at_ms),
        offer_id=event.offer_id,
        trigger_id=event.trigger_id,
        decided_at=_utc(event.decided_ms),
        window_days=event.window_days,
        arm=event.arm,
        offer_code=event.offer_code,
        quadrant=event.quadrant,
        trigger=event.trigger,
        converted=event.converted,
        purchases=event.purchases,
        refunds=event.refunds,
        net_revenue_cents=event.net_cents,
        first_purchase_at=utc(event.first_purchase_ms),
        days_to_first_purchase=event.days_to_first_purchase,
    )


def offer_outcome_json(event: OfferOutcome) -> bytes:
    return to_json_bytes(offer_outcome(event))
