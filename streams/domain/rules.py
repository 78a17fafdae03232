"""Business rules as configuration: a TOML file validated by pydantic.

Every threshold a marketing team may want to tune lives here, not in code: rolling windows,
allowed lateness, the named RFM segment map, the loyalty and profitability tests, hysteresis,
churn severity levels and the offer policy per quadrant. ``rules.toml`` beside this module
holds the defaults; ``load_rules(path)`` reads a user's file with the same shape.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Quadrant = Literal["stranger", "butterfly", "true_friend", "barnacle"]
QUADRANTS: tuple[Quadrant, ...] = ("stranger", "butterfly", "true_friend", "barnacle")
Severity = Literal["watch", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("watch", "warning", "critical")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoreRange(_Strict):
    """An inclusive range of 1–5 scores."""

    min: int = Field(1, ge=1, le=5)
    max: int = Field(5, ge=1, le=5)

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min > self.max:
            raise ValueError(f"score range min {self.min} is above max {self.max}")
        return self

    def holds(self, score: int) -> bool:
        return self.min <= score <= self.max


class SegmentRule(_Strict):
    """One named RFM segment: the first rule (in file order) whose ranges all hold wins."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    recency: ScoreRange = ScoreRange()
    frequency: ScoreRange = ScoreRange()
    monetary: ScoreRange = ScoreRange()


class WindowRules(_Strict):
    """Rolling windows, measured in event time, kept as sparse buckets per customer."""

    bucket_days: int = Field(7, ge=1, le=31, description="width of one bucket")
    short_days: int = Field(91, ge=1, description="window of the F and M scores")
    long_days: int = Field(364, ge=1, description="window of loyalty and profitability")
    engagement_days: int = Field(28, ge=1, description="window of interaction counts")

    @model_validator(mode="after")
    def _fits(self) -> WindowRules:
        if not self.short_days <= self.long_days:
            raise ValueError("windows.short_days must not exceed windows.long_days")
        if self.engagement_days > self.long_days:
            raise ValueError("windows.engagement_days must not exceed windows.long_days")
        for name in ("short_days", "long_days", "engagement_days"):
            if getattr(self, name) % self.bucket_days:
                raise ValueError(f"windows.{name} must be a multiple of bucket_days")
        return self

    @property
    def short_buckets(self) -> int:
        return self.short_days // self.bucket_days

    @property
    def long_buckets(self) -> int:
        return self.long_days // self.bucket_days

    @property
    def engagement_buckets(self) -> int:
        return self.engagement_days // self.bucket_days


class HysteresisRules(_Strict):
    """How far past a boundary a value must go before a score or quadrant changes."""

    relative: float = Field(0.05, ge=0, le=0.5, description="share of the boundary value")
    recency_days: float = Field(1.0, ge=0, description="minimum margin for recency")


class LoyaltyRules(_Strict):
    """Behavioural loyalty: enough repeat purchases over enough tenure, and still alive."""

    min_repeat_days: int = Field(2, ge=1, description="a first-time buyer is not loyal")
    min_tenure_days: float = Field(60, ge=0)
    min_p_alive: float = Field(
        0.0, ge=0, le=1, description="BG/NBD P(alive) floor on top of 'not drifting critically'"
    )


class DriftRules(_Strict):
    """Churn severity from the expected purchases over the horizon (see
    :mod:`streams.domain.drift`): BG/NBD's conditional expectation, with the customer's own
    rhythm in P(alive) when it is regular. A level is raised when the expectation falls below
    it and below a share of the customer's own past rate.
    """

    expected_watch: float = Field(0.5, gt=0, description="expected purchases in the horizon")
    expected_warning: float = Field(0.25, gt=0)
    expected_critical: float = Field(0.1, gt=0)
    max_share_of_own_rate: float = Field(
        0.5, gt=0, le=1, description="...and below this share of the own past rate"
    )
    min_repeat_days_for_rhythm: int = Field(
        1, ge=1, description="repeat purchase days needed for a rate of one's own"
    )
    prior_gaps: float = Field(
        4.0, ge=0, description="weight (in gaps) of a Poisson-like spread in the own rhythm"
    )
    rhythm_min_gaps: int = Field(
        2, ge=1, description="gaps (repeat purchase days) before the own rhythm is trusted"
    )
    rhythm_max_cv: float = Field(
        0.6, ge=0, description="gap CV up to which the own rhythm is trusted for P(alive)"
    )
    horizon_days: int = Field(90, ge=1, description="churn risk = P(no purchase in horizon)")

    @model_validator(mode="after")
    def _ordered(self) -> DriftRules:
        if not self.expected_watch > self.expected_warning > self.expected_critical:
            raise ValueError("drift expected-purchase levels must fall: watch > warning > critical")
        return self


class OfferRule(_Strict):
    """What to offer a quadrant on one kind of trigger; ``offer_code = ""`` is 'no offer'."""

    quadrant: Quadrant
    trigger: Literal["entered", "drifting"]
    min_severity: Severity = "watch"
    offer_code: str = Field("", max_length=64)
    channel: str = Field("email", max_length=32)
    valid_days: int = Field(14, ge=1, le=365)
    reason: str = Field(min_length=1, max_length=200)
    outcome_window_days: int | None = Field(
        None,
        ge=1,
        le=365,
        description="days after the decision in which a purchase counts as the offer's "
        "outcome (None: the policy's outcome_window_days)",
    )


class OfferRules(_Strict):
    """Frequency caps, cooldown and a deterministic holdout group for measuring lift."""

    cooldown_days: float = Field(14, ge=0)
    cap_count: int = Field(3, ge=1)
    cap_days: float = Field(90, gt=0)
    holdout_percent: float = Field(10, ge=0, le=100)
    holdout_salt: str = "rfm-stream"
    outcome_window_days: int = Field(
        30,
        ge=1,
        le=365,
        description="default outcome window: a purchase within this many days of an offer "
        "(or a holdout decision) counts as its outcome",
    )
    rules: tuple[OfferRule, ...] = ()

    def window_days(self, rule: OfferRule) -> int:
        """The outcome window of one policy rule."""
        return rule.outcome_window_days or self.outcome_window_days


class Rules(_Strict):
    """The whole rule book; one instance is shared by every customer on a worker."""

    allowed_lateness_seconds: float = Field(
        5.0, ge=0, le=30 * 86_400, description="grace for out-of-order events per partition"
    )
    late_horizon_days: float = Field(
        30.0,
        ge=0,
        le=366,
        description="late purchases and refunds up to this far behind closed event time are "
        "folded in as corrections; older ones are dead-lettered (0: none)",
    )
    windows: WindowRules = WindowRules()
    hysteresis: HysteresisRules = HysteresisRules()
    loyalty: LoyaltyRules = LoyaltyRules()
    drift: DriftRules = DriftRules()
    segments: tuple[SegmentRule, ...] = Field(min_length=1)
    fallback_segment: str = "unclassified"
    offers: OfferRules = OfferRules()

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_seconds * 1000)

    @property
    def late_horizon_ms(self) -> int:
        return int(self.late_horizon_days * 86_400_000)

    @model_validator(mode="after")
    def _unique_names(self) -> Rules:
        names = [s.name for s in self.segments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"segment names must be unique; repeated: {', '.join(dupes)}")
        return self


def load_rules(path: str | Path | None = None) -> Rules:
    """Read and validate a rules file (the packaged defaults when ``path`` is None)."""
    if path is None:
        text = resources.files("streams.domain").joinpath("rules.toml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return Rules.model_validate(tomllib.loads(text))
