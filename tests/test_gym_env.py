"""PushCube-v0: the synchronous gymnasium env over the sim task, and the start-jitter setting."""

from __future__ import annotations

import math
import os
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from camera.crop import view_of
from sim.camera import SimCamera
from sim.gym_env import PushCubeEnv, scripted_demo
from sim.model import CUBE_HALF
from sim.task import goal_zone, start_zone
from spec.config import Config, ConfigError, load_config, parse_config
from spec.goal import GOAL_HOLD_STEPS
from spec.step import ActionSpace, InvalidAction

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"start_jitter_m": 0.05, "start_jitter_yaw_deg": 45.0}  # MEDALPP.md "Benchmark setting"
DEMOS_PER_DIRECTION = 20


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "spec" / "configs" / "sim.yaml", env={})


def cube_xyz(obs: dict[str, np.ndarray], cfg: Config) -> np.ndarray:
    """The cube centre (m) read back from the observation's state vector (STATE_LAYOUT 4:7)."""
    low, high = np.asarray(cfg.workspace.low), np.asarray(cfg.workspace.high)
    return low + (obs["obs/state"][4:7].astype(np.float64) + 1.0) / 2.0 * (high - low)


def is_goal_frame(obs: dict[str, np.ndarray], cfg: Config, direction: str) -> bool:
    """The task's success test (cube on the table, centre in the goal patch), from the frame alone."""
    pos = cube_xyz(obs, cfg)
    return abs(pos[2] - CUBE_HALF) < 0.01 and goal_zone(direction).contains(pos)


def test_jitter_is_a_validated_setting(cfg: Config):
    assert (cfg.sim.start_jitter_m, cfg.sim.start_jitter_yaw_deg) == (0.02, 15.0)  # the daemon stays narrow
    for bad in ({"start_jitter_m": -0.01}, {"start_jitter_m": 0.2}, {"start_jitter_yaw_deg": 90}):
        with pytest.raises(ConfigError, match="start_jitter"):
            parse_config({"sim": bad}, env={})
        with pytest.raises(ValueError):
            PushCubeEnv(cfg, **{k: float(v) for k, v in bad.items()})
    # Zero jitter puts the cube exactly at the zone centre; the wide setting spreads it beyond +-2 cm.
    env = PushCubeEnv(cfg, start_jitter_m=0.0, start_jitter_yaw_deg=0.0)
    obs, _ = env.reset(seed=1)
    assert np.allclose(cube_xyz(obs, cfg)[:2], start_zone("forward").center, atol=1e-5)
    env.close()
    env = PushCubeEnv(cfg, **WIDE)
    offsets, yaws = [], []
    for seed in range(30):
        env.reset(seed=seed)
        pos, yaw = env.task.cube_pose()
        offsets.append(np.abs(pos[:2] - start_zone("forward").center).max())
        yaws.append(abs(math.degrees(yaw)))
    env.close()
    assert max(offsets) <= 0.05 + 1e-6 and max(offsets) > 0.03
    assert max(yaws) <= 45.0 + 1e-6 and max(yaws) > 25.0


def test_check_env_and_registration(cfg: Config):
    env = PushCubeEnv(cfg)
    check_env(env, skip_render_check=True)
    env.close()
    made = gymnasium.make("PushCube-v0", cfg=cfg, reset_free=True)
    assert isinstance(made.unwrapped, PushCubeEnv) and made.unwrapped.reset_free
    assert gymnasium.spec("PushCube-v0").entry_point == "sim.gym_env:PushCubeEnv"
    obs, info = made.reset(seed=0)
    assert made.observation_space.contains(obs) and set(obs) == {"obs/state", "obs/proprio"}
    assert obs["obs/state"].dtype == np.float32 and obs["obs/state"].shape == (9,)
    assert obs["obs/proprio"].shape == (4,) and made.action_space.shape == (4,)
    assert info["success"] is False and info["direction"] == "forward"
    made.close()


def test_step_clips_and_targets_exactly_like_the_daemon(cfg: Config):
    env = PushCubeEnv(cfg, seed=0)
    env.reset()
    space = ActionSpace(cfg.action, cfg.workspace)
    rng = np.random.default_rng(3)
    for raw in [np.array([3.0, -2.0, 0.5, 0.7]), np.array([0.3, 0.4, -0.2, -5.0]), *rng.uniform(-2, 2, (5, 4))]:
        before = env.arm.read()
        _obs, reward, terminated, _trunc, info = env.step(raw)
        want = space.clip_action(raw)
        np.testing.assert_array_equal(info["executed_action"], want.astype(np.float32))
        assert info["executed_action"].dtype == np.float32
        # The controller got the daemon's target: measured pose + clipped step, boxed.
        np.testing.assert_allclose(env.world.controller.target_pos, space.target(want, before).position)
        assert env.world.controller.gripper_closed == (want[-1] > 0)
        assert reward == float(info["success"]) and terminated is False
    with pytest.raises(InvalidAction):
        env.step(np.array([np.nan, 0.0, 0.0, 0.0]))
    with pytest.raises(InvalidAction):
        env.step(np.zeros(3))
    env.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_expert_demos_succeed_at_wide_jitter_and_end_on_goal_frames(cfg: Config, direction: str):
    env = PushCubeEnv(cfg, reset_free=True, **WIDE)
    env.reset(seed=0)
    rng = np.random.default_rng(100 if direction == "forward" else 200)
    lengths = []
    for _ in range(DEMOS_PER_DIRECTION):
        demo = scripted_demo(env, direction, rng)  # raises DemoFailed if the goal is not held
        lengths.append(len(demo))
        assert not is_goal_frame(demo[0].obs, cfg, direction)  # the check can say no
        tail = demo[-GOAL_HOLD_STEPS:]
        assert all(t.success for t in tail)
        for t in tail:  # every positive frame passes the task's success test
            assert is_goal_frame(t.obs, cfg, direction) and is_goal_frame(t.next_obs, cfg, direction)
        assert env.success()
        for a, b in zip(demo, demo[1:], strict=False):  # consecutive: next_obs is the next obs
            assert a.next_obs is b.obs
    assert env.interventions == 0  # demos are not practice
    env.close()
    print(f"{direction}: {DEMOS_PER_DIRECTION}/{DEMOS_PER_DIRECTION} demos, lengths {min(lengths)}-{max(lengths)}")


def test_reset_free_keeps_the_scene_until_an_intervention(cfg: Config):
    env = PushCubeEnv(cfg, reset_free=True, **WIDE)
    env.reset(seed=5, options={"direction": "forward"})
    for _ in range(40):  # the expert pushes the cube well out of its start
        env.step(env.expert_action())
    cube = env.task.cube_position().copy()
    ee = env.arm.read().position.copy()
    assert np.linalg.norm(cube[:2] - start_zone("forward").center) > 0.05

    obs, info = env.reset(options={"direction": "backward"})
    assert env.direction == "backward" and info["direction"] == "backward"
    np.testing.assert_array_equal(env.task.cube_position(), cube)
    np.testing.assert_array_equal(env.arm.read().position, ee)
    np.testing.assert_allclose(cube_xyz(obs, cfg), cube, atol=1e-5)
    assert env.interventions == 0 and env.episode_steps == 0

    env.step(env.expert_action())
    obs, info = env.reset(options={"direction": "forward", "intervention": True})
    assert env.interventions == 1 == info["interventions"] and env.intervention_steps == [41]
    assert start_zone("forward").contains(env.task.cube_position(), margin=0.06 - 0.05 - 1e-6)
    assert np.linalg.norm(env.arm.read().position - ee) > 0.02  # the arm went home

    # An episodic env resets the scene on every reset and counts nothing.
    epi = PushCubeEnv(cfg, **WIDE)
    epi.reset(seed=5)
    for _ in range(40):
        epi.step(epi.expert_action())
    moved = epi.task.cube_position().copy()
    epi.reset()
    assert np.linalg.norm(epi.task.cube_position()[:2] - moved[:2]) > 0.05 and epi.interventions == 0
    env.close()
    epi.close()


def test_home_arm_and_truncation(cfg: Config):
    env = PushCubeEnv(cfg, reset_free=True, max_episode_steps=5)
    env.reset(seed=0)
    home = env.arm.read().position.copy()
    truncs = [env.step(np.array([0.0, 1.0, -1.0, 1.0]))[3] for _ in range(5)]
    assert truncs == [False] * 4 + [True]
    cube = env.task.cube_position().copy()
    assert np.linalg.norm(env.arm.read().position - home) > 0.05
    env.reset(options={"home_arm": True})
    np.testing.assert_allclose(env.arm.read().position, home, atol=5e-3)
    np.testing.assert_allclose(env.task.cube_position(), cube, atol=1e-3)
    assert env.interventions == 0 and env.total_steps == 5
    env.close()


def test_state_mode_creates_no_gl_context(cfg: Config, monkeypatch: pytest.MonkeyPatch):
    def no_gl(*args, **kwargs):
        raise AssertionError("state mode created a renderer / GL context")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    monkeypatch.setattr(mujoco, "GLContext", no_gl)
    env = PushCubeEnv(cfg)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
    with pytest.raises(AssertionError, match="GL context"):  # the trap works: pixel mode trips it
        PushCubeEnv(cfg, obs_mode="pixels")


@pytest.mark.timeout(120)
def test_pixel_mode_shapes(cfg: Config):
    try:
        env = PushCubeEnv(cfg, obs_mode="pixels")
    except Exception as exc:  # only a missing GL backend may skip this
        if "gl" in f"{type(exc).__name__} {exc}".lower():
            pytest.skip(f"no offscreen GL (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}")
        raise
    obs, _ = env.reset(seed=0)
    first = {k: v.copy() for k, v in obs.items()}
    for _ in range(3):
        obs, *_ = env.step(np.array([0.0, 0.0, -1.0, 1.0]))
    assert env.observation_space.contains(obs)
    for cam in cfg.cameras:
        img = obs[f"obs/{cam.name}"]
        assert img.dtype == np.uint8 and img.shape == (cam.output.height, cam.output.width, 3)
        assert img.std() > 5  # a scene, not a blank frame
    assert not np.array_equal(first["obs/wrist"], obs["obs/wrist"])  # the wrist camera moved down
    # The daemon's path for the same state: its sim cameras (render process) through view_of.
    cams = [SimCamera(env.world, c) for c in cfg.cameras]
    try:
        for cam in cams:
            cam.connect()  # its first frame shows the current state
        for cam in cams:
            frame = cam.read()
            assert frame is not None
            np.testing.assert_array_equal(obs[f"obs/{cam.name}"], view_of(frame.image, cam.cfg))
    finally:
        for cam in cams:
            cam.close()
        env.close()
