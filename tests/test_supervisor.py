"""The practice session as the daemon runs it (sim world, real control loop and store writer):
phases become segments, teleop takeovers are flagged interventions, manual resets happen at the
switch to forward, the robot asks for help, the e-stop halts recording, and demonstrations end
only after their goal was held GOAL_HOLD_STEPS steps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from inproc_daemon import sim_daemon, wait_until

from replay.store import ReplayReader
from robot_server.daemon import Daemon
from robot_server.session import SessionParams
from robot_server.tick import CommandError
from spec.goal import GOAL_HOLD_STEPS


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with sim_daemon(tmp_path_factory.mktemp("supervisor")) as d:
        yield d


def run_session(d: Daemon, timeout: float = 60.0, **params) -> dict:
    before = d.supervisor.finished_sessions
    d.loop.submit(lambda s: s.start_session(SessionParams(**params)))
    wait_until(lambda: d.supervisor.finished_sessions > before, timeout, "the session to end")
    assert d.recorder.flush(10)
    return d.supervisor.last_session


def episodes_of(d: Daemon, session_id: str):
    r = ReplayReader(d.cfg.store.path)
    return r, [e for e in r.episodes() if e.attrs.get("session") == session_id]


def test_each_phase_is_its_own_segment_and_directions_alternate(daemon):
    s = run_session(daemon, policy="random", phase_steps=8, max_steps=24, home_every=0)
    _r, eps = episodes_of(daemon, s["id"])
    assert [(e.direction, e.length) for e in eps] == [("forward", 8), ("backward", 8), ("forward", 8)]
    assert [e.attrs["phase"] for e in eps] == [0, 1, 2]
    assert all(e.kind == "practice" and e.closed for e in eps)


def test_teleop_takeover_is_one_intervention_with_flagged_steps(daemon):
    d = daemon
    before = d.supervisor.counters.takeovers
    d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=60, max_steps=60,
                                                          home_at_start=False)))
    wait_until(lambda: (d.supervisor.schedule and d.supervisor.schedule.total_steps >= 10), 20, "steps")
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:  # an operator holding a key for a second
        d.keyboard.set(x=1.0, hold_s=0.3)
        time.sleep(0.1)
    sid = d.supervisor.schedule.id
    wait_until(lambda: d.supervisor.finished_sessions and d.supervisor.last_session["id"] == sid, 30, "end")
    assert d.recorder.flush(10)
    assert d.supervisor.counters.takeovers == before + 1
    r, (ep,) = episodes_of(d, sid)
    flags = r.read(ep.id, keys=["intervention"])["intervention"]
    idx = np.flatnonzero(flags)
    assert len(idx) >= 8, "the held key should give about 10 steps plus the release time"
    assert np.all(np.diff(idx) == 1), "one contiguous takeover"
    events = [ev for ev in ep.attrs.get("events", []) if ev.get("type") == "intervention"]
    assert [ev["kind"] for ev in events] == ["takeover"]
    actions = r.read(ep.id, keys=["action"])["action"]
    assert actions[idx[0], 0] > 0.3 and np.allclose(actions[: idx[0], :3], 0.0)  # hold, then the operator's +x


def test_manual_reset_happens_at_the_switch_to_forward(daemon):
    d = daemon
    world = d.devices.world
    before = d.supervisor.counters.manual_resets
    finished = d.supervisor.finished_sessions
    d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=6, max_steps=30,
                                                          home_every=0, home_at_start=False)))
    wait_until(lambda: d.supervisor.schedule and d.supervisor.schedule.total_steps >= 2, 20, "steps")
    # Knock the cube into the goal zone as if the task were done; the reset must put it back.
    d.loop.submit(lambda s: world.task.place_cube((0.53, 0.12)))
    d.loop.submit(lambda s: s.request_reset("cube stuck in the goal"))
    # Not at the next switch (to backward): only when forward comes round again.
    wait_until(lambda: d.supervisor.schedule and d.supervisor.schedule.phase == 1, 20, "backward phase")
    assert d.supervisor.counters.manual_resets == before
    wait_until(lambda: d.supervisor.finished_sessions > finished, 60, "the session to end")
    s = d.supervisor.last_session
    assert d.supervisor.counters.manual_resets == before + 1
    assert s["interventions_by_kind"].get("manual_reset") == 1
    assert world.task.success("backward"), "the sim reset put the cube back in the start zone"


def test_robot_asks_for_help_when_the_object_leaves_the_workspace(daemon):
    d = daemon
    world = d.devices.world
    d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=200, home_at_start=False)))
    try:
        d.loop.submit(lambda s: world.task.place_cube((0.9, 0.6), arm_home=False))
        st = wait_until(lambda: [h for h in d.status()["help_requests"] if h["source"] == "object"], 10, "help")
        assert "left the workspace" in st[0]["reason"]
        assert d.supervisor.schedule.reset_requested
    finally:
        d.loop.submit(lambda s: s.stop_session())
        d.loop.submit(lambda s: world.task.reset_scene("forward", s.rng))


def test_estop_halts_within_a_tick_and_stops_recording(daemon):
    d = daemon
    d.loop.submit(lambda s: s.start_session(SessionParams(policy="random", phase_steps=500, home_at_start=False)))
    wait_until(lambda: d.supervisor.schedule and d.supervisor.schedule.total_steps >= 5, 20, "steps")
    t0 = time.monotonic()
    d.loop.submit(lambda s: s.estop("test"))
    assert time.monotonic() - t0 < 1.0
    assert d.devices.arm.read().mode.value == "stopped"
    # Steps taken before the stop may still be in the writer's queue on a busy machine: let them land.
    assert d.recorder.flush(10)
    steps = d.recorder.stats.steps
    time.sleep(0.5)
    assert d.recorder.stats.steps == steps, "nothing is recorded while stopped"
    with pytest.raises(Exception, match="release it first"):
        d.loop.submit(lambda s: s.start_session(SessionParams()))
    d.loop.submit(lambda s: s.release_estop())
    assert d.supervisor.stage == "paused"  # motion resumes only when the operator says so
    d.loop.submit(lambda s: s.stop_session())


# ------------------------------------------------------------------ demonstrations hold their goal
def _cube_positions(d: Daemon, states: np.ndarray) -> np.ndarray:
    """Cube centres from recorded obs/state rows (sim.task.STATE_LAYOUT: cube xyz at 4:7)."""
    low, high = np.array(d.cfg.workspace.low), np.array(d.cfg.workspace.high)
    return low + (states[:, 4:7] + 1.0) / 2.0 * (high - low)


def _at_goal(d: Daemon, states: np.ndarray, direction: str) -> np.ndarray:
    from sim.model import CUBE_HALF
    from sim.task import goal_zone

    zone = goal_zone(direction)
    return np.array([zone.contains(p) and abs(p[2] - CUBE_HALF) < 0.01 for p in _cube_positions(d, states)])


def _finished_demo(d: Daemon, before: int, timeout: float):
    wait_until(lambda: d.supervisor.counters.demos_recorded > before, timeout, "the demo to finish")
    assert d.recorder.flush(10)
    r = ReplayReader(d.cfg.store.path)
    ep = [e for e in r.episodes() if e.kind == "demo"][-1]
    return r, ep


def test_scripted_demo_ends_only_after_the_goal_is_held(daemon):
    d = daemon
    before = d.supervisor.counters.demos_recorded
    d.loop.submit(lambda s: s.start_demo("forward", "expert", 400))
    r, ep = _finished_demo(d, before, 90)
    assert ep.success is True and d.supervisor.last_demo["success"] is True
    at_goal = _at_goal(d, r.read(ep.id, keys=["obs/state"])["obs/state"], "forward")
    assert at_goal[-GOAL_HOLD_STEPS:].all(), at_goal[-GOAL_HOLD_STEPS - 5:]
    assert not at_goal[0], "the expert started from the start zone"


def test_teleop_demo_success_in_sim_records_the_goal_hold(daemon):
    from sim.task import goal_zone

    d = daemon
    world = d.devices.world
    goal = np.array(goal_zone("forward").center)
    try:
        # Not at the goal: the sim's success test refuses the operator's "success".
        d.loop.submit(lambda s: world.task.reset_scene("forward", s.rng))
        d.loop.submit(lambda s: s.start_demo("forward", "teleop", 600))
        wait_until(lambda: d.supervisor.demo and d.supervisor.demo.steps >= 3, 10, "demo steps")
        with pytest.raises(CommandError, match="goal is not reached"):
            d.loop.submit(lambda s: s.finish_demo(success=True))
        d.loop.submit(lambda s: s.discard_demo())

        d.loop.submit(lambda s: world.task.place_cube(goal))
        before = d.supervisor.counters.demos_recorded
        d.loop.submit(lambda s: s.start_demo("forward", "teleop", 600))
        wait_until(lambda: d.supervisor.demo and d.supervisor.demo.steps >= 3, 10, "demo steps")
        out = d.loop.submit(lambda s: s.finish_demo(success=True))
        assert out["closed"] is False and 0 < out["hold_steps_left"] < GOAL_HOLD_STEPS
        assert d.supervisor.stage == "holding_goal"
        r, ep = _finished_demo(d, before, 30)
        assert ep.success is True and ep.length >= GOAL_HOLD_STEPS > out["steps"]
        data = r.read(ep.id, keys=["obs/state", "action"])
        assert _at_goal(d, data["obs/state"], "forward")[-GOAL_HOLD_STEPS:].all()
        assert np.allclose(data["action"][out["steps"]:, :3], 0.0), "the arm is held during the hold"
    finally:
        d.loop.submit(lambda s: s.discard_demo() if s.demo else None)
        d.loop.submit(lambda s: world.task.reset_scene("forward", s.rng))


def test_teleop_demo_success_on_the_robot_records_a_held_goal_window(daemon):
    d = daemon
    task = d.supervisor.ctx.task
    d.loop.submit(lambda s: setattr(s.ctx, "task", None))  # the robot: no success test
    try:
        before = d.supervisor.counters.demos_recorded
        d.loop.submit(lambda s: s.start_demo("backward", "teleop", 600))
        wait_until(lambda: d.supervisor.demo and d.supervisor.demo.steps >= 3, 10, "demo steps")
        out = d.loop.submit(lambda s: s.finish_demo(success=True))
        assert out["closed"] is False and out["hold_steps_left"] == GOAL_HOLD_STEPS
        r, ep = _finished_demo(d, before, 30)
        assert ep.success is True and ep.length == out["steps"] + GOAL_HOLD_STEPS
        actions = r.read(ep.id, keys=["action"])["action"]
        assert np.allclose(actions[-GOAL_HOLD_STEPS:, :3], 0.0)
    finally:
        d.loop.submit(lambda s: s.discard_demo() if s.demo else None)
        d.loop.submit(lambda s: setattr(s.ctx, "task", task))


# ------------------------------------------------------------------ help after steps without progress
def _help_sources(d: Daemon) -> set[str]:
    return {h["source"] for h in d.status()["help_requests"]}


@pytest.fixture
def help_after_12(daemon):
    old = daemon.cfg.session.help_after_steps
    daemon.cfg.session.help_after_steps = 12
    yield daemon
    daemon.cfg.session.help_after_steps = old
    daemon.loop.submit(lambda s: s.stop_session() if s.practice else None)


def _stored_help(d: Daemon) -> list[dict]:
    assert d.recorder.flush(10)
    return [e for e in ReplayReader(d.cfg.store.path).events() if e["type"].startswith("help_")]


def test_forward_help_after_steps_without_the_sim_success(help_after_12):
    d = help_after_12
    world = d.devices.world
    d.loop.submit(lambda s: world.task.reset_scene("forward", s.rng))  # never solved by "hold"
    before = len(_stored_help(d))
    d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=8, home_every=0,
                                                          home_at_start=False)))
    # Forward steps 0-7, backward 8-15 (the cube rests in A: backward success), forward 16...
    wait_until(lambda: "forward_no_progress" in _help_sources(d), 20, "the forward help request")
    assert d.supervisor.schedule.total_steps >= 20 and d.supervisor.schedule.direction == "forward"
    assert "backward_no_progress" not in _help_sources(d)
    d.loop.submit(lambda s: s.confirm_success("forward"))  # the operator's word resolves it
    wait_until(lambda: "forward_no_progress" not in _help_sources(d), 2, "the request resolved")
    stored = _stored_help(d)[before:][:2]
    assert [(e["type"], e["source"]) for e in stored] == [
        ("help_requested", "forward_no_progress"), ("help_resolved", "forward_no_progress")]
    assert "12 forward steps" in stored[0]["reason"]


def test_backward_help_after_steps_without_the_sim_backward_success(help_after_12):
    from sim.task import goal_zone

    d = help_after_12
    world = d.devices.world
    # The cube in B: forward is "done", backward (back to A) never is.
    d.loop.submit(lambda s: world.task.place_cube(np.array(goal_zone("forward").center)))
    try:
        d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=8, home_every=0,
                                                              home_at_start=False)))
        wait_until(lambda: "backward_no_progress" in _help_sources(d), 30, "the backward help request")
        assert d.supervisor.schedule.total_steps >= 28 and "forward_no_progress" not in _help_sources(d)
        d.loop.submit(lambda s: s.stop_session())
        wait_until(lambda: "backward_no_progress" not in _help_sources(d), 2, "the session's requests to end with it")
    finally:
        d.loop.submit(lambda s: world.task.reset_scene("forward", s.rng))


def test_on_the_robot_help_comes_after_steps_without_an_operator_confirmed_success(help_after_12):
    d = help_after_12
    task = d.supervisor.ctx.task
    d.loop.submit(lambda s: setattr(s.ctx, "task", None))  # the robot: no success test
    try:
        d.loop.submit(lambda s: s.start_session(SessionParams(policy="hold", phase_steps=6, home_every=0,
                                                              home_at_start=False)))
        wait_until(lambda: d.supervisor.schedule.total_steps >= 8, 20, "steps")
        d.loop.submit(lambda s: s.confirm_success())  # forward, 6 steps in: counts from zero again
        wait_until(lambda: {"forward_no_progress", "backward_no_progress"} <= _help_sources(d), 30,
                   "both help requests")
        # Backward asked after its 12th step (step 18), forward only 12 steps after the confirmation.
        assert d.supervisor.schedule.total_steps >= 30
    finally:
        d.loop.submit(lambda s: s.stop_session() if s.practice else None)
        d.loop.submit(lambda s: setattr(s.ctx, "task", task))
