"""The process faults bench/soak.py drives itself, each timed from injection to detection and recovery.

learner_kill9   kill -9 the learner and start it again (as its supervisor would). Detected when its
                supervisor (the soak) sees it gone; recovered when a push of the new learner went
                through (it resumes from its saved state: the soak waits for one before the first fault).
daemon_restart  stop the daemon, alternately with kill -9 (a crash: steps in flight are lost) and
                SIGTERM (a clean stop: none are), and start it again. Detected when the learner's
                pushes start failing; recovered when the daemon ticks again and a push went through.
network_cut     the proxy between learner and daemon forwards nothing for `cut_s`. Detected when a
                push fails; recovered at the next push that goes through.

Every record: kind, at_s (since the soak began), detection_s and recovery_s (from the injection;
None: not seen), steps_lost (steps the daemon took that never reached the store), and details.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from bench.soak_rig import LogWatch, Rig
from learner.state import latest

RETRY = r"will retry"


def _wait(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> float | None:
    """Poll until `pred()` is truthy; the monotonic time it was, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(interval)
    return None


def _rose(rig: Rig, base: dict[str, int]) -> bool:
    """A push went through: an active version above `base` in some direction."""
    now = rig.versions()
    return now is not None and any(now[d] > base[d] for d in base)


def _since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 2)


def _recorder_errors(rig: Rig) -> int | None:
    st = rig.status()
    return None if st is None else int(st["store"]["errors"])


def learner_kill9(rig: Rig, timeout: float) -> dict[str, Any]:
    errors0 = _recorder_errors(rig)
    had_state = latest(rig.run_dir / "state") is not None
    t0 = time.monotonic()
    rig.kill_learner()
    detected = time.monotonic()  # the soak is the learner's supervisor: waitpid returned
    log = rig.start_learner()
    # Its first line: a push the dead learner had sent is through by now, so a rise from here is the new one's.
    started = _wait(lambda: "learner: store" in log.read_text(errors="replace"), timeout)
    base = rig.versions() or {d: 10**9 for d in ("forward", "backward")}
    resumed = _wait(lambda: "resumed from" in log.read_text(errors="replace"), timeout) if had_state else None
    recovered = None if started is None else _wait(lambda: _rose(rig, base), timeout)
    errors1 = _recorder_errors(rig)
    return {
        "detection_s": _since(t0, detected), "recovery_s": _since(t0, recovered),
        # The daemon goes on recording: a step is lost only if its writer failed one.
        "steps_lost": None if errors0 is None or errors1 is None else errors1 - errors0,
        "detail": {"learner_log": log.name, "had_saved_state": had_state, "started_s": _since(t0, started),
                   "resumed_s": _since(t0, resumed)},
    }


RESTART_AFTER_S = 10.0


def daemon_restart(rig: Rig, timeout: float, sig: signal.Signals) -> dict[str, Any]:
    watch = LogWatch(rig.learner_logs[-1], RETRY)
    watch.poll()
    fails0 = watch.count
    t0 = time.monotonic()
    inst = rig.end_daemon(sig)
    # A supervisor restarts a daemon within seconds: wait at most that long for the learner to log a
    # failed call (it logs none if it calls nothing while the daemon is down), then restart.
    detected = _wait(lambda: watch.poll() > fails0, RESTART_AFTER_S)
    healthy = rig.restart_daemon()
    st0 = rig.status() or {"tick": {"ticks": 0}}
    ticking = _wait(lambda: (rig.status() or st0)["tick"]["ticks"] > st0["tick"]["ticks"]
                    and bool(((rig.status() or {}).get("store") or {}).get("recording")), timeout)
    base = rig.versions() or {d: 10**9 for d in ("forward", "backward")}
    recovered = _wait(lambda: _rose(rig, base), timeout)
    return {
        "detection_s": _since(t0, detected), "recovery_s": _since(t0, recovered),
        "steps_lost": inst.lost,
        "detail": {"signal": sig.name, "healthy_s": _since(t0, healthy), "ticking_s": _since(t0, ticking),
                   "steps_taken": inst.produced, "steps_committed": inst.committed,
                   "restored_versions": base},
    }


def network_cut(rig: Rig, timeout: float, cut_s: float) -> dict[str, Any]:
    watch = LogWatch(rig.learner_logs[-1], RETRY)
    watch.poll()
    fails0 = watch.count
    errors0 = _recorder_errors(rig)
    t0 = time.monotonic()
    rig.proxy.cut()
    detected = _wait(lambda: watch.poll() > fails0, cut_s)
    time.sleep(max(0.0, cut_s - (time.monotonic() - t0)))
    base = rig.versions() or {d: 10**9 for d in ("forward", "backward")}
    rig.proxy.restore()
    restored = time.monotonic()
    recovered = _wait(lambda: _rose(rig, base), timeout)
    errors1 = _recorder_errors(rig)
    return {
        "detection_s": _since(t0, detected), "recovery_s": _since(t0, recovered),
        "steps_lost": None if errors0 is None or errors1 is None else errors1 - errors0,
        "detail": {"cut_s": round(restored - t0, 2), "after_restore_s": _since(restored, recovered)},
    }
