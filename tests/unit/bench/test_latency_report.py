"""bench_latency's report of when the slow probes happened."""

from __future__ import annotations

from bench.bench_latency import percentile, slowest_seconds


def test_the_slowest_seconds_are_listed_in_time_order_with_their_counts() -> None:
    # (seconds into the run, latency in s): second 3 has a 0.2 s pause, second 7 a 0.09 s one
    timeline = [(t / 10, 0.02) for t in range(100)]
    timeline += [(3.2, 0.2), (3.4, 0.12), (7.9, 0.09)]
    lines = slowest_seconds(timeline, top=2)
    assert lines == [
        "  second    3: max  200.0 ms, 2 of 12 probes over 50 ms",
        "  second    7: max   90.0 ms, 1 of 11 probes over 50 ms",
    ]
    assert slowest_seconds([]) == []


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
