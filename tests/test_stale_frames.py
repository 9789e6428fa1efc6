"""Stale camera frames (issue 12): a late frame holds the arm for its tick, is counted and not
stored, and the episode goes on; only a long spell pauses practice and resets the cameras, and a
camera that never comes back ends in a help request.

Staleness is made the way a hung camera driver makes it: the sim's render process is stopped
(SIGSTOP), so the cameras' newest frame stops advancing and ages, through the real daemon (sim
world, control loop, observer, store writer).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from inproc_daemon import sim_daemon, wait_until

from replay.store import ReplayReader
from robot_server.daemon import Daemon
from robot_server.evaluation import EvalParams
from robot_server.loop import ControlLoop
from robot_server.policy_slots import ActivePolicy
from robot_server.session import SessionParams
from spec.clock import now
from spec.config import ConfigError, parse_config

STALE_PAUSE_S = 1.5


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    env = {"ROBOT__SESSION__STALE_PAUSE_S": str(STALE_PAUSE_S), "ROBOT__SESSION__STALE_HELP_S": "60"}
    with sim_daemon(tmp_path_factory.mktemp("stale"), env) as d:
        yield d


def render_pid(d: Daemon) -> int:
    pids = {cam.render_pid for cam in d.cameras.values()}
    assert len(pids) == 1 and None not in pids, pids  # one render process serves both sim cameras
    return pids.pop()


@contextlib.contextmanager
def hung_cameras(d: Daemon) -> Iterator[int]:
    """The cameras' driver hangs: no new frame until the block ends (or a reset kills it)."""
    pid = render_pid(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@dataclass
class Tick:
    t: float
    source: str
    targets: int  # targets sent to the arm so far
    position: np.ndarray


class TickLog:
    """What every tick did, as seen from the control thread right after it."""

    def __init__(self, loop: ControlLoop) -> None:
        self.loop = loop
        self.ticks: list[Tick] = []

    def __enter__(self) -> TickLog:
        self.loop.on_tick.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.on_tick.remove(self)

    def __call__(self, loop: ControlLoop) -> None:
        s = loop.last_state
        assert s is not None
        self.ticks.append(Tick(now(), loop.last_source, loop.arm.stats.targets, s.position.copy()))


def start_session(d: Daemon, **params) -> str:
    return d.loop.submit(lambda s: s.start_session(SessionParams(**params)))["id"]


def session_status(d: Daemon) -> dict:
    return d.status().get("session") or {}


def wait_session_end(d: Daemon, sid: str, timeout: float) -> dict:
    wait_until(lambda: d.supervisor.last_session and d.supervisor.last_session["id"] == sid, timeout,
               "the session to end")
    assert d.recorder.flush(10)
    return d.supervisor.last_session


def episodes_of(d: Daemon, sid: str):
    r = ReplayReader(d.cfg.store.path)
    return r, [e for e in r.episodes() if e.attrs.get("session") == sid]


def test_a_short_stale_spell_holds_the_arm_and_keeps_one_episode(daemon):
    d = daemon
    n = 40
    stale_before = d.loop.stats.stale_frames
    with TickLog(d.loop) as log:
        sid = start_session(d, policy="random", phase_steps=n, max_steps=n, home_every=0, home_at_start=False)
        wait_until(lambda: session_status(d).get("total_steps", 0) >= 10, 20, "ten steps")
        with hung_cameras(d):
            wait_until(lambda: session_status(d).get("stale_ticks", 0) >= 3, 10, "three stale ticks")
        summary = wait_session_end(d, sid, 30)
    held = [i for i, t in enumerate(log.ticks) if t.source == "stale_frames"]
    k = len(held)
    assert k >= 3
    assert summary["stale_ticks"] == k and summary["stale_spells"] >= 1
    assert summary["stale_camera_resets"] == 0, "a spell shorter than session.stale_pause_s resets nothing"
    assert d.loop.stats.stale_frames >= stale_before + k
    assert d.status()["tick"]["stale_frames"] >= stale_before + k  # what /status shows

    # One episode, all of the phase's steps: the stale ticks cut nothing and added no row.
    r, eps = episodes_of(d, sid)
    assert [(e.direction, e.length, e.closed) for e in eps] == [("forward", n, True)]
    assert sum(t.source == "random" for t in log.ticks) == n, "the phase spanned n acting ticks plus the held ones"
    stamps = r.read(eps[0].id, keys=["timestamp"])["timestamp"]
    first, last = log.ticks[held[0]].t, log.ticks[held[-1]].t
    assert not np.any((stamps > first) & (stamps < last)), "no view of the stale spell was stored"

    # The arm was held: no target was sent on a stale tick, and it came to rest.
    for i in held:
        assert log.ticks[i].targets == log.ticks[i - 1].targets, f"a target was sent on stale tick {i}"
    spell = [log.ticks[i].position for i in held if i - 1 in held]  # after its last step settled
    moved = max(float(np.linalg.norm(p - spell[0])) for p in spell)
    assert moved < 0.005, f"the arm moved {moved * 1e3:.1f} mm while held"


def test_b_a_long_stale_spell_pauses_resets_the_cameras_and_resumes(daemon):
    d = daemon
    resets_before = {n: c.stats.resets for n, c in d.cameras.items()}
    counted_before = d.supervisor.counters.stale_camera_resets
    seq_before = len(ReplayReader(d.cfg.store.path).events())
    sid = start_session(d, policy="random", phase_steps=200, max_steps=60, home_every=0, home_at_start=False)
    wait_until(lambda: session_status(d).get("total_steps", 0) >= 10, 20, "ten steps")
    with hung_cameras(d) as pid:
        paused = wait_until(lambda: (st := d.status())["stage"] == "paused" and st, STALE_PAUSE_S + 10,
                            "the session to pause for its cameras")
        assert paused["session"]["paused_for_frames"] is True
        # Nothing wakes the hung process: the reset must replace it.
        resumed = wait_until(lambda: (st := d.status())["stage"] == "acting" and st, 60, "the session to resume")
    assert render_pid(d) != pid
    summary = wait_session_end(d, sid, 60)
    assert summary["end_reason"] == "max_steps reached" and summary["total_steps"] == 60
    assert summary["stale_camera_resets"] == 1 and summary["stale_ticks"] >= 5
    assert resumed["help_requests"] == []
    assert d.supervisor.counters.stale_camera_resets == counted_before + 1
    cams = d.status()["cameras"]
    assert {n: cams[n]["resets"] for n in cams} == {n: v + 1 for n, v in resets_before.items()}

    # The store keeps the pause, the reset and the resume (they outlive the daemon).
    r, eps = episodes_of(d, sid)
    events = [e for e in r.events()[seq_before:] if e.get("session") == sid]
    assert [(e["type"], e.get("by")) for e in events] == [
        ("session_paused", "cameras"), ("camera_reset", None), ("session_resumed", "cameras")]
    assert sorted(events[1]["cameras"]) == sorted(d.cameras) and events[1]["stale_s"] >= STALE_PAUSE_S
    # The pause ended the segment; the session went on in a new one.
    assert len(eps) == 2 and sum(e.length for e in eps) == 60
    assert eps[0].attrs["end_reason"].startswith("frames stale for")


def test_c_a_camera_that_never_comes_back_asks_for_help(tmp_path, monkeypatch):
    env = {"ROBOT__SESSION__STALE_PAUSE_S": "1", "ROBOT__SESSION__STALE_HELP_S": "2"}
    with sim_daemon(tmp_path, env) as d:
        sid = start_session(d, policy="random", phase_steps=200, home_every=0, home_at_start=False)
        wait_until(lambda: session_status(d).get("total_steps", 0) >= 5, 20, "five steps")
        # The render process cannot start again (as a camera that does not come back after its
        # hardware reset): the watchdog's restarts fail.
        monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
        with hung_cameras(d):
            help_open = wait_until(lambda: [h for h in d.status()["help_requests"] if h["source"] == "cameras"],
                                   20, "a help request about the cameras")
            assert "no fresh frame" in help_open[0]["reason"]
            time.sleep(1.0)  # more stale ticks: still one reset, one request, a running loop
            st = d.status()
            assert d.loop.running and d.loop.crashed is None
            assert st["stage"] == "paused" and st["session"]["stale_camera_resets"] == 1
            assert len(st["help_requests"]) == 1
            d.loop.submit(lambda s: s.pause_session())  # the operator keeps it paused from here on
            wait_until(lambda: d.status()["session"]["paused_for_frames"] is False, 2, "the operator's pause")
            t0 = time.monotonic()
            summary = d.loop.submit(lambda s: s.stop_session())
            assert time.monotonic() - t0 < 2.0, "the loop answers commands while the cameras are gone"
        assert summary["id"] == sid and summary["stale_camera_resets"] == 1
        wait_until(lambda: d.status()["mode"] == "idle", 2, "idle")
        assert d.status()["help_requests"] == [], "the session's help request ends with it"
        assert d.recorder.flush(10)
        stored = [e["type"] for e in ReplayReader(d.cfg.store.path).events()]
        assert stored.count("camera_reset") == 1 and "help_requested" in stored


def test_d_config_rejects_a_non_positive_stale_time():
    for field in ("stale_pause_s", "stale_help_s"):
        for bad in (0, -1.0):
            with pytest.raises(ConfigError, match=rf"session\.{field}: Input should be greater than 0"):
                parse_config({"session": {field: bad}}, env={})
    cfg = parse_config({}, env={})
    assert cfg.session.stale_pause_s == 3.0 and cfg.session.stale_help_s == 30.0


class StillPolicy:
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        return np.array([0.0, 0.0, 0.0, -1.0], np.float32)


def test_an_eval_episode_holds_through_a_stale_spell_and_is_not_cut(daemon):
    d = daemon
    d.policies.stage(ActivePolicy("forward", 1, StillPolicy(), {}, time.time()))
    assert d.policies.wait_active("forward", 1, 5.0)
    horizon = 30
    before = d.supervisor.finished_evals
    with TickLog(d.loop) as log:
        d.loop.submit(lambda s: s.start_eval(EvalParams(episodes=1, horizon=horizon)))
        wait_until(lambda: (d.status().get("eval") or {}).get("steps", 0) >= 5, 30, "five eval steps")
        with hung_cameras(d):
            wait_until(lambda: (d.status().get("eval") or {}).get("stale_ticks", 0) >= 3, 10, "three stale ticks")
        wait_until(lambda: d.supervisor.finished_evals > before, 30, "the eval to end")
    summary = d.supervisor.last_eval
    held = [t for t in log.ticks if t.source == "stale_frames"]
    assert summary["stale_ticks"] == len(held) >= 3
    assert [(res["steps"], res["success"]) for res in summary["results"]] == [(horizon, False)]
    assert d.recorder.flush(10)
    r = ReplayReader(d.cfg.store.path)
    (ep,) = [e for e in r.episodes() if e.attrs.get("session") == summary["id"]]
    assert ep.length == horizon and ep.success is False
    stamps = r.read(ep.id, keys=["timestamp"])["timestamp"]
    assert not np.any((stamps > held[0].t) & (stamps < held[-1].t)), "no view of the stale spell was stored"
