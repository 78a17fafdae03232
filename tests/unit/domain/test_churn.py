"""BG/NBD churn building blocks: properties that must hold for every customer history."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams.domain.churn import (
    BgNbdParams,
    average_days_between_purchases,
    churn_risk_band,
    days_until_p_alive_below,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    p_no_purchase_within,
    purchase_rhythm_overdue,
)

# CDNOW (Fader, Hardie & Lee 2005) in weeks, turned into days.
CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426).rescale_time(7.0)

params_st = st.builds(
    BgNbdParams,
    r=st.floats(0.01, 50.0),
    alpha=st.floats(0.1, 1000.0),
    a=st.floats(0.01, 20.0),
    b=st.floats(0.01, 20.0),
)


@st.composite
def histories(draw: st.DrawFn, max_x: int = 2000, max_T: float = 1e5) -> tuple[int, float, float]:
    """A valid (x, t_x, T) in days: t_x = 0 without repeat purchases, t_x <= T otherwise."""
    x = draw(st.integers(0, max_x))
    T = draw(st.floats(0.0, max_T))
    t_x = 0.0 if x == 0 else draw(st.floats(0.0, T))
    return x, t_x, T


def reference_p_alive(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """The textbook formula, written the direct way (fine for moderate inputs)."""
    if x == 0:
        return 1.0
    ratio = (params.alpha + T) / (params.alpha + t_x)
    try:
        return 1.0 / (1.0 + params.a / (params.b + x - 1) * math.pow(ratio, params.r + x))
    except OverflowError:
        return 0.0


class TestParams:
    @pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
    @pytest.mark.parametrize("field", ["r", "alpha", "a", "b"])
    def test_rejects_non_positive_or_non_finite(self, field: str, bad: float) -> None:
        values = {"r": 1.0, "alpha": 1.0, "a": 1.0, "b": 1.0, field: bad}
        with pytest.raises(ValueError, match=field):
            BgNbdParams(**values)

    def test_rescale_time_only_moves_alpha(self) -> None:
        weekly = BgNbdParams(0.243, 4.414, 0.793, 2.426)
        assert weekly.rescale_time(7.0) == BgNbdParams(0.243, 4.414 * 7.0, 0.793, 2.426)

    def test_rescaled_model_gives_the_same_p_alive(self) -> None:
        weekly = BgNbdParams(0.243, 4.414, 0.793, 2.426)
        daily = weekly.rescale_time(7.0)
        assert p_alive(daily, 3, 70.0, 140.0) == pytest.approx(p_alive(weekly, 3, 10.0, 20.0))

    def test_is_frozen(self) -> None:
        with pytest.raises(AttributeError):
            CDNOW.r = 1.0  # type: ignore[misc]


class TestPAlive:
    def test_first_time_buyer_is_alive(self) -> None:
        assert p_alive(CDNOW, 0, 0.0, 0.0) == 1.0
        assert p_alive(CDNOW, 0, 0.0, 10_000.0) == 1.0

    def test_known_value(self) -> None:
        # 2 repeat purchases, last on day 30, evaluated on day 273 (39 weeks).
        assert p_alive(CDNOW, 2, 30.0, 273.0) == pytest.approx(
            reference_p_alive(CDNOW, 2, 30.0, 273.0), rel=1e-14
        )

    @pytest.mark.parametrize(("x", "t_x", "T"), [(-1, 0.0, 1.0), (1, -1.0, 1.0), (1, 5.0, 4.0)])
    def test_rejects_impossible_histories(self, x: int, t_x: float, T: float) -> None:
        with pytest.raises(ValueError, match="history"):
            p_alive(CDNOW, x, t_x, T)

    @given(params_st, histories())
    def test_is_a_probability(self, params: BgNbdParams, history: tuple[int, float, float]) -> None:
        p = p_alive(params, *history)
        assert 0.0 <= p <= 1.0

    @given(params_st, histories(max_x=50, max_T=2000.0))
    def test_positive_and_matches_formula_for_moderate_histories(
        self, params: BgNbdParams, history: tuple[int, float, float]
    ) -> None:
        expected = reference_p_alive(params, *history)
        assume(expected > 1e-250)
        assert p_alive(params, *history) > 0.0
        assert p_alive(params, *history) == pytest.approx(expected, rel=1e-9)

    @given(params_st, histories(), st.floats(0.0, 1e5))
    def test_never_rises_while_no_purchase_comes(
        self, params: BgNbdParams, history: tuple[int, float, float], wait: float
    ) -> None:
        x, t_x, T = history
        assert p_alive(params, x, t_x, T + wait) <= p_alive(params, x, t_x, T)

    @given(params_st, st.integers(1, 100))
    def test_strictly_decreasing_with_time_for_repeat_buyers(
        self, params: BgNbdParams, x: int
    ) -> None:
        values = [p_alive(params, x, 10.0, T) for T in (10.0, 20.0, 40.0, 80.0)]
        assume(values[-1] > 1e-300 and values[0] < 1.0)
        assert values == sorted(values, reverse=True)
        assert len(set(values)) == len(values)

    @given(params_st, histories(), st.floats(0.0, 1.0))
    def test_more_recent_last_purchase_means_more_alive(
        self, params: BgNbdParams, history: tuple[int, float, float], share: float
    ) -> None:
        x, t_x, T = history
        later = t_x + share * (T - t_x)
        assert p_alive(params, x, later, T) >= p_alive(params, x, t_x, T)

    def test_stable_for_heavy_buyers_and_old_customers(self) -> None:
        assert p_alive(CDNOW, 1000, 1e6, 1e6) == pytest.approx(1.0 / (1.0 + 0.793 / 1001.426))
        assert p_alive(CDNOW, 1000, 100.0, 1e6) == 0.0  # odds ~ e^-6000: underflows, no error
        assert 0.0 < p_alive(CDNOW, 1000, 900.0, 1000.0) < 1e-40
        assert p_alive(CDNOW, 5, 1e9, 1e12) == pytest.approx(
            reference_p_alive(CDNOW, 5, 1e9, 1e12), rel=1e-9
        )
        assert p_alive(CDNOW, 10**9, 1.0, 1.0) == pytest.approx(1.0)


class TestThresholdCrossing:
    @given(params_st, histories(max_x=1000, max_T=1e4), st.floats(1e-6, 1.0 - 1e-6))
    def test_returns_the_age_where_p_alive_reaches_the_threshold(
        self, params: BgNbdParams, history: tuple[int, float, float], threshold: float
    ) -> None:
        x, t_x, T = history
        assume(x > 0)
        crossing = days_until_p_alive_below(params, x, t_x, T, threshold)
        assert crossing is not None
        assert crossing >= T
        if p_alive(params, x, t_x, T) <= threshold:
            assert crossing == T
        else:
            assert p_alive(params, x, t_x, crossing) == pytest.approx(threshold, abs=1e-9)
            later = crossing + max(1.0, crossing) * 1e-3
            assert p_alive(params, x, t_x, later) < threshold

    def test_known_crossing(self) -> None:
        crossing = days_until_p_alive_below(CDNOW, 2, 30.0, 31.0, 0.5)
        assert crossing is not None
        assert p_alive(CDNOW, 2, 30.0, crossing) == pytest.approx(0.5, abs=1e-12)
        assert p_alive(CDNOW, 2, 30.0, crossing - 1.0) > 0.5
        assert p_alive(CDNOW, 2, 30.0, crossing + 1.0) < 0.5

    def test_already_below_means_now(self) -> None:
        assert days_until_p_alive_below(CDNOW, 2, 30.0, 5000.0, 0.5) == 5000.0

    def test_first_time_buyer_never_crosses(self) -> None:
        assert days_until_p_alive_below(CDNOW, 0, 0.0, 100.0, 0.99) is None

    def test_crossing_beyond_float_range_is_never(self) -> None:
        extreme = BgNbdParams(r=0.01, alpha=1.0, a=1e-10, b=1.0)
        assert days_until_p_alive_below(extreme, 1, 0.0, 0.0, 1e-300) is None

    @pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, math.nan])
    def test_rejects_thresholds_outside_the_open_unit_interval(self, threshold: float) -> None:
        with pytest.raises(ValueError, match="threshold"):
            days_until_p_alive_below(CDNOW, 2, 30.0, 31.0, threshold)


class TestNoPurchaseWithin:
    def test_new_customer_is_the_gamma_poisson_zero_count(self) -> None:
        # P(X(t) = 0) = (α / (α + t))^r for a customer just acquired.
        expected = (CDNOW.alpha / (CDNOW.alpha + 90.0)) ** CDNOW.r
        assert p_no_purchase_within(CDNOW, 90.0, 0, 0.0, 0.0) == pytest.approx(expected, rel=1e-14)

    def test_zero_horizon_is_certain(self) -> None:
        assert p_no_purchase_within(CDNOW, 0.0, 4, 50.0, 80.0) == 1.0

    @given(params_st, histories(), st.floats(0.0, 1e4), st.floats(0.0, 1e4))
    def test_quiet_spells_chain(
        self, params: BgNbdParams, history: tuple[int, float, float], t1: float, t2: float
    ) -> None:
        """No purchase for t1 + t2 = no purchase for t1, then none for t2 given that silence."""
        x, t_x, T = history
        both = p_no_purchase_within(params, t1 + t2, x, t_x, T)
        chained = p_no_purchase_within(params, t1, x, t_x, T) * p_no_purchase_within(
            params, t2, x, t_x, T + t1
        )
        assert both == pytest.approx(chained, rel=1e-9, abs=1e-12)

    @given(params_st, histories(), st.floats(0.0, 1e4), st.floats(0.0, 1e4))
    def test_is_a_probability_falling_with_the_horizon(
        self, params: BgNbdParams, history: tuple[int, float, float], t: float, more: float
    ) -> None:
        p = p_no_purchase_within(params, t, *history)
        assert 1.0 - p_alive(params, *history) - 1e-12 <= p <= 1.0
        assert p_no_purchase_within(params, t + more, *history) <= p + 1e-15

    @given(params_st, histories(max_x=200, max_T=1e3))
    def test_first_purchase_rate_matches_expected_purchases(
        self, params: BgNbdParams, history: tuple[int, float, float]
    ) -> None:
        """Over a tiny horizon both equal P(alive) · E[λ | alive] · h, E[λ] = (r+x)/(α+T)."""
        x, t_x, T = history
        alive = p_alive(params, x, t_x, T)
        assume(alive > 1e-3)
        h = 1e-4 * (params.alpha + T) / (params.r + x + 1.0)
        rate = alive * (params.r + x) / (params.alpha + T)
        assert (1.0 - p_no_purchase_within(params, h, x, t_x, T)) / h == pytest.approx(
            rate, rel=1e-3
        )
        assert expected_purchases(params, h, x, t_x, T) / h == pytest.approx(rate, rel=1e-3)

    def test_rejects_negative_horizon(self) -> None:
        with pytest.raises(ValueError, match="horizon"):
            p_no_purchase_within(CDNOW, -1.0, 1, 1.0, 2.0)


class TestExpectedPurchases:
    def test_zero_horizon(self) -> None:
        assert expected_purchases(CDNOW, 0.0, 3, 10.0, 20.0) == 0.0

    @given(params_st, histories(max_x=500, max_T=1e4), st.floats(0.1, 1e3), st.floats(0.1, 1e3))
    def test_grows_with_the_horizon(
        self,
        params: BgNbdParams,
        history: tuple[int, float, float],
        t: float,
        more: float,
    ) -> None:
        near = expected_purchases(params, t, *history)
        far = expected_purchases(params, t + more, *history)
        assert math.isfinite(far)
        assert 0.0 <= near <= far * (1.0 + 1e-9)

    @pytest.mark.parametrize("a", [1.0, 1.0 + 3e-6, 1.0 - 3e-6])
    def test_continuous_across_a_equal_one(self, a: float) -> None:
        params = BgNbdParams(r=0.3, alpha=4.4, a=a, b=0.5)
        below = expected_purchases(BgNbdParams(0.3, 4.4, 1.0 - 1e-3, 0.5), 90.0, 3, 5.0, 10.0)
        above = expected_purchases(BgNbdParams(0.3, 4.4, 1.0 + 1e-3, 0.5), 90.0, 3, 5.0, 10.0)
        value = expected_purchases(params, 90.0, 3, 5.0, 10.0)
        assert value == pytest.approx((below + above) / 2.0, rel=1e-5)

    def test_continuous_across_zero_lower_parameter(self) -> None:
        # a + b + x - 1 = 0 for a new customer: a removable singularity of the closed form.
        at = expected_purchases(BgNbdParams(0.3, 4.4, 0.4, 0.6), 90.0, 0, 0.0, 10.0)
        below = expected_purchases(BgNbdParams(0.3, 4.4, 0.4, 0.6 - 1e-3), 90.0, 0, 0.0, 10.0)
        above = expected_purchases(BgNbdParams(0.3, 4.4, 0.4, 0.6 + 1e-3), 90.0, 0, 0.0, 10.0)
        assert math.isfinite(at)
        assert at == pytest.approx((below + above) / 2.0, rel=1e-5)

    def test_heavy_buyer_does_not_overflow(self) -> None:
        value = expected_purchases(CDNOW, 365.0, 1000, 499.0, 500.0)
        assert math.isfinite(value)
        assert value > 100.0


class TestVocabulary:
    @pytest.mark.parametrize(
        ("p", "band"),
        [
            (0.0, "low"),
            (0.329, "low"),
            (0.33, "medium"),
            (0.5, "medium"),
            (0.66, "medium"),
            (0.661, "high"),
            (1.0, "high"),
        ],
    )
    def test_churn_risk_band(self, p: float, band: str) -> None:
        assert churn_risk_band(p) == band

    @pytest.mark.parametrize("p", [-0.01, 1.01, math.nan])
    def test_churn_risk_band_rejects_non_probabilities(self, p: float) -> None:
        with pytest.raises(ValueError, match="probability"):
            churn_risk_band(p)

    def test_average_days_between_purchases(self) -> None:
        assert average_days_between_purchases(4, 120.0) == 30.0
        assert average_days_between_purchases(0, 0.0) is None

    def test_purchase_rhythm_overdue(self) -> None:
        assert purchase_rhythm_overdue(50.0, 30.0, 10.0) == 2.0
        assert purchase_rhythm_overdue(20.0, 30.0, 10.0) == -1.0
        assert purchase_rhythm_overdue(33.0, 30.0, 0.0) == pytest.approx(1.0)  # floor 0.1·mean

    def test_purchase_rhythm_overdue_rejects_nonsense(self) -> None:
        with pytest.raises(ValueError, match="mean_gap"):
            purchase_rhythm_overdue(10.0, 0.0, 1.0)


def simulate(
    params: BgNbdParams, n: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Draw (x, t_x, T) for n customers from the BG/NBD process itself.

    Customer i buys at Poisson rate λ_i while alive and drops out after repeat purchase
    K_i ~ Geometric(p_i); with N_i arrivals in (0, T_i], x = min(N_i, K_i) and t_x is the
    x-th of N_i sorted uniform arrival times, a T·Beta(x, N - x + 1) variable.
    """
    rng = np.random.default_rng(seed)
    T = rng.uniform(30.0, 365.0, n)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(p)).astype(np.float64)
    buyers = x > 0
    t_x = np.zeros(n)
    t_x[buyers] = T[buyers] * rng.beta(x[buyers], arrivals[buyers] - x[buyers] + 1.0)
    return x, t_x, T


TRUTH = BgNbdParams(r=0.5, alpha=20.0, a=0.8, b=2.5)
Population = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def population() -> Population:
    return simulate(TRUTH, 20_000, seed=7)


class TestFit:
    def test_recovers_the_generating_parameters(
        self,
        population: Population,
    ) -> None:
        fit = fit_bgnbd(*population)
        assert fit.converged
        assert fit.n_customers == 20_000
        assert 0 < fit.iterations < 200
        truth = TRUTH
        got = fit.params
        assert got.r == pytest.approx(truth.r, rel=0.1)
        assert got.alpha == pytest.approx(truth.alpha, rel=0.15)
        assert got.a == pytest.approx(truth.a, rel=0.3)
        assert got.b == pytest.approx(truth.b, rel=0.3)
        truth_fit = fit_bgnbd(*population, initial=truth)
        assert truth_fit.log_likelihood == pytest.approx(fit.log_likelihood, rel=1e-10)

    def test_is_deterministic(
        self,
        population: Population,
    ) -> None:
        assert fit_bgnbd(*population) == fit_bgnbd(*population)

    def test_grouped_rows_with_weights_equal_one_row_per_customer(self) -> None:
        x = np.array([0, 0, 0, 1, 1, 2, 2, 2, 5, 0, 3])
        t_x = np.array([0, 0, 0, 5, 5, 20, 20, 20, 30, 0, 12], dtype=float)
        T = np.array([40, 40, 40, 40, 40, 40, 40, 40, 40, 35, 38], dtype=float)
        histories, counts = np.unique(np.stack([x, t_x, T]), axis=1, return_counts=True)
        per_customer = fit_bgnbd(x, t_x, T)
        grouped = fit_bgnbd(*histories, weights=counts)
        assert grouped.n_customers == per_customer.n_customers == 11
        assert grouped.params == per_customer.params

    def test_time_unit_only_rescales_alpha(
        self,
        population: Population,
    ) -> None:
        x, t_x, T = population
        days = fit_bgnbd(x, t_x, T).params
        weeks = fit_bgnbd(x, t_x / 7.0, T / 7.0).params
        assert weeks.rescale_time(7.0).alpha == pytest.approx(days.alpha, rel=1e-6)
        for name in ("r", "a", "b"):
            assert getattr(weeks, name) == pytest.approx(getattr(days, name), rel=1e-6)

    def test_penalizer_shrinks_the_parameters(
        self,
        population: Population,
    ) -> None:
        plain = fit_bgnbd(*population).params
        shrunk = fit_bgnbd(*population, penalizer=0.1).params
        assert shrunk.b < plain.b
        assert fit_bgnbd(*population, penalizer=0.1).converged

    @pytest.mark.parametrize(
        ("x", "t_x", "T"),
        [
            pytest.param([0, 0, 0], [0.0, 0.0, 0.0], [10.0, 20.0, 30.0], id="no repeat buyer"),
            pytest.param([3], [20.0], [30.0], id="one customer"),
            pytest.param([3, 4, 5], [30.0, 30.0, 30.0], [30.0, 30.0, 30.0], id="nobody lapsed"),
        ],
    )
    def test_unidentifiable_populations_are_not_converged(
        self, x: list[int], t_x: list[float], T: list[float]
    ) -> None:
        fit = fit_bgnbd(x, t_x, T)
        assert not fit.converged
        assert all(math.isfinite(v) for v in (fit.params.r, fit.params.alpha, fit.log_likelihood))

    @pytest.mark.parametrize(
        ("x", "t_x", "T", "message"),
        [
            ([1.5], [1.0], [2.0], "whole numbers"),
            ([-1], [0.0], [2.0], "whole numbers"),
            ([1], [3.0], [2.0], "t_x"),
            ([0], [1.0], [2.0], "t_x"),
            ([0], [0.0], [0.0], "T > 0"),
            ([1, 2], [1.0], [2.0], "same length"),
            ([], [], [], "non-empty"),
            ([1], [math.nan], [2.0], "finite"),
        ],
    )
    def test_rejects_bad_inputs(
        self, x: list[float], t_x: list[float], T: list[float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            fit_bgnbd(x, t_x, T)

    def test_rejects_bad_weights_and_penalizer(self) -> None:
        with pytest.raises(ValueError, match="weights"):
            fit_bgnbd([1], [1.0], [2.0], weights=[-1])
        with pytest.raises(ValueError, match="penalizer"):
            fit_bgnbd([1], [1.0], [2.0], penalizer=-1.0)
