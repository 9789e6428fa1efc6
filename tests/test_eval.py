"""Eval sessions in the daemon (sim world, real control loop and store writer): the forward policy's
mean action for K episodes from a reset scene, each episode's success stored as its verdict; in sim
the task judges, on the robot (here: the sim with its task taken away) the operator does."""

from __future__ import annotations

import time

import numpy as np
import pytest
from inproc_daemon import sim_daemon, wait_until

from replay.eval_results import success_by_version
from replay.store import ReplayReader
from robot_server.daemon import Daemon
from robot_server.evaluation import EvalParams
from robot_server.policy_slots import ActivePolicy
from robot_server.tick import CommandError


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with sim_daemon(tmp_path_factory.mktemp("eval")) as d:
        yield d


class ExpertPolicy:
    """The scripted expert behind the policy interface: an eval that can succeed."""

    def __init__(self, expert) -> None:
        self.expert = expert
        self.deterministic: list[bool] = []

    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        self.deterministic.append(deterministic)
        return self.expert.act("forward")


class StillPolicy:
    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        return np.array([0.0, 0.0, 0.0, -1.0], np.float32)


def push(d: Daemon, runner, version: int) -> None:
    d.policies.stage(ActivePolicy("forward", version, runner, {}, time.time()))
    assert d.policies.wait_active("forward", version, 5.0)


def eval_episodes(d: Daemon, session: str):
    assert d.recorder.flush(10)
    return [e for e in ReplayReader(d.cfg.store.path).episodes() if e.attrs.get("session") == session]


def run_eval(d: Daemon, timeout: float, **params) -> dict:
    before = d.supervisor.finished_evals
    d.loop.submit(lambda s: s.start_eval(EvalParams(**params)))
    wait_until(lambda: d.supervisor.finished_evals > before, timeout, "the eval session to end")
    return d.supervisor.last_eval


def test_an_eval_needs_a_forward_policy(daemon):
    with pytest.raises(CommandError, match="no forward policy"):
        daemon.loop.submit(lambda s: s.start_eval(EvalParams(episodes=1, horizon=5)))
    assert daemon.supervisor.mode == "idle"


def test_sim_eval_success_is_the_task_solved_within_the_horizon(daemon):
    d = daemon
    policy = ExpertPolicy(d.devices.expert)
    push(d, policy, 7)
    summary = run_eval(d, 90, episodes=1, horizon=300)
    assert summary["end_reason"] == "all episodes done" and summary["successes"] == 1
    assert all(policy.deterministic), "an eval acts with the policy's mean action"
    (ep,) = eval_episodes(d, summary["id"])
    assert ep.kind == "eval" and ep.direction == "forward" and ep.success is True
    assert ep.attrs["policy_version"] == 7 and ep.attrs["judged_by"] == "task" and ep.attrs["goal_score"] is None
    assert ep.length < 300, "the episode ends at the first success"


def test_robot_eval_waits_for_the_operators_reset_and_verdict(daemon):
    d = daemon
    push(d, StillPolicy(), 8)
    task = d.supervisor.ctx.task
    d.loop.submit(lambda s: setattr(s.ctx, "task", None))  # the robot: no scene reset, no success test
    try:
        d.loop.submit(lambda s: s.start_eval(EvalParams(episodes=2, horizon=3)))
        for verdict in (True, False):
            wait_until(lambda: d.supervisor.stage == "awaiting_reset", 20, "the reset request")
            assert any(h["source"] == "manual_reset" for h in d.supervisor.ctx.help.as_list())
            with pytest.raises(CommandError, match="no episode awaits a verdict"):
                d.loop.submit(lambda s: s.eval_verdict(True))
            d.loop.submit(lambda s: s.confirm_reset())
            wait_until(lambda: d.supervisor.stage == "awaiting_verdict", 10, "the horizon")
            time.sleep(0.3)
            assert d.supervisor.evaluation.steps == 3, "no steps beyond the horizon"
            out = d.loop.submit(lambda s, v=verdict: s.eval_verdict(v))
        assert out["end_reason"] == "all episodes done" and out["successes"] == 1
        assert d.supervisor.mode == "idle"
        eps = eval_episodes(d, out["id"])
        assert [(e.success, e.length, e.attrs["judged_by"], e.attrs["policy_version"]) for e in eps] == [
            (True, 3, "operator", 8), (False, 3, "operator", 8)]
        assert all(e.attrs["goal_score"] is None for e in eps), "the checkpoint carries no goal classifier"
    finally:
        d.loop.submit(lambda s: s.stop_eval() if s.evaluation else None)
        d.loop.submit(lambda s: setattr(s.ctx, "task", task))


def test_a_stopped_episode_is_dropped_and_results_aggregate_by_version(daemon):
    d = daemon
    push(d, StillPolicy(), 9)
    d.loop.submit(lambda s: s.start_eval(EvalParams(episodes=3, horizon=10_000)))
    wait_until(lambda: d.supervisor.evaluation and d.supervisor.evaluation.steps >= 3, 20, "eval steps")
    summary = d.loop.submit(lambda s: s.stop_eval())
    assert summary["end_reason"] == "stopped by operator" and summary["results"] == []
    assert eval_episodes(d, summary["id"]) == [], "an episode without a verdict never counts"
    rows = {r["version"]: r for r in success_by_version(ReplayReader(d.cfg.store.path).episodes())}
    assert {v: (r["episodes"], r["successes"]) for v, r in rows.items()} == {7: (1, 1), 8: (2, 1)}
    assert rows[8]["success_rate"] == 0.5
