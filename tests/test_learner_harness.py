"""The synchronous sim harness: demo routing (goal positives are goal frames), the per-step schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.harness import HarnessConfig, SimHarness
from sim.model import CUBE_HALF
from sim.task import goal_zone

torch.set_num_threads(1)


def harness(**kw) -> SimHarness:
    base = dict(mode="state", env_steps=60, demos=2, eval_every=30, eval_episodes=1, eval_horizon=5,
                phase_steps=10, home_every=0, seed_steps=20, preset="tiny", device="cpu")
    return SimHarness(HarnessConfig(**(base | kw)))


def cube_from_state(state: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Invert the task's state vector (STATE_LAYOUT) to the cube centre in metres."""
    return (state[..., 4:7] + 1.0) / 2.0 * (high - low) + low


def test_every_goal_positive_satisfies_the_tasks_success_test():
    h = harness()
    try:
        demos = h.collect_demos()
        pos = h.core.buffers.positives["forward"].frames
        assert len(pos) == 21 * len(demos["forward"])
        low, high = (np.asarray(v) for v in (h.cfg.workspace.low, h.cfg.workspace.high))
        cube = cube_from_state(pos, low, high)
        zone = goal_zone("forward")
        # The task's success test (PushCubeTask.success): on the table and inside the goal zone.
        assert all(abs(c[2] - CUBE_HALF) < 0.01 and zone.contains(c) for c in cube), cube
        # The same frames, by the env's own success flag on each demo step's next state.
        for demo, frames in zip(demos["forward"], np.split(pos, len(demos["forward"])), strict=True):
            states = np.stack([t.obs["obs/state"] for t in demo] + [demo[-1].next_obs["obs/state"]])
            np.testing.assert_array_equal(frames, states[-21:])
            assert all(t.success for t in demo[-21:])  # frame k+1 is transition k's next state
    finally:
        h.close()


def test_the_harness_runs_the_per_step_schedule():
    h = harness(method="medalpp")
    try:
        res = h.run()
    finally:
        h.close()
    s = h.settings
    post_seed = 60 - s.seed_steps
    ups = h.core.agent_updates()
    # One agent step per post-seed env step, for the agent in control; 10-step phases alternate.
    assert ups["forward"] + ups["backward"] == post_seed
    assert {d: a.critic_updates for d, a in h.core.agents.items()} == {d: 2 * u for d, u in ups.items()}
    clf = h.core.classifier_steps()
    assert clf == {d: (60 - s.seed_steps) // s.clf_every(d) + 1 for d in ("forward", "backward")}
    assert h.core.router.env_steps == 60 and h.core.router.demos_used == {"forward": 2, "backward": 2}
    assert [p["env_steps"] for p in res["curve"]] == [0, 30, 60]
    assert all(0.0 <= p["deployed_success"] <= 1.0 for p in res["curve"])


@pytest.mark.parametrize("method", ["episodic", "naive", "fbrl", "bc"])
def test_baselines_run(method):
    h = harness(method=method, env_steps=40)
    try:
        res = h.run()
    finally:
        h.close()
    if method == "episodic":
        assert res["interventions"] == 4  # a reset after every 10-step episode
    if method in ("episodic", "naive"):
        assert set(h.core.agents) == {"forward"} and h.core.agent_updates()["forward"] == 20
    if method == "fbrl":
        assert len(h.core.buffers.positives["backward"]) == 2 * h.hc.initial_positives
    if method == "bc":
        assert h.core.agents["forward"].critic_updates == 0 and h.core.agents["forward"].updates == 40


def test_practice_bookkeeping_with_the_scripted_expert_acting():
    # With the expert in control every practice phase succeeds: forward from the start, backward from
    # where forward left the cube, forward again from where backward left it. So the window's rates
    # are 1 and the continuing reward (forward success per step) is positive.
    h = harness(method="medalpp", env_steps=240, phase_steps=60, seed_steps=0, eval_every=240)
    h.act = lambda d, obs, deterministic: h.env.expert_action()  # the env's direction is d's
    try:
        res = h.run()
    finally:
        h.close()
    p = res["curve"][-1]
    assert p["practice_forward_success"] == 1.0 and p["practice_backward_success"] == 1.0
    assert p["forward_success_after_backward"] == 1.0
    assert 0.0 < p["continuing_reward"] < 1.0 and p["interventions"] == 0
    assert p["forward_start_cube_to_start_zone_m"] < 0.06  # backward pushed it back into zone A


def test_ablation_settings_reach_the_learning_core_and_bad_values_are_named():
    from typer.testing import CliRunner

    from learner.cli import app

    h = SimHarness(HarnessConfig(env_steps=10, seed_steps=5, bc_backward=(1.0, 0.25, 0, 100), backward_positives="pre_goal",
                                backward_reward="log_p", backward_entropy="off"))
    try:
        assert h.settings.backward.bc == (1.0, 0.25, 0, 100) and h.settings.backward_positives_pre_goal
        assert h.core.classifiers["backward"].reward_kind == "log_p"
        assert not h.settings.backward.learn_alpha and h.settings.backward.alpha_init == 0.0
    finally:
        h.close()
    with pytest.raises(ValueError, match="backward_positives must be one of"):
        HarnessConfig(backward_positives="goal")
    with pytest.raises(ValueError, match="backward_entropy must be"):
        HarnessConfig(backward_entropy="zero")
    with pytest.raises(ValueError, match="backward_reward must be one of"):
        HarnessConfig(backward_reward="log")
    r = CliRunner().invoke(app, ["train-sim", "--bc-backward", "1,0.25"])
    assert r.exit_code == 2 and "--bc-backward must be 'v0,v1,step0,step1'" in r.output, r.output


def test_the_help_rule_resets_a_stuck_scene_and_counts_it():
    # Random actions never solve the task: with the daemon's help rule the scene is reset (an
    # intervention) at a switch to forward once a direction went help_after_steps without success,
    # although the cube never left the workspace; without the rule nothing is reset.
    for rule, expected in ((0, 0), (30, 3)):  # 100 steps in phases of 10: resets after 30, 60, 90
        h = harness(method="naive", env_steps=100, seed_steps=100, eval_every=100, help_after_steps=rule)
        h.env.task.object_in_workspace = lambda: True  # the workspace rule stays out of it
        try:
            res = h.run()
        finally:
            h.close()
        assert res["help_interventions"] == expected and res["interventions"] == expected, (rule, res["interventions"])
    with pytest.raises(ValueError, match="help_after_steps must be >= 0"):
        HarnessConfig(help_after_steps=-1)


def test_critic_layer_norm_option_reaches_the_critic():
    h = harness(method="naive", critic_layer_norm=True)
    try:
        critic = h.core.agents["forward"].critic
        assert h.settings.sizes.critic_layer_norm and critic.norms is not None
        assert len(critic.norms) == h.settings.sizes.critic_layers
    finally:
        h.close()


def test_goal_classifier_interval_option_sets_how_often_it_trains():
    # 60 env steps after 20 seed steps: one C_f step when seeding ends, then one every N env steps.
    for every, expected in ((None, 1), (5, 9)):
        h = harness(method="naive", clf_forward_every=every)
        try:
            h.run()
            assert h.core.classifier_steps()["forward"] == expected, every
        finally:
            h.close()
    with pytest.raises(ValueError, match="clf_forward_every must be >= 1"):
        HarnessConfig(clf_forward_every=0)


def test_task_reward_option_pays_the_forward_agent_the_true_success():
    h = harness(method="naive", forward_reward="task")
    try:
        demos = h.collect_demos()
        pay = h.core.rewards["forward"]
        for demo in demos["forward"]:
            nxt = torch.from_numpy(np.stack([t.next_obs["obs/state"] for t in demo]))
            # Paid on each stored transition exactly the env's own success flag for it.
            np.testing.assert_array_equal(pay(nxt).numpy(), [float(t.success) for t in demo])
        back = demos["backward"][0]
        start, end = (torch.from_numpy(o["obs/state"][None]) for o in (back[0].obs, back[-1].next_obs))
        assert pay(start).item() == 1.0 and pay(end).item() == 0.0  # the cube leaves the goal zone
        res = h.run()
        rewards = [p["forward/reward_mean"] for p in res["curve"] if not np.isnan(p["forward/reward_mean"])]
        assert rewards and all(0.0 <= r <= 1.0 for r in rewards)  # log C_f would be < 0
    finally:
        h.close()
    classifier = harness(method="naive")
    try:
        rewards = [p["forward/reward_mean"] for p in classifier.run()["curve"]
                   if not np.isnan(p["forward/reward_mean"])]
        assert rewards and all(r < 0.0 for r in rewards)
    finally:
        classifier.close()
    with pytest.raises(ValueError, match="forward_reward must be one of"):
        HarnessConfig(forward_reward="oracle")
    with pytest.raises(ValueError, match="needs mode 'state'"):
        HarnessConfig(forward_reward="task", mode="pixels")


def test_update_ratio_and_demo_share_options_reach_both_agents():
    h = harness(method="medalpp", utd=3, demo_rows=100)
    try:
        assert h.settings.forward.utd == h.settings.backward.utd == 3
        assert h.settings.demo_rows == 100
        h.run()
        ups = h.core.agent_updates()
        assert {d: a.critic_updates for d, a in h.core.agents.items()} == {d: 3 * u for d, u in ups.items()}
    finally:
        h.close()
    with pytest.raises(ValueError, match="demo_rows must be below the batch size 256, got 256"):
        SimHarness(HarnessConfig(**(dict(preset="tiny", device="cpu", demo_rows=256))))
    with pytest.raises(ValueError, match="utd must be >= 1"):
        HarnessConfig(utd=0)
    from typer.testing import CliRunner

    from learner.cli import app

    r = CliRunner().invoke(app, ["train-sim", "--demo-rows", "300", "--steps", "10"])
    assert r.exit_code == 2 and "demo_rows must be below the batch size 256, got 300" in r.output, r.output
