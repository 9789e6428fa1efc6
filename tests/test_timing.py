"""Loop timing bookkeeping: fixed deadlines, skipped ticks, late ticks, percentiles."""

from __future__ import annotations

import time

import numpy as np

from robot_server.timing import Ticker, TickStats


def test_deadlines_do_not_drift_with_work():
    t = Ticker(0.02)
    start = time.perf_counter()
    for _ in range(25):
        t.wait()
        time.sleep(0.005)  # work inside the tick
    # 25 fixed deadlines = 0.5 s; a sleep-after-work loop would take 25 * 0.025 = 0.625 s.
    assert time.perf_counter() - start < 0.58


def test_an_overrun_skips_missed_deadlines_and_counts_them():
    t = Ticker(0.01)
    t.wait()
    time.sleep(0.055)  # five and a half periods of work
    _lateness, skipped = t.wait()
    assert skipped >= 4
    # and the next deadline is in the future again, not a burst of catch-up ticks
    lateness, skipped = t.wait()
    assert skipped == 0


def test_stats_count_late_ticks_overruns_and_percentiles():
    s = TickStats(period_ms=100.0)
    for _ in range(98):
        s.record(lateness_s=0.0001, skipped=0, work_s=0.002)
    s.record(lateness_s=0.020, skipped=0, work_s=0.002)  # 20 ms late: > 10 % of the period
    s.record(lateness_s=0.0, skipped=2, work_s=0.150)  # an overrun that dropped two deadlines
    out = s.summary()
    assert out["ticks"] == 100 and out["late"] == 1 and out["overruns"] == 1 and out["skipped"] == 2
    assert out["period_error_ms_max"] == 20.0
    assert np.isclose(out["work_ms_p50"], 2.0)
    assert out["work_pct_of_budget_p99"] > 2.0


def test_percentiles_refresh_at_most_every_n_ticks_but_counters_are_always_current():
    s = TickStats(period_ms=100.0)
    s.record(0.0, 0, 0.001)
    first = s.summary(refresh_every=10)
    for _ in range(5):
        s.record(0.0, 0, 0.050)
    later = s.summary(refresh_every=10)
    assert later["ticks"] == 6 and later["work_ms_p99"] == first["work_ms_p99"]
    for _ in range(5):
        s.record(0.0, 0, 0.050)
    assert s.summary(refresh_every=10)["work_ms_p99"] > 40.0
