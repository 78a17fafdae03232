"""BG/NBD churn model: P(alive), its threshold crossing, expected purchases, and the fit.

The BG/NBD model (Fader, Hardie & Lee 2005) describes every customer with a purchase rate
``λ ~ Gamma(r, α)`` while alive and a dropout probability ``p ~ Beta(a, b)`` taken right after
each repeat purchase. A customer's history is summarised by

* ``x``   — number of repeat purchases: purchase days after the first (the state's
  ``repeat_days``),
* ``t_x`` — time from the first to the last purchase,
* ``T``   — time from the first purchase to the evaluation time.

All times share one unit; the stream uses **days**, and ``alpha`` carries that unit. Nothing
here reads a clock or draws random numbers: the evaluation time is always an argument, so
P(alive) moves with time alone simply by calling again with a larger ``T``.

The per-customer functions (:func:`p_alive` above all) run on the event hot path and use plain
:mod:`math`; numpy and scipy are only used for the 2F1 term and for the population fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import digamma, gammaln
from scipy.special.cython_special import hyp2f1 as _hyp2f1_real

FloatArray = npt.NDArray[np.float64]
ChurnRiskBand = Literal["low", "medium", "high"]

# Churn-risk band edges, as marketing tools show "no purchase in the next 90 days".
LOW_RISK_BELOW = 0.33
HIGH_RISK_ABOVE = 0.66

# Half-width of the band around the removable singularities of the expected-purchases closed
# form (a = 1, and a + b + x - 1 = 0) where the value is interpolated from both edges; the
# interpolation error is O(h²) ≈ 1e-10 and the cancellation error at the edges ~1e-11.
_SINGULARITY_STEP = 1e-5

# BFGS aims for a gradient of the mean negative log-likelihood (in log-parameters) below
# _FIT_GTOL, ten times tighter than lifetimes' default; tighter only burns evaluations in
# floating-point noise. A stop for "precision loss" still counts as converged when the
# gradient is below _FIT_CONVERGED_GRADIENT: the parameters are then stationary for practical
# purposes.
_FIT_GTOL = 1e-8
_FIT_CONVERGED_GRADIENT = 1e-6
_FIT_MAX_ITERATIONS = 1000
# Parameters (in the internal time scale, oldest customer T = 1) beyond e^±15 mean the
# likelihood keeps improving towards 0 or infinity: the data cannot identify the model (too
# few customers, or no dropout signal), so such a stop is not reported as converged.
_FIT_MAX_ABS_LOG_PARAM = 15.0

# Relative step in c used where scipy's hyp2f1 fails (c - a - b a whole number).
_HYP2F1_C_STEP = 1e-9

# exp() of anything larger overflows a float; crossings that far out are treated as "never".
_MAX_EXP_ARG = 700.0


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Population parameters of the BG/NBD model.

    ``r`` and ``alpha`` shape the Gamma distribution of purchase rates (``alpha`` is in the
    time unit of ``t_x`` and ``T``); ``a`` and ``b`` shape the Beta distribution of the
    dropout probability. All four must be finite and strictly positive.
    """

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"BG/NBD parameter {name} must be finite and > 0, got {value!r}")

    def rescale_time(self, new_units_per_old_unit: float) -> BgNbdParams:
        """The same model in another time unit, e.g. ``rescale_time(7)`` turns weeks into days.

        Only ``alpha`` (a time scale) changes; ``r``, ``a`` and ``b`` are unit-free.
        """
        if not (math.isfinite(new_units_per_old_unit) and new_units_per_old_unit > 0):
            raise ValueError("the time-unit factor must be finite and > 0")
        return BgNbdParams(self.r, self.alpha * new_units_per_old_unit, self.a, self.b)


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    """Result of :func:`fit_bgnbd`.

    ``log_likelihood`` is the total (weighted) log-likelihood in the caller's time unit, the
    figure papers report (e.g. -9582.4 for the CDNOW sample in weeks). ``n_customers`` is
    the total weight. ``converged`` is true when the optimizer stopped at an interior
    optimum: every component of the gradient of the mean negative log-likelihood (in
    log-parameters) is at most 1e-6, no parameter ran off towards 0 or infinity (which is
    what too little or degenerate data does), and at least one customer is a repeat buyer.
    When false, callers should keep the parameters they already distribute rather than
    publish these.
    """

    params: BgNbdParams
    log_likelihood: float
    n_customers: int
    converged: bool
    iterations: int
    message: str


def _check_history(x: int, t_x: float, T: float) -> None:
    """Reject histories no customer can have; cheap enough for the hot path."""
    if x < 0 or t_x < 0 or t_x > T:
        raise ValueError(
            f"invalid purchase history: need x >= 0 and 0 <= t_x <= T, got x={x}, t_x={t_x}, T={T}"
        )


def p_alive(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """Probability that the customer is still active at age ``T``.

    ``1 / (1 + a/(b+x-1) · ((α+T)/(α+t_x))^(r+x))`` for ``x > 0`` and exactly 1 for ``x = 0``
    (in BG/NBD a customer can only drop out right after a repeat purchase), as in Fader,
    Hardie & Lee (2005) and ``lifetimes``' ``conditional_probability_alive``. It works on the
    log-odds so that large ``x`` or ``T`` never overflow; the result can underflow to 0.0
    only when the odds of being alive fall below ~1e-308.
    """
    # Inlined checks and formula: this is the per-event hot path, where calls cost.
    if x < 0 or t_x < 0 or t_x > T:
        _check_history(x, t_x, T)
    if x == 0:
        return 1.0
    alpha = params.alpha
    log_odds = (params.r + x) * math.log((alpha + T) / (alpha + t_x)) + math.log(
        params.a / (params.b + x - 1)
    )
    if log_odds > 0.0:
        odds_alive = math.exp(-log_odds)
        return odds_alive / (1.0 + odds_alive)
    return 1.0 / (1.0 + math.exp(log_odds))


def days_until_p_alive_below(
    params: BgNbdParams, x: int, t_x: float, T: float, threshold: float
) -> float | None:
    """Customer age at which P(alive) falls to ``threshold`` if no purchase comes first.

    Returns an absolute age (same unit as ``T``: time since the first purchase), so the wait
    from now is ``result - T``; this lets a scheduler set one timer per customer instead of
    re-evaluating everyone. Returns ``T`` itself when P(alive) is already at or below the
    threshold, and ``None`` when it never gets there (``x = 0`` stays at 1, or the crossing
    lies beyond any representable time).

    Derivation: with ``k = a/(b+x-1)`` and ``P = 1/(1 + k·((α+T')/(α+t_x))^(r+x))``,
    ``P = θ`` ⇔ ``k·((α+T')/(α+t_x))^(r+x) = 1/θ - 1`` ⇔
    ``T' = (α+t_x)·exp([ln(1/θ - 1) - ln k] / (r+x)) - α``. P(alive) is strictly decreasing
    in ``T'`` for ``x > 0``, so this is the unique crossing, and it lies after ``T`` exactly
    when P(alive) at ``T`` is above ``θ``.
    """
    _check_history(x, t_x, T)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    if x == 0:
        return None
    if p_alive(params, x, t_x, T) <= threshold:
        return T
    log_target = math.log1p(-threshold) - math.log(threshold)
    exponent = (log_target - math.log(params.a / (params.b + x - 1))) / (params.r + x)
    if exponent > _MAX_EXP_ARG:
        return None
    crossing = t_x + (params.alpha + t_x) * math.expm1(exponent)
    return max(crossing, T)


def p_no_purchase_within(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """Probability of no purchase in the next ``t`` time units: the "churn risk" figure.

    Exact under BG/NBD. A customer only drops out right after a purchase, so a customer
    alive at ``T`` makes no purchase in ``(T, T+t]`` exactly when the purchase process has no
    arrival there, whatever would happen after that arrival. Given the history, the joint
    posterior weight of "alive at T" is proportional to ``(1-p)^x λ^x e^(-λT)``, so given
    alive, ``λ ~ Gamma(r+x, α+T)`` and ``E[e^(-λt)] = ((α+T)/(α+T+t))^(r+x)``. Hence

        P(no purchase in (T, T+t]) = 1 - P(alive) · (1 - ((α+T)/(α+T+t))^(r+x)).

    For a new customer (``x = t_x = T = 0``) this is the model's ``P(X(t) = 0)``,
    ``(α/(α+t))^r``.
    """
    _check_history(x, t_x, T)
    if t < 0:
        raise ValueError(f"horizon t must be >= 0, got {t}")
    buys_if_alive = -math.expm1(-(params.r + x) * math.log1p(t / (params.alpha + T)))
    return 1.0 - p_alive(params, x, t_x, T) * buys_if_alive


def churn_risk_band(p: float) -> ChurnRiskBand:
    """Band a churn probability the way marketing tools show it.

    Low below 0.33, high above 0.66, medium in between (both edges included).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"churn probability must lie in [0, 1], got {p}")
    if p < LOW_RISK_BELOW:
        return "low"
    if p > HIGH_RISK_ABOVE:
        return "high"
    return "medium"


def _hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss 2F1 from scipy, stepping around the inf it returns when c - a - b is an integer.

    The function is analytic in ``c``, so the mean at ``c ± 1e-9·|c|`` is accurate to ~1e-16
    relative (checked against a 50-digit series). Called through ``cython_special``: the
    same C function as the ``scipy.special.hyp2f1`` ufunc (same bits), without the ufunc's
    array machinery, which costs ~4 µs a call on the per-event path.
    """
    value = float(_hyp2f1_real(a, b, c, z))
    if math.isfinite(value):
        return value
    step = _HYP2F1_C_STEP * max(1.0, abs(c))
    value = 0.5 * (float(_hyp2f1_real(a, b, c - step, z)) + float(_hyp2f1_real(a, b, c + step, z)))
    if not math.isfinite(value):
        raise ArithmeticError(f"2F1({a}, {b}; {c}; {z}) is not finite")
    return value


def _expected_purchases_scale(
    r: float, alpha: float, a: float, b: float, t: float, x: int, T: float
) -> float:
    """Expected purchases in ``(T, T+t]`` divided by P(alive) (equation 10 of FHL 2005).

    ``(a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; z)]`` with
    ``z = t/(α+T+t)``. The 2F1 is taken through Euler's transformation, which turns the
    product into ``(1-z)^(a-1) · 2F1(a+b-1-r, a-1; a+b+x-1; z)``: the same value, but its
    upper parameters no longer grow with ``x`` so it stays finite for heavy buyers.
    """
    c = a + b + x - 1.0
    log_one_minus_z = -math.log1p(t / (alpha + T))
    hyp = _hyp2f1(a + b - 1.0 - r, a - 1.0, c, t / (alpha + T + t))
    # 1 - (1-z)^(a-1)·hyp, split so that neither part cancels needlessly; hyp may be
    # negative when a + b + x - 1 < 0.
    log_power = (a - 1.0) * log_one_minus_z
    one_minus_product = -math.expm1(log_power) - math.exp(log_power) * (hyp - 1.0)
    return c / (a - 1.0) * one_minus_product


def _across_singularity(f: Callable[[float], float], singular: float, value: float) -> float:
    """A smooth function near a removable singularity: interpolate between both sides, O(h²)."""
    low = f(singular - _SINGULARITY_STEP)
    high = f(singular + _SINGULARITY_STEP)
    share = (value - (singular - _SINGULARITY_STEP)) / (2.0 * _SINGULARITY_STEP)
    return low + (high - low) * share


def expected_purchases_if_alive(params: BgNbdParams, t: float, x: int, T: float) -> float:
    """Expected purchases in the next ``t`` time units for a customer alive at ``T``.

    The factor of :func:`expected_purchases` that multiplies P(alive) (it counts the dropouts
    that may follow the purchases to come); it does not depend on ``t_x``.
    """
    if t == 0:
        return 0.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < _SINGULARITY_STEP:
        return _across_singularity(
            lambda a_: _expected_purchases_scale(r, alpha, a_, b, t, x, T), 1.0, a
        )
    if abs(a + b + x - 1.0) < _SINGULARITY_STEP:
        return _across_singularity(
            lambda b_: _expected_purchases_scale(r, alpha, a, b_, t, x, T), 1.0 - a - x, b
        )
    return _expected_purchases_scale(r, alpha, a, b, t, x, T)


def expected_purchases(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """Expected number of purchases in the next ``t`` time units, given the history.

    The BG/NBD conditional expectation (FHL 2005, eq. 10; ``lifetimes``'
    ``conditional_expected_number_of_purchases_up_to_time``). Multiplied by the mean spend it
    gives the expected value used for predicted CLV. The closed form has removable
    singularities at ``a = 1`` and ``a + b + x - 1 = 0``; within 1e-5 of them the value is
    interpolated from both sides, within ~1e-9 relative.
    """
    _check_history(x, t_x, T)
    if t < 0:
        raise ValueError(f"horizon t must be >= 0, got {t}")
    if t == 0:
        return 0.0
    return p_alive(params, x, t_x, T) * expected_purchases_if_alive(params, t, x, T)


def average_days_between_purchases(x: int, t_x: float) -> float | None:
    """Average time between purchases (``t_x / x``), or ``None`` before a repeat purchase.

    This is what marketing tools call "average days between orders" when times are in days.
    """
    _check_history(x, t_x, t_x)
    return t_x / x if x > 0 else None


def purchase_rhythm_overdue(
    elapsed_days: float, mean_gap: float, std_gap: float, *, min_spread: float = 0.1
) -> float:
    """How late the current silence is against the customer's own purchase rhythm.

    Returns ``(elapsed - mean_gap) / spread`` — the number of the customer's typical
    deviations past their usual gap (negative while not yet due). ``spread`` is ``std_gap``
    floored at ``min_spread · mean_gap`` so that a perfectly regular buyer (``std_gap = 0``)
    or a single observed gap gives a finite, comparable figure.
    """
    if elapsed_days < 0 or mean_gap <= 0 or std_gap < 0 or min_spread <= 0:
        raise ValueError("need elapsed_days >= 0, mean_gap > 0, std_gap >= 0, min_spread > 0")
    return (elapsed_days - mean_gap) / max(std_gap, min_spread * mean_gap)


@dataclass(frozen=True, slots=True)
class _Population:
    """Fit inputs in the optimizer's time scale, with the per-customer constants hoisted."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    weights: FloatArray
    total_weight: float
    repeat: npt.NDArray[np.bool_]
    b_offset: FloatArray  # max(x, 1) - 1, so b + b_offset is b + x - 1 for buyers, b otherwise


def _log_likelihood_terms(
    params: FloatArray, pop: _Population
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-customer log-likelihood (FHL 2005, eq. 6) and the posterior weights of its terms.

    ``L = B(a,b+x)/B(a,b) · Γ(r+x)α^r/Γ(r) · [(α+T)^-(r+x) + 1{x>0} a/(b+x-1) (α+t_x)^-(r+x)]``.
    The bracket is summed in log space; its two normalised terms (alive at ``T`` / dropped
    out after ``t_x``) are returned for the gradient.
    """
    r, alpha, a, b = params
    x = pop.x
    log_alpha_T = np.log(alpha + pop.T)
    log_alpha_tx = np.log(alpha + pop.t_x)
    common = (
        gammaln(r + x)
        - gammaln(r)
        + r * math.log(alpha)
        + gammaln(a + b)
        + gammaln(b + x)
        - gammaln(b)
        - gammaln(a + b + x)
    )
    alive_term = -(r + x) * log_alpha_T
    dropout_term = np.where(
        pop.repeat, math.log(a) - np.log(b + pop.b_offset) - (r + x) * log_alpha_tx, -np.inf
    )
    log_bracket = np.logaddexp(alive_term, dropout_term)
    return (
        common + log_bracket,
        np.exp(alive_term - log_bracket),
        np.exp(dropout_term - log_bracket),
    )


def _objective(
    log_params: FloatArray, pop: _Population, penalizer: float
) -> tuple[float, FloatArray]:
    """Mean negative log-likelihood over log-parameters and its analytic gradient.

    Log-parameters keep the search unconstrained; the mean (as ``lifetimes`` does) keeps the
    gradient tolerance independent of population size.
    """
    # a line search may try extreme steps: keep every parameter finite and positive
    params = np.exp(np.clip(log_params, -300.0, 300.0))
    r, alpha, a, b = params
    x = pop.x
    ll, w_alive, w_dropout = _log_likelihood_terms(params, pop)
    log_alpha_T = np.log(alpha + pop.T)
    log_alpha_tx = np.log(alpha + pop.t_x)
    d_r = (
        digamma(r + x)
        - digamma(r)
        + math.log(alpha)
        - w_alive * log_alpha_T
        - (w_dropout * log_alpha_tx)
    )
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + pop.T) + w_dropout / (alpha + pop.t_x))
    psi_ab = digamma(a + b)
    psi_abx = digamma(a + b + x)
    d_a = psi_ab - psi_abx + w_dropout / a
    d_b = psi_ab + digamma(b + x) - digamma(b) - psi_abx - w_dropout / (b + pop.b_offset)
    # Weighted sums with elementwise products and numpy's pairwise sum rather than BLAS dot
    # products: as accurate or better, and no BLAS threads competing with the stream worker.
    w = pop.weights
    grad_ll = (np.stack([d_r, d_alpha, d_a, d_b]) * w).sum(axis=1) / pop.total_weight
    value = -float((w * ll).sum()) / pop.total_weight + penalizer * float((params * params).sum())
    grad = -grad_ll * params + 2.0 * penalizer * params * params
    return value, grad


def _population(
    x: FloatArray, t_x: FloatArray, T: FloatArray, weights: FloatArray, time_scale: float
) -> _Population:
    return _Population(
        x=x,
        t_x=t_x * time_scale,
        T=T * time_scale,
        weights=weights,
        total_weight=float(weights.sum()),
        repeat=x > 0,
        b_offset=np.maximum(x, 1.0) - 1.0,
    )


def _as_vector(name: str, values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def fit_bgnbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    initial: BgNbdParams | None = None,
    penalizer: float = 0.0,
) -> BgNbdFit:
    """Maximum-likelihood BG/NBD parameters for a population (one customer or pattern a row).

    ``weights`` are counts for grouped data (how many customers share a row's history).
    Times are rescaled internally so the oldest customer has ``T = 1`` and the optimizer
    (BFGS with the analytic gradient, on log-parameters) starts from a fixed point: the same
    inputs always give the same parameters, and they agree with ``lifetimes.BetaGeoFitter``.
    ``penalizer`` adds ``penalizer · Σ param²`` to the mean negative log-likelihood, with
    ``alpha`` in that internal scale, exactly like ``lifetimes``' ``penalizer_coef``.
    """
    xs = _as_vector("x", x)
    txs = _as_vector("t_x", t_x)
    Ts = _as_vector("T", T)
    ws = np.ones_like(xs) if weights is None else _as_vector("weights", weights)
    if not xs.shape == txs.shape == Ts.shape == ws.shape:
        raise ValueError("x, t_x, T and weights must have the same length")
    if np.any(xs < 0) or np.any(xs != np.floor(xs)):
        raise ValueError("x must hold non-negative whole numbers of repeat purchases")
    if np.any(txs < 0) or np.any(txs > Ts) or np.any(txs[xs == 0] != 0):
        raise ValueError("need 0 <= t_x <= T, and t_x = 0 where x = 0")
    if np.any(ws < 0) or np.any(ws != np.floor(ws)) or ws.sum() <= 0:
        raise ValueError("weights must be non-negative whole counts with a positive total")
    if penalizer < 0:
        raise ValueError("penalizer must be >= 0")
    max_T = float(Ts.max())
    if max_T <= 0:
        raise ValueError("at least one customer must have T > 0")

    # Customers with the same history add the same term: fit each distinct history once.
    histories, inverse = np.unique(np.stack([xs, txs, Ts]), axis=1, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=ws, minlength=histories.shape[1]).astype(
        np.float64
    )
    x_u, tx_u, T_u = histories
    time_scale = 1.0 / max_T
    pop = _population(x_u, tx_u, T_u, counts, time_scale)
    if initial is None:
        start = np.full(4, 0.1)
    else:
        scaled = initial.rescale_time(time_scale)
        start = np.log([scaled.r, scaled.alpha, scaled.a, scaled.b])
    result = minimize(
        _objective,
        start,
        args=(pop, penalizer),
        jac=True,
        method="BFGS",
        options={"gtol": _FIT_GTOL, "maxiter": _FIT_MAX_ITERATIONS},
    )
    gradient = np.asarray(result.jac, dtype=np.float64)
    log_params = np.asarray(result.x, dtype=np.float64)
    # Without a single repeat buyer nothing in the data speaks about dropout (a, b).
    interior = bool(np.all(np.abs(log_params) <= _FIT_MAX_ABS_LOG_PARAM) and np.any(x_u > 0))
    stationary = bool(np.all(np.abs(gradient) <= _FIT_CONVERGED_GRADIENT))
    r, alpha, a, b = (float(v) for v in np.exp(np.clip(log_params, -300.0, 300.0)))
    params = BgNbdParams(r, alpha / time_scale, a, b)
    ll, _, _ = _log_likelihood_terms(
        np.array([params.r, params.alpha, params.a, params.b]),
        _population(x_u, tx_u, T_u, counts, 1.0),
    )
    return BgNbdFit(
        params=params,
        log_likelihood=float((counts * ll).sum()),
        n_customers=int(counts.sum()),
        converged=stationary and interior,
        iterations=int(result.nit),
        message=str(result.message),
    )
