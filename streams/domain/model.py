"""The population model as data: quantile cut points, split points and BG/NBD parameters.

Every classification is relative to the whole population, so these numbers are fitted from all
customers at once (:func:`calibrate`), versioned by a hash of their content, published on the
model topic and read by every worker. A replay with a fixed model is deterministic.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.domain.churn import BgNbdParams, fit_bgnbd
from streams.domain.facts import day_of
from streams.domain.rules import Rules
from streams.domain.state import CustomerState

Cuts = tuple[float, float, float, float]
QUINTILES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True, slots=True)
class Model:
    """Population-relative parameters; ``version`` is derived from the content."""

    recency_cuts_days: Cuts
    frequency_cuts: Cuts
    monetary_cuts_cents: Cuts
    profit_split_cents: float
    loyalty_split_orders: float
    bgnbd: BgNbdParams
    fitted_at_ms: int | None = None
    population: int = 0
    bgnbd_converged: bool = True
    version: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("recency_cuts_days", "frequency_cuts", "monetary_cuts_cents"):
            cuts = getattr(self, name)
            if len(cuts) != 4 or any(b < a for a, b in itertools.pairwise(cuts)):
                raise ValueError(f"model {name} must be 4 ascending cut points, got {cuts!r}")
        if not self.version:
            object.__setattr__(self, "version", self._content_version())

    def _content(self) -> dict[str, Any]:
        return {
            "recency_cuts_days": list(self.recency_cuts_days),
            "frequency_cuts": list(self.frequency_cuts),
            "monetary_cuts_cents": list(self.monetary_cuts_cents),
            "profit_split_cents": self.profit_split_cents,
            "loyalty_split_orders": self.loyalty_split_orders,
            "bgnbd": {
                "r": self.bgnbd.r,
                "alpha": self.bgnbd.alpha,
                "a": self.bgnbd.a,
                "b": self.bgnbd.b,
            },
            "fitted_at_ms": self.fitted_at_ms,
            "population": self.population,
            "bgnbd_converged": self.bgnbd_converged,
        }

    def _content_version(self) -> str:
        digest = hashlib.sha256(orjson.dumps(self._content(), option=orjson.OPT_SORT_KEYS))
        return "m-" + digest.hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self._content()}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Model:
        """Rebuild a published model; the version is recomputed and must match."""
        p = data["bgnbd"]
        model = cls(
            recency_cuts_days=_cuts(data["recency_cuts_days"]),
            frequency_cuts=_cuts(data["frequency_cuts"]),
            monetary_cuts_cents=_cuts(data["monetary_cuts_cents"]),
            profit_split_cents=float(data["profit_split_cents"]),
            loyalty_split_orders=float(data["loyalty_split_orders"]),
            bgnbd=BgNbdParams(float(p["r"]), float(p["alpha"]), float(p["a"]), float(p["b"])),
            fitted_at_ms=data.get("fitted_at_ms"),
            population=int(data.get("population", 0)),
            bgnbd_converged=bool(data.get("bgnbd_converged", True)),
        )
        claimed = data.get("version")
        if claimed and claimed != model.version:
            raise ValueError(
                f"model version {claimed} does not match its content ({model.version})"
            )
        return model

    @classmethod
    def from_json(cls, raw: bytes) -> Model:
        return cls.from_dict(orjson.loads(raw))


def _cuts(values: Iterable[float]) -> Cuts:
    v = [float(x) for x in values]
    if len(v) != 4:
        raise ValueError(f"expected 4 cut points, got {len(v)}")
    return (v[0], v[1], v[2], v[3])


def default_model() -> Model:
    """The cold-start model, used until the first calibration is published.

    Cut points are plain retail rules of thumb; BG/NBD parameters are the CDNOW estimates
    (Fader, Hardie & Lee 2005) with ``alpha`` moved from weeks to days.
    """
    return Model(
        recency_cuts_days=(14.0, 30.0, 60.0, 120.0),
        frequency_cuts=(1.0, 2.0, 3.0, 5.0),
        monetary_cuts_cents=(2_000.0, 5_000.0, 10_000.0, 25_000.0),
        profit_split_cents=10_000.0,
        loyalty_split_orders=4.0,
        bgnbd=BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426).rescale_time(7.0),
    )


def calibrate(
    states: Iterable[CustomerState], at_ms: int, rules: Rules, previous: Model | None = None
) -> Model:
    """Fit a new model from every customer's state as of ``at_ms`` (one pass, all partitions).

    Customers with no purchase yet carry no RFM information and are left out. When the
    BG/NBD fit does not converge, the previous (or default) parameters are kept and the model
    says so (``bgnbd_converged = False``), rather than publishing a bad fit.
    """
    w = rules.windows
    recency, freq, money, long_money, long_orders = [], [], [], [], []
    xs, txs, ages = [], [], []
    at_day = day_of(at_ms)
    for s in states:
        if s.first_ms is None or s.last_ms is None or s.first_ms > at_ms:
            continue
        recency.append((at_ms - s.last_ms) / 86_400_000)
        n, c = s.window_totals(at_ms, w.bucket_days, w.short_buckets)
        freq.append(n)
        money.append(max(c, 0))
        ln, lc = s.window_totals(at_ms, w.bucket_days, w.long_buckets)
        long_orders.append(ln)
        long_money.append(max(lc, 0))
        xs.append(s.repeat_days)
        txs.append(s.t_x_days)
        ages.append(at_day - day_of(s.first_ms))
    if not recency:
        raise ValueError("cannot calibrate: no customer has purchased yet")
    fallback = (previous or default_model()).bgnbd
    params, converged = fallback, False
    if any(xs):
        fit = fit_bgnbd(np.array(xs), np.array(txs), np.array(ages, dtype=float))
        if fit.converged:
            params, converged = fit.params, True
    return Model(
        recency_cuts_days=_quintiles(recency),
        frequency_cuts=_quintiles(freq),
        monetary_cuts_cents=_quintiles(money),
        profit_split_cents=float(np.median(long_money)),
        loyalty_split_orders=float(np.median(long_orders)),
        bgnbd=params,
        fitted_at_ms=at_ms,
        population=len(recency),
        bgnbd_converged=converged,
    )


def _quintiles(values: list[float] | list[int]) -> Cuts:
    q = np.quantile(np.asarray(values, dtype=float), QUINTILES)
    return _cuts(round(float(v), 6) for v in q)
