"""BG/NBD against its peer, ``lifetimes``, on the CDNOW data shipped in the Lifetimes wheel.

Two populations: the CDNOW sample summary the model was published on (2,357 customers, time
in weeks), and the CDNOW transaction logs summarised per customer in **days** by
``lifetimes.utils.summary_data_from_transaction_data``, the unit the stream uses.

The data files are read straight from the package with :mod:`importlib.resources`;
``lifetimes.datasets`` is avoided because it imports ``pkg_resources``, which recent
setuptools no longer ship.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lifetimes
import lifetimes.utils as lifetimes_utils
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from streams.domain.churn import (
    BgNbdFit,
    BgNbdParams,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    p_no_purchase_within,
)
from tests.unit.domain.cdnow import OBSERVATION_END, dataset, read_transactions

Vector = npt.NDArray[np.float64]

# Fader, Hardie & Lee (2005), table 1 / lifetimes' documentation, weeks.
PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_LOG_LIKELIHOOD = -9582.4

# What our fit achieves against lifetimes' default fit (BFGS, tol 1e-7), relative:
# ~4e-7 on the weekly summary, ~1.1e-6 on the daily sample log, ~1.4e-7 on the daily master
# log. The gap is lifetimes' stopping tolerance: with tol=1e-8 it is ~3e-13 (weekly summary).
PARAMS_REL_TOL = 1e-5
# P(alive) per customer, each side with its own fitted parameters (achieved ~3e-7, ~5e-8).
P_ALIVE_OWN_FIT_ABS_TOL = 1e-6


@dataclass(frozen=True)
class Population:
    x: Vector
    t_x: Vector
    T: Vector


def as_vector(params: BgNbdParams) -> Vector:
    return np.array([params.r, params.alpha, params.a, params.b])


def lifetimes_params(fitter: Any) -> BgNbdParams:
    p = fitter.params_
    return BgNbdParams(float(p["r"]), float(p["alpha"]), float(p["a"]), float(p["b"]))


def fit_lifetimes(pop: Population, **kwargs: Any) -> Any:
    return lifetimes.BetaGeoFitter(**kwargs).fit(pop.x, pop.t_x, pop.T)


@pytest.fixture(scope="module")
def weekly_summary() -> Population:
    df = pd.read_csv(dataset("cdnow_customers_summary.csv"))
    assert len(df) == 2357
    return Population(
        df["frequency"].to_numpy(np.float64),
        df["recency"].to_numpy(np.float64),
        df["T"].to_numpy(np.float64),
    )


@pytest.fixture(scope="module", params=["CDNOW_sample.txt", "CDNOW_master.txt"])
def daily_log(request: pytest.FixtureRequest) -> Population:
    log = read_transactions(request.param)
    summary = lifetimes_utils.summary_data_from_transaction_data(
        log, "customer_id", "date", observation_period_end=OBSERVATION_END, freq="D"
    )
    expected_customers = {"CDNOW_sample.txt": 2357, "CDNOW_master.txt": 23570}[request.param]
    assert len(summary) == expected_customers
    return Population(
        summary["frequency"].to_numpy(np.float64),
        summary["recency"].to_numpy(np.float64),
        summary["T"].to_numpy(np.float64),
    )


def per_customer(f: Any, params: BgNbdParams, pop: Population, *before: float) -> Vector:
    return np.array(
        [
            f(params, *before, int(x), float(t_x), float(T))
            for x, t_x, T in zip(pop.x, pop.t_x, pop.T, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def ours(weekly_summary: Population) -> BgNbdFit:
    """Our fit of the weekly CDNOW summary."""
    return fit_bgnbd(weekly_summary.x, weekly_summary.t_x, weekly_summary.T)


class TestWeeklySummary:
    def test_reproduces_the_published_parameters(self, ours: BgNbdFit) -> None:
        assert ours.converged
        assert ours.n_customers == 2357
        for name in ("r", "alpha", "a", "b"):
            # Published to three decimals: agree within half a unit of the last digit.
            assert getattr(ours.params, name) == pytest.approx(getattr(PUBLISHED, name), abs=5e-4)
        assert ours.log_likelihood == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.05)

    def test_matches_lifetimes(self, ours: BgNbdFit, weekly_summary: Population) -> None:
        theirs = lifetimes_params(fit_lifetimes(weekly_summary))
        np.testing.assert_allclose(as_vector(ours.params), as_vector(theirs), rtol=PARAMS_REL_TOL)

    def test_matches_lifetimes_run_to_a_tighter_tolerance(
        self, ours: BgNbdFit, weekly_summary: Population
    ) -> None:
        tight = lifetimes.BetaGeoFitter().fit(
            weekly_summary.x, weekly_summary.t_x, weekly_summary.T, tol=1e-8
        )
        np.testing.assert_allclose(
            as_vector(ours.params), as_vector(lifetimes_params(tight)), rtol=1e-9
        )

    def test_grouped_summary_with_weights_gives_the_same_fit(
        self, ours: BgNbdFit, weekly_summary: Population
    ) -> None:
        stacked = np.stack([weekly_summary.x, weekly_summary.t_x, weekly_summary.T])
        histories, counts = np.unique(stacked, axis=1, return_counts=True)
        grouped = fit_bgnbd(*histories, weights=counts)
        assert grouped.n_customers == 2357
        np.testing.assert_allclose(as_vector(grouped.params), as_vector(ours.params), rtol=1e-12)

    def test_penalizer_matches_lifetimes(self, weekly_summary: Population) -> None:
        ours = fit_bgnbd(weekly_summary.x, weekly_summary.t_x, weekly_summary.T, penalizer=0.01)
        theirs = lifetimes_params(fit_lifetimes(weekly_summary, penalizer_coef=0.01))
        np.testing.assert_allclose(as_vector(ours.params), as_vector(theirs), rtol=PARAMS_REL_TOL)


class TestDailyTransactionLog:
    def test_fit_and_p_alive_match_lifetimes(self, daily_log: Population) -> None:
        ours = fit_bgnbd(daily_log.x, daily_log.t_x, daily_log.T)
        fitter = fit_lifetimes(daily_log)
        theirs = lifetimes_params(fitter)
        assert ours.converged
        np.testing.assert_allclose(as_vector(ours.params), as_vector(theirs), rtol=PARAMS_REL_TOL)

        ours_alive = per_customer(p_alive, ours.params, daily_log)
        theirs_alive = fitter.conditional_probability_alive(daily_log.x, daily_log.t_x, daily_log.T)
        assert np.max(np.abs(ours_alive - theirs_alive)) < P_ALIVE_OWN_FIT_ABS_TOL

        # Same parameters on both sides: the same numbers, to a few units in the last place.
        fitter.params_[["r", "alpha", "a", "b"]] = as_vector(ours.params)
        same_alive = fitter.conditional_probability_alive(daily_log.x, daily_log.t_x, daily_log.T)
        np.testing.assert_allclose(ours_alive, same_alive, rtol=1e-14, atol=0.0)

        first_timers = daily_log.x == 0
        assert first_timers.any()
        assert np.all(ours_alive[first_timers] == 1.0)
        assert np.all(same_alive[first_timers] == 1.0)

    @pytest.mark.parametrize("horizon", [90.0, 365.0])
    def test_expected_purchases_match_lifetimes(
        self, daily_log: Population, horizon: float
    ) -> None:
        params = BgNbdParams(r=0.267, alpha=41.9, a=0.484, b=2.11)
        fitter = lifetimes.BetaGeoFitter()
        fitter.params_ = pd.Series(as_vector(params), index=["r", "alpha", "a", "b"])
        ours = per_customer(expected_purchases, params, daily_log, horizon)
        theirs = fitter.conditional_expected_number_of_purchases_up_to_time(
            horizon, daily_log.x, daily_log.t_x, daily_log.T
        )
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)


class TestNoPurchaseAgainstLikelihood:
    """P(no purchase in (T, T+t]) is a likelihood ratio, computed here with lifetimes' own.

    Seeing no purchase until ``T + t`` is exactly the history ``(x, t_x, T + t)``, so the
    probability equals ``L(x, t_x, T + t) / L(x, t_x, T)`` with L the BG/NBD individual
    likelihood — independent of the derivation in :func:`p_no_purchase_within`.
    """

    PARAMS = BgNbdParams(r=0.267, alpha=41.9, a=0.484, b=2.11)

    def log_likelihood(self, x: float, t_x: float, T: float) -> float:
        one = np.ones(1)
        return -float(
            lifetimes.BetaGeoFitter._negative_log_likelihood(
                np.log(as_vector(self.PARAMS)), x * one, t_x * one, T * one, one, 0.0
            )
        )

    def test_matches_the_likelihood_ratio(self, weekly_summary: Population) -> None:
        # The summary's weekly histories, read as days: plenty of distinct (x, t_x, T).
        histories = np.unique(
            np.stack([weekly_summary.x, weekly_summary.t_x, weekly_summary.T]), axis=1
        )
        checked = 0
        for x, t_x, T in histories.T:
            for horizon in (7.0, 90.0):
                expected = math.exp(
                    self.log_likelihood(x, t_x, T + horizon) - self.log_likelihood(x, t_x, T)
                )
                got = p_no_purchase_within(self.PARAMS, horizon, int(x), float(t_x), float(T))
                assert got == pytest.approx(expected, rel=1e-12)
                checked += 1
        assert checked > 2000

    def test_new_customer_matches_lifetimes_zero_purchase_probability(self) -> None:
        fitter = lifetimes.BetaGeoFitter()
        fitter.params_ = pd.Series(as_vector(self.PARAMS), index=["r", "alpha", "a", "b"])
        for horizon in (1.0, 90.0, 365.0):
            expected = float(fitter.probability_of_n_purchases_up_to_time(horizon, 0))
            assert p_no_purchase_within(self.PARAMS, horizon, 0, 0.0, 0.0) == pytest.approx(
                expected, rel=1e-12
            )
            assert expected_purchases(self.PARAMS, horizon, 0, 0.0, 0.0) == pytest.approx(
                float(fitter.expected_number_of_purchases_up_to_time(horizon)), rel=1e-10
            )
