"""Fixed-deadline ticking and per-tick timing statistics.

Deadlines are `t0 + k * period` on perf_counter, so lateness never accumulates into drift (a naive
`work(); sleep(period)` drifted +9.8 s in 60 s here). We sleep until shortly before the deadline
and busy-wait the rest; an overrun skips the missed ticks and counts them.
"""

from __future__ import annotations

import collections
import queue
import time
from array import array
from dataclasses import dataclass, field

import numpy as np

SPIN_S = 0.002


class Ticker:
    def __init__(self, period_s: float) -> None:
        self.period = period_s
        self.t0 = time.perf_counter()
        self.k = 0

    def wait(self) -> tuple[float, int]:
        """Wait for the next deadline; returns (lateness in s, ticks skipped by an overrun)."""
        self.k += 1
        deadline = self.t0 + self.k * self.period
        now = time.perf_counter()
        skipped = 0
        if now > deadline + self.period:
            # Overran by more than a whole period: drop the missed deadlines instead of bursting.
            skipped = int((now - deadline) // self.period)
            self.k += skipped
            deadline = self.t0 + self.k * self.period
        remaining = deadline - now
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while time.perf_counter() < deadline:
            pass
        return time.perf_counter() - deadline, skipped


class Window:
    """A bounded window of samples with percentiles (the last `size` ticks)."""

    def __init__(self, size: int = 3000) -> None:
        self.values: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, v: float) -> None:
        self.values.append(v)

    def percentiles(self, *qs: float) -> list[float]:
        if not self.values:
            return [0.0 for _ in qs]
        arr = np.fromiter(self.values, dtype=np.float64)
        return [float(x) for x in np.percentile(arr, qs)]

    def max(self) -> float:
        return max(self.values, default=0.0)

    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else 0.0


@dataclass
class TickWindow:
    """The loop's timing over one stretch of ticks (a `tick_stats` store event): the counters as
    TickStats counts them, and every tick's period error and work time (ms) for its own percentiles."""

    start: float  # wall time (time.time()) the window began
    start_mono: float
    end: float = 0.0
    ticks: int = 0
    late: int = 0
    skipped: int = 0
    overruns: int = 0
    period_error: array = field(default_factory=lambda: array("d"))
    work: array = field(default_factory=lambda: array("d"))

    def figures(self) -> dict[str, float | int]:
        """What the store keeps of the window (ms, rounded as /status rounds them)."""
        err = np.frombuffer(self.period_error, dtype=np.float64) if self.ticks else np.zeros(1)
        work = np.frombuffer(self.work, dtype=np.float64) if self.ticks else np.zeros(1)
        p50, p99 = np.percentile(err, (50, 99))
        return {
            "start": self.start, "end": self.end,
            "ticks": self.ticks, "late": self.late, "skipped": self.skipped, "overruns": self.overruns,
            "period_error_ms_p50": round(float(p50), 4),
            "period_error_ms_p99": round(float(p99), 4),
            "period_error_ms_max": round(float(err.max()), 4),
            "work_ms_p99": round(float(np.percentile(work, 99)), 4),
        }


@dataclass
class TickStats:
    """Timing of the control loop, in milliseconds; what the status line and /metrics show."""

    period_ms: float
    ticks: int = 0
    late: int = 0  # ticks whose start was more than 10 % of a period after its deadline
    skipped: int = 0  # deadlines dropped after an overrun
    overruns: int = 0  # ticks whose work exceeded the period
    stale_frames: int = 0
    invalid_actions: int = 0
    # > 0: every this many seconds the current TickWindow is closed and put on `windows` (the
    # control thread only appends and puts; robot_server.tick_stats writes them to the store).
    window_s: float = 0.0

    def __post_init__(self) -> None:
        self.period_error = Window()
        self.work = Window()
        self.frame_age = Window()
        self._pct: dict[str, float] = {}
        self._pct_at = -1
        self.windows: queue.SimpleQueue[TickWindow | None] = queue.SimpleQueue()
        self._window: TickWindow | None = None

    def record(self, lateness_s: float, skipped: int, work_s: float) -> None:
        self.ticks += 1
        err_ms = abs(lateness_s) * 1e3
        work_ms = work_s * 1e3
        late = lateness_s * 1e3 > 0.1 * self.period_ms
        overrun = work_ms > self.period_ms
        self.period_error.add(err_ms)
        self.work.add(work_ms)
        self.late += late
        self.skipped += skipped
        self.overruns += overrun
        if self.window_s > 0:
            self._add_to_window(err_ms, work_ms, late, skipped, overrun)

    def _add_to_window(self, err_ms: float, work_ms: float, late: bool, skipped: int, overrun: bool) -> None:
        t = time.monotonic()
        w = self._window
        if w is None:
            w = self._window = TickWindow(start=time.time(), start_mono=t)
        w.ticks += 1
        w.late += late
        w.skipped += skipped
        w.overruns += overrun
        w.period_error.append(err_ms)
        w.work.append(work_ms)
        if t - w.start_mono >= self.window_s:
            self.close_window(t)
            # The next window starts where this one ended: windows tile the loop's running time.
            self._window = TickWindow(start=w.end, start_mono=t)

    def close_window(self, at_mono: float | None = None) -> TickWindow | None:
        """End the current window and queue it (on the control thread, or by anyone once it has
        stopped). None when no tick was recorded in it."""
        w, self._window = self._window, None
        if w is None or not w.ticks:
            return None
        at = time.monotonic() if at_mono is None else at_mono
        w.end = w.start + (at - w.start_mono)  # wall time, without the jump of a clock step
        self.windows.put(w)
        return w

    def summary(self, refresh_every: int = 1) -> dict[str, float | int]:
        """Counters, and percentiles over the window, recomputed at most every `refresh_every`
        ticks (the control thread publishes this every tick; sorting 3,000 samples each time
        would be a tenth of its work)."""
        if self._pct_at < 0 or self.ticks - self._pct_at >= refresh_every:
            self._pct = self._percentiles()
            self._pct_at = self.ticks
        return {
            "ticks": self.ticks,
            "late": self.late,
            "skipped": self.skipped,
            "overruns": self.overruns,
            "stale_frames": self.stale_frames,
            "invalid_actions": self.invalid_actions,
            **self._pct,
        }

    def _percentiles(self) -> dict[str, float]:
        p50, p99 = self.period_error.percentiles(50, 99)
        w50, w99 = self.work.percentiles(50, 99)
        a50, a99 = self.frame_age.percentiles(50, 99)
        return {
            "period_error_ms_p50": round(p50, 4),
            "period_error_ms_p99": round(p99, 4),
            "period_error_ms_max": round(self.period_error.max(), 4),
            "work_ms_p50": round(w50, 4),
            "work_ms_p99": round(w99, 4),
            "work_ms_mean": round(self.work.mean(), 4),
            "work_pct_of_budget_p99": round(100.0 * w99 / self.period_ms, 3),
            "work_pct_of_budget_mean": round(100.0 * self.work.mean() / self.period_ms, 3),
            "frame_age_ms_p50": round(a50, 3),
            "frame_age_ms_p99": round(a99, 3),
        }
