"""The steps the device-fault tests share (tests/test_device_faults.py on the sim,
tests/test_device_faults_franka_sim.py on franka-sim): practise, inject one fault and wait until
the daemon got over it, stop and check that every counted step is in the store."""

from __future__ import annotations

import numpy as np
from inproc_daemon import wait_until

from replay.store import ReplayReader
from robot_server.daemon import Daemon
from robot_server.faults import FaultKind
from robot_server.session import SessionParams


def practise(d: Daemon) -> str:
    params = SessionParams(policy="random", phase_steps=10_000, home_every=0, home_at_start=False)
    if d.supervisor.practice is not None:  # a failed test before left its session running
        d.loop.submit(lambda s: s.stop_session())
    sid = d.loop.submit(lambda s: s.start_session(params))["id"]
    wait_until(lambda: (d.status().get("session") or {}).get("total_steps", 0) >= 5, 20, "five steps")
    return sid


def stop_and_check_store(d: Daemon, sid: str) -> dict:
    """Stop the session; every step it counted is in the store, in closed episodes."""
    summary = d.loop.submit(lambda s: s.stop_session())
    assert d.recorder.flush(10)
    eps = [e for e in ReplayReader(d.cfg.store.path).episodes() if e.attrs.get("session") == sid]
    assert eps and all(e.closed for e in eps)
    assert sum(e.length for e in eps) == summary["total_steps"], "a committed step was lost"
    return summary


def inject(d: Daemon, kind: FaultKind, timeout: float) -> dict:
    """Inject one fault now; return its record once the daemon has recovered or escalated it."""
    n = len(d.faults.records())
    ticks = d.loop.stats.ticks
    d.injector.inject(kind)

    def settled():
        rec = d.faults.records()[n]
        return rec if rec["recovered_at"] is not None else None

    rec = wait_until(settled, timeout, f"the {kind.value} fault to be recovered")
    assert rec["kind"] == kind.value
    assert rec["injected_at"] <= rec["detected_at"] <= rec["recovered_at"]
    wait_until(lambda: d.loop.stats.ticks > ticks + 10, 5, "the loop ticking on")
    assert d.loop.running and d.loop.crashed is None
    return rec


def takeover_moves_without_a_jump(d) -> None:
    """Inject a takeover mid-practice: counted, no tick moves the arm more than one action step, the
    operator moves it sideways, and the store is whole afterwards."""
    sid = practise(d)
    takeovers = d.supervisor.counters.takeovers
    positions: list[tuple[str, np.ndarray]] = []

    def log(loop):
        positions.append((loop.last_source, loop.last_state.position.copy()))

    d.loop.on_tick.append(log)
    try:
        wait_until(lambda: len(positions) >= 3, 5, "ticks logged before the takeover")
        rec = inject(d, FaultKind.TAKEOVER, 15)
    finally:
        d.loop.on_tick.remove(log)
    assert d.supervisor.counters.takeovers == takeovers + 1
    assert "moved the arm by" in rec["detail"]
    operated = [i for i, (src, _) in enumerate(positions) if src == "teleop:operator"]
    assert len(operated) >= 5
    # No jump: each tick of the takeover moves the arm at most one action step from where it was.
    step = d.cfg.action.max_translation_m
    for i in operated:
        moved = float(np.linalg.norm(positions[i][1] - positions[i - 1][1]))
        assert moved < step + 0.005, f"the arm jumped {moved * 1e3:.1f} mm at takeover tick {i}"
    moved_y = positions[operated[-1]][1][1] - positions[operated[0] - 1][1][1]
    assert abs(moved_y) > 0.02, "the operator moved the arm sideways"
    stop_and_check_store(d, sid)
