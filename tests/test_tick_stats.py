"""The loop's own tick health in the store (issue 11/12): the daemon stores a tick_stats event every
control.tick_stats_s with the window's counters and percentiles, and `replay report` takes its tick
health from those events (source "loop") instead of the step timestamps, which include the work."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from inproc_daemon import sim_daemon, wait_until

from replay.store import ReplayReader, StoreFullError
from replay_tools.report import gather, tick_health
from replay_tools.timeline import read_timeline
from robot_server.tick_stats import EVENT, TickStatsWriter
from robot_server.timing import TickStats
from spec.config import ConfigError, parse_config

COUNTERS = ("ticks", "late", "skipped", "overruns")


def test_windows_add_up_to_the_loop_counters() -> None:
    stats = TickStats(period_ms=100.0, window_s=0.02)
    for i in range(40):
        # every 5th tick 15 ms late (late), every 7th skips a deadline, every 9th overruns (120 ms of work)
        stats.record(0.015 if i % 5 == 0 else 0.0002, int(i % 7 == 0), 0.12 if i % 9 == 0 else 0.004)
        time.sleep(0.002)
    stats.close_window()
    windows = []
    while not stats.windows.empty():
        windows.append(stats.windows.get())
    assert len(windows) >= 2
    for k in COUNTERS:
        assert sum(getattr(w, k) for w in windows) == getattr(stats, k) > 0, k
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False)), "windows tile the time"
    figs = [w.figures() for w in windows]
    assert max(f["period_error_ms_max"] for f in figs) == pytest.approx(15.0)
    assert max(f["work_ms_p99"] for f in figs) <= 120.0
    assert stats.close_window() is None, "nothing recorded since: no empty window"


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_a_non_positive_window_fails_config_loading(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, "test.yaml", env={"ROBOT__CONTROL__TICK_STATS_S": bad})
    assert "control.tick_stats_s" in str(exc.value)
    assert parse_config({}, "test.yaml", env={}).control.tick_stats_s == 60.0


def test_nothing_is_written_while_the_store_is_full() -> None:
    written: list[dict] = []
    rec = SimpleNamespace(full=SimpleNamespace(cause="no space"), append_event_now=written.append)
    stats = TickStats(period_ms=100.0, window_s=60.0)
    stats.record(0.0, 0, 0.001)
    w = stats.close_window()
    assert w is not None
    writer = TickStatsWriter(stats, rec)  # type: ignore[arg-type]
    assert not writer.write(w) and written == [] and writer.dropped == 1

    def disk_full(_event: dict) -> dict:
        raise StoreFullError("appending to the event log: no space", Path("s.zarr"), None)

    rec.full, rec.append_event_now = None, disk_full
    assert not writer.write(w) and writer.dropped == 2
    rec.append_event_now = written.append
    assert writer.write(w) and written[0]["type"] == EVENT and written[0]["ticks"] == 1


def test_the_daemon_stores_the_loop_timing_and_the_report_uses_it(tmp_path: Path) -> None:
    with sim_daemon(tmp_path, env={"ROBOT__CONTROL__TICK_STATS_S": "0.5"}) as d:
        wait_until(lambda: d.tick_stats.written >= 3, 20, "three tick_stats windows stored")
    stats = d.loop.stats
    events = [e for e in ReplayReader(d.cfg.store.path).events() if e["type"] == EVENT]
    # stop() stored the window being filled: together the windows hold every tick the loop counted.
    assert len(events) == d.tick_stats.written >= 4 and d.tick_stats.dropped == 0
    for k in COUNTERS:
        assert sum(e[k] for e in events) == getattr(stats, k), k
    assert all(0.4 <= e["end"] - e["start"] <= 1.5 for e in events[:-1])
    assert all(a["end"] == pytest.approx(b["start"]) for a, b in zip(events, events[1:], strict=False))
    assert all(e["period_error_ms_p50"] <= e["period_error_ms_p99"] <= e["period_error_ms_max"] for e in events)
    if stats.ticks <= 3000:  # the loop's own window holds every tick: its max is the windows' max
        assert max(e["period_error_ms_max"] for e in events) == round(stats.period_error.max(), 4)

    tl = read_timeline(Path(d.cfg.store.path))
    tick = tick_health(tl, 60.0)
    assert tick["recorded"] and tick["source"] == "loop" and "tick_stats" in tick["definition"]
    assert tick["ticks"] == stats.ticks == sum(b["ticks"] for b in tick["bins"])
    assert tick["p99_error_ms"] == round(max(e["period_error_ms_p99"] for e in events), 3)
    assert sum(b["windows"] for b in tick["bins"]) == len(events)
    report = gather(tl)
    assert report["sections"]["tick_health"]["source"] == "loop"

    import matplotlib.pyplot as plt

    from replay_tools.plots import plot_figure

    fig = plot_figure("tick_health", report["sections"]["tick_health"])
    try:
        assert "own timing" in fig.axes[0].get_title()
    finally:
        plt.close(fig)
