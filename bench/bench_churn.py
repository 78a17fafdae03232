"""Benchmark the BG/NBD churn model: per-event P(alive) throughput and the population fit.

P(alive) runs once per purchase event (and on every re-evaluation as time passes), so its
calls per second on one core bound what one worker can keep current. The fit runs
periodically over the whole population, so its wall time bounds how often it can be refreshed.

Run from the repository root::

    python bench/bench_churn.py --calls 1000000 --customers 100000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.domain.churn import (
    BgNbdParams,
    days_until_p_alive_below,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    p_no_purchase_within,
)

Vector = npt.NDArray[np.float64]
History = tuple[int, float, float]

# Roughly the daily CDNOW master-log fit, so the synthetic population looks like real retail.
DAILY_CDNOW = BgNbdParams(r=0.267, alpha=41.9, a=0.484, b=2.11)


def simulate(params: BgNbdParams, n: int, seed: int) -> tuple[Vector, Vector, Vector]:
    """(x, t_x, T) in whole days for n customers drawn from the BG/NBD process (seeded)."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(30.0, 545.0, n)
    rate = rng.gamma(params.r, 1.0 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    arrivals = rng.poisson(rate * T)
    x = np.minimum(arrivals, rng.geometric(dropout)).astype(np.float64)
    buyers = x > 0
    t_x = np.zeros(n)
    t_x[buyers] = T[buyers] * rng.beta(x[buyers], arrivals[buyers] - x[buyers] + 1.0)
    return x, np.round(t_x), np.round(T)


def per_call_rate(f: Callable[[History], object], histories: list[History], calls: int) -> float:
    """Calls per second of ``f`` cycling over ``histories``, loop overhead included."""
    rounds, rest = divmod(calls, len(histories))
    work = histories * rounds + histories[:rest]
    start = time.perf_counter()
    for history in work:
        f(history)
    return calls / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure BG/NBD P(alive) calls/s (one core) and fit time for N customers.",
    )
    parser.add_argument(
        "--calls", type=int, default=1_000_000, help="per-customer calls to time (default 1e6)"
    )
    parser.add_argument(
        "--customers", type=int, default=100_000, help="population size to fit (default 1e5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic population")
    parser.add_argument(
        "--compare-lifetimes",
        action="store_true",
        help="also time lifetimes.BetaGeoFitter on the same population (if installed)",
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.customers < 1:
        parser.error("--calls and --customers must be >= 1")

    x, t_x, T = simulate(DAILY_CDNOW, args.customers, args.seed)
    histories: list[History] = [
        (int(a), float(b), float(c))
        for a, b, c in zip(x[:10_000], t_x[:10_000], T[:10_000], strict=True)
    ]
    repeat_buyers = [h for h in histories if h[0] > 0] or histories
    params = DAILY_CDNOW
    print(
        f"synthetic population: {args.customers} customers, seed {args.seed}, days, "
        f"{np.mean(x > 0):.0%} repeat buyers"
    )
    print("per-call throughput (one core, Python loop included):")
    calls = args.calls
    for name, f, sample, n in [
        ("p_alive (all)", lambda h: p_alive(params, *h), histories, calls),
        ("p_alive (repeat buyers)", lambda h: p_alive(params, *h), repeat_buyers, calls),
        (
            "days_until_p_alive_below",
            lambda h: days_until_p_alive_below(params, h[0], h[1], h[2], 0.5),
            histories,
            calls,
        ),
        (
            "p_no_purchase_within 90d",
            lambda h: p_no_purchase_within(params, 90.0, *h),
            histories,
            calls,
        ),
        (
            "expected_purchases 90d",
            lambda h: expected_purchases(params, 90.0, *h),
            histories,
            max(1, calls // 10),
        ),
    ]:
        rate = per_call_rate(f, sample, n)
        print(f"  {name:<26} {rate:>12,.0f} calls/s  ({1e9 / rate:,.0f} ns/call)")

    start = time.perf_counter()
    fit = fit_bgnbd(x, t_x, T)
    elapsed = time.perf_counter() - start
    distinct = np.unique(np.stack([x, t_x, T]), axis=1).shape[1]
    print(
        f"fit_bgnbd: {elapsed:.3f} s for {fit.n_customers} customers "
        f"({distinct} distinct histories), {fit.iterations} iterations, "
        f"converged={fit.converged}"
    )
    print(f"  fitted {fit.params}")

    if args.compare_lifetimes:
        try:
            from lifetimes import BetaGeoFitter
        except ImportError:
            print("lifetimes is not installed; skipping the comparison")
            return 0
        start = time.perf_counter()
        BetaGeoFitter().fit(x, t_x, T)
        print(f"lifetimes BetaGeoFitter.fit: {time.perf_counter() - start:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
