"""The simulated Panda world: offline build, Cartesian tracking, homing, stop, cameras, task API."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from arm.base import ArmMode, ArmTarget
from sim import STATE_DIM, SimArm, SimCamera, SimWorld, build_sim
from sim.model import ZONE_A, ZONE_B
from sim.task import goal_zone, start_zone
from spec.config import Config, load_config
from spec.step import ActionSpace

ROOT = Path(__file__).resolve().parents[1]
HOME_TCP = np.array([0.307, 0.0, 0.487])  # Franka's ready pose, O_T_EE translation


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "spec" / "configs" / "sim.yaml", env={})


@pytest.fixture
def world(cfg: Config):
    w = SimWorld(cfg)
    yield w
    w.close()


@pytest.fixture
def arm(world: SimWorld) -> SimArm:
    a = SimArm(world)
    a.connect()
    return a


def drive(world: SimWorld, arm: SimArm, target: ArmTarget, ticks: int) -> None:
    for _ in range(ticks):
        arm.send_target(target)
        world.advance(0.1)


def tilt_deg(world: SimWorld) -> float:
    """Angle between the gripper axis and straight down."""
    rot = world.data.site_xmat[world.model.site("tcp").id].reshape(3, 3)
    return float(np.degrees(np.arccos(np.clip(-rot[2, 2], -1.0, 1.0))))


def test_world_builds_offline_at_franka_home(monkeypatch: pytest.MonkeyPatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while building the sim: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # Franka's published ready pose checks our kinematics against O_T_EE (configs/sim.yaml homes lower).
    cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml",
                      env={"ROBOT__ARM__HOME_JOINTS": "[0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]"})
    world = SimWorld(cfg)
    try:
        m = world.model
        assert [m.joint(i).name for i in range(9)][:7] == [f"joint{i}" for i in range(1, 8)]
        assert {m.camera(i).name for i in range(m.ncam)} == {"wrist", "front"}
        assert {"zone_a", "zone_b", "table", "cube_geom"} <= {m.geom(i).name for i in range(m.ngeom)}
        state = SimArm(world).read()
        assert state.mode is ArmMode.DISCONNECTED
        np.testing.assert_allclose(state.joints, cfg.arm.home_joints, atol=1e-9)
        np.testing.assert_allclose(state.position, HOME_TCP, atol=2e-3)
        assert abs(state.yaw) < 1e-2 and tilt_deg(world) < 0.1
        assert state.gripper_width == pytest.approx(0.08)
    finally:
        world.close()


def test_read_reports_a_consistent_state(world: SimWorld, arm: SimArm):
    from spec.clock import now

    state = arm.read()
    assert state.mode is ArmMode.READY
    assert state.position.shape == (3,) and state.joints.shape == (7,)
    assert state.external_force.shape == (6,) and state.quaternion.shape == (4,)
    assert np.linalg.norm(state.quaternion) == pytest.approx(1.0)
    assert abs(state.timestamp - now()) < 1.0
    assert arm.read().timestamp >= state.timestamp


def test_arm_reaches_a_target_and_holds_the_gripper_down(world: SimWorld, arm: SimArm):
    goal = np.array([0.5, 0.05, 0.15])
    drive(world, arm, ArmTarget(goal, None, False), 20)
    state = arm.read()
    assert np.linalg.norm(state.position - goal) < 3e-3
    assert tilt_deg(world) < 1.0 and abs(state.yaw) < 1e-2
    # One 2 cm action is (nearly) done within one 100 ms tick, as on the real arm.
    step = state.position + np.array([0.0, 0.02, 0.0])
    arm.send_target(ArmTarget(step, None, False))
    world.advance(0.1)
    assert np.linalg.norm(arm.read().position - step) < 5e-3
    assert arm.stats.targets == 21


def test_yaw_target_turns_the_hand_about_vertical(world: SimWorld, arm: SimArm):
    goal = np.array([0.5, 0.0, 0.2])
    drive(world, arm, ArmTarget(goal, 0.6, False), 25)
    state = arm.read()
    assert state.yaw == pytest.approx(0.6, abs=0.01)
    assert tilt_deg(world) < 1.0
    assert np.linalg.norm(state.position - goal) < 3e-3
    # yaw=None holds the commanded yaw.
    drive(world, arm, ArmTarget(goal + [0.03, 0, 0], None, False), 10)
    assert arm.read().yaw == pytest.approx(0.6, abs=0.01)


def test_gripper_closes_and_opens(world: SimWorld, arm: SimArm):
    goal = np.array([0.5, 0.0, 0.2])
    drive(world, arm, ArmTarget(goal, None, True), 25)
    assert arm.read().gripper_width < 2e-3 and arm.read().gripper_closed
    drive(world, arm, ArmTarget(goal, None, False), 25)
    assert arm.read().gripper_width > 0.078 and not arm.read().gripper_closed


def test_workspace_corners_are_reached_and_outside_targets_are_clipped(
    cfg: Config, world: SimWorld, arm: SimArm
):
    low, high = np.array(cfg.workspace.low), np.array(cfg.workspace.high)
    # Gray-code order: each move changes one axis only.
    corners = [np.where([g & 1, g & 2, g & 4], high, low) for g in (i ^ (i >> 1) for i in range(8))]
    for corner in corners:
        drive(world, arm, ArmTarget(corner, None, False), 20)
        state = arm.read()
        assert state.mode is ArmMode.READY
        assert np.linalg.norm(state.position - corner) < 3e-3, corner
        assert tilt_deg(world) < 1.5, corner
    outside = np.array([1.5, -1.0, -0.5])
    drive(world, arm, ArmTarget(outside, None, False), 30)
    np.testing.assert_allclose(arm.read().position, np.clip(outside, low, high), atol=3e-3)
    assert world.stats()["warnings"] == 0


def test_bad_targets_are_refused_with_the_value(arm: SimArm):
    with pytest.raises(ValueError, match="nan"):
        arm.send_target(ArmTarget(np.array([0.5, np.nan, 0.1]), None, False))
    with pytest.raises(ValueError, match="3 finite"):
        arm.send_target(ArmTarget(np.array([0.5, 0.1]), None, False))


def test_go_home_is_non_blocking_and_arrives(cfg: Config, world: SimWorld, arm: SimArm):
    drive(world, arm, ArmTarget(np.array([0.6, -0.2, 0.05]), None, False), 20)
    away = arm.read().joints
    arm.go_home()
    assert arm.read().mode is ArmMode.HOMING
    arm.send_target(ArmTarget(np.array([0.6, 0.2, 0.05]), None, False))  # ignored while homing
    for _ in range(80):
        world.advance(0.1)
        if arm.read().mode is not ArmMode.HOMING:
            break
    state = arm.read()
    assert state.mode is ArmMode.READY
    assert np.max(np.abs(state.joints - np.array(cfg.arm.home_joints))) < 0.01
    assert np.max(np.abs(away - state.joints)) > 0.2
    assert arm.stats.homings == 1
    # Tracking works again from home.
    drive(world, arm, ArmTarget(np.array([0.45, 0.0, 0.2]), None, False), 20)
    assert np.linalg.norm(arm.read().position - [0.45, 0.0, 0.2]) < 3e-3


def test_stop_freezes_until_resume(world: SimWorld, arm: SimArm):
    pos = np.array([0.5, -0.1, 0.2])
    drive(world, arm, ArmTarget(pos, None, False), 15)
    far = np.array([0.5, 0.2, 0.2])
    arm.send_target(ArmTarget(far, None, False))
    world.advance(0.05)  # mid-motion
    arm.stop()
    assert arm.read().mode is ArmMode.STOPPED
    world.advance(0.1)  # let it settle after the stop
    frozen = arm.read().position
    for _ in range(10):
        arm.send_target(ArmTarget(far, None, True))  # ignored
        arm.go_home()  # ignored too: no motion until resume
        world.advance(0.1)
    state = arm.read()
    assert state.mode is ArmMode.STOPPED
    assert np.linalg.norm(state.position - frozen) < 1e-3
    assert not state.gripper_closed
    arm.resume()
    assert arm.read().mode is ArmMode.READY
    drive(world, arm, ArmTarget(far, None, False), 20)
    assert np.linalg.norm(arm.read().position - far) < 3e-3


def test_physics_thread_runs_in_real_time_and_resets_while_running(cfg: Config):
    world = SimWorld(cfg)
    arm = SimArm(world)
    try:
        world.start()
        arm.connect()
        goal = np.array([0.62, 0.15, 0.12])  # well away from home, so reaching it takes sim time
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and np.linalg.norm(arm.read().position - goal) > 3e-3:
            arm.send_target(ArmTarget(goal, None, False))
            time.sleep(0.1)
        assert np.linalg.norm(arm.read().position - goal) < 3e-3
        assert world.stats()["sim_time_s"] > 0.5
        with pytest.raises(RuntimeError, match="physics thread is running"):
            world.advance(0.1)
        rng = np.random.default_rng(3)
        for direction in ("forward", "backward"):
            world.task.reset_scene(direction, rng)
            assert start_zone(direction).contains(world.task.cube_position())
            np.testing.assert_allclose(arm.read().joints, cfg.arm.home_joints, atol=1e-6)
            time.sleep(0.2)
            assert start_zone(direction).contains(world.task.cube_position())
    finally:
        arm.close()
        world.close()
    assert not world.running


def test_a_dead_physics_thread_is_reported_not_hidden(cfg: Config, monkeypatch: pytest.MonkeyPatch):
    world = SimWorld(cfg)
    arm = SimArm(world)
    arm.connect()

    def explode() -> None:
        raise FloatingPointError("simulated instability")

    monkeypatch.setattr(world, "_step_period", explode)
    try:
        world.start()
        deadline = time.monotonic() + 5.0
        while world.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert arm.read().mode is ArmMode.REFLEX
        assert "simulated instability" in (arm.help_request() or "")
    finally:
        world.close()


def test_external_force_appears_when_pushing_the_cube(world: SimWorld, arm: SimArm):
    world.task.place_cube(np.array([0.5, 0.0]))
    drive(world, arm, ArmTarget(np.array([0.5, -0.08, 0.1]), None, True), 20)
    assert np.linalg.norm(arm.read().external_force) < 1e-6  # free air
    drive(world, arm, ArmTarget(np.array([0.5, -0.08, 0.022]), None, True), 10)
    forces = []
    for k in range(6):
        arm.send_target(ArmTarget(np.array([0.5, -0.05 + 0.01 * k, 0.022]), None, True))
        for _ in range(5):  # sample within the tick: pushes come as short contacts
            world.advance(0.02)
            forces.append(arm.read().external_force[:3])
    fy = np.array(forces)[:, 1]
    assert world.task.cube_position()[1] > 0.005  # it was pushed along +y
    assert fy.min() < -0.1  # the cube pushes back on the hand (-y)
    assert fy.max() < 0.05


def test_mirror_joints_poses_the_arm_kinematically(cfg: Config, world: SimWorld, arm: SimArm):
    q = np.array([0.3, 0.2, -0.1, -2.0, 0.1, 2.2, 0.5])
    world.mirror_joints(q, gripper_width=0.03)
    world.advance(1.0)  # physics runs; gravity and servos must not move a mirrored arm
    state = arm.read()
    np.testing.assert_allclose(state.joints, q, atol=1e-9)
    assert state.gripper_width == pytest.approx(0.03)
    pos, _ = world.controller.fk(q)
    np.testing.assert_allclose(state.position, pos, atol=1e-9)
    with pytest.raises(ValueError, match="7 finite"):
        world.mirror_joints(np.zeros(6))
    world.stop_mirroring()
    world.advance(0.5)
    assert np.linalg.norm(arm.read().position - pos) < 3e-3  # handed back, holding the pose


def test_reset_scene_samples_the_start_distribution(world: SimWorld):
    rng = np.random.default_rng(0)
    for direction in ("forward", "backward"):
        seen = []
        for _ in range(10):
            world.task.reset_scene(direction, rng)
            cube = world.task.cube_position()
            seen.append(cube[:2])
            assert start_zone(direction).contains(cube)
            assert not world.task.success(direction)
            assert world.task.object_in_workspace()
        assert np.ptp(np.array(seen), axis=0).min() > 0.01  # jittered, not a fixed point
    world.task.reset_scene("forward", rng)
    assert world.task.success("backward")  # A is the backward goal
    with pytest.raises(ValueError, match="sideways"):
        world.task.reset_scene("sideways", rng)
    assert goal_zone("forward") is ZONE_B and goal_zone("backward") is ZONE_A


def _push_toward_centre(cfg: Config, world: SimWorld, arm: SimArm, xy: tuple[float, float]) -> float:
    """Place the cube at xy, bring the hand behind it (clipped to the box, as every action is) and
    push toward the workspace centre: how far (m) the cube moved that way."""
    space = ActionSpace(cfg.action, cfg.workspace)
    low, high = np.array(cfg.workspace.low), np.array(cfg.workspace.high)
    world.task.place_cube(np.array(xy))
    world.advance(0.3)
    c0 = world.task.cube_position()[:2].copy()
    d = (low[:2] + high[:2]) / 2 - c0
    d /= np.linalg.norm(d)
    behind = c0 - 0.06 * d
    ahead = c0 + 0.08 * d
    for goal, ticks in (((*behind, 0.12), 40), ((*behind, 0.03), 40), ((*ahead, 0.03), 30)):
        for _ in range(ticks):
            a = np.zeros(space.dim)
            a[:3] = (np.asarray(goal) - arm.read().position) / cfg.action.max_translation_m
            a[3] = 1.0
            arm.send_target(space.target(a, arm.read()))
            world.advance(0.1)
    return float(np.dot(world.task.cube_position()[:2] - c0, d))


def test_a_cube_the_arm_can_no_longer_push_back_is_out_of_the_workspace(cfg: Config, world: SimWorld, arm: SimArm):
    # The reset-free help rule resets the scene when the object is out of the workspace: a cube the
    # hand cannot get behind any more must count as out, or practice goes on for hours on a stuck scene.
    low, high = np.array(cfg.workspace.low), np.array(cfg.workspace.high)
    mid_y = (low[1] + high[1]) / 2
    # Near the box's edges the hand still gets behind the cube; a few cm past them it cannot, and the
    # cube stays where it is (between the two, pushes land on the cube's edge and only sometimes move it).
    near_edge = [(low[0] + 0.05, mid_y), (high[0] - 0.05, mid_y), (0.53, high[1] - 0.05)]
    beyond = [(low[0] - 0.04, mid_y), (high[0] + 0.05, mid_y), (0.53, high[1] + 0.05)]
    for xy in near_edge:
        world.task.place_cube(np.array(xy))
        assert world.task.object_in_workspace(), xy
        assert _push_toward_centre(cfg, world, arm, xy) > 0.02, xy
    for xy in beyond:
        world.task.place_cube(np.array(xy))
        assert not world.task.object_in_workspace(), xy
        assert _push_toward_centre(cfg, world, arm, xy) < 0.005, xy


def test_state_vector_and_falling_off_the_table(world: SimWorld):
    world.task.reset_scene("forward", np.random.default_rng(1))
    vec = world.task.state_vector()
    assert vec.shape == (STATE_DIM,) and vec.dtype == np.float32
    assert np.all(np.abs(vec) <= 1.5)
    world.advance(0.2)
    world.task.place_cube(np.array([ZONE_B.center[0], ZONE_B.center[1]]), arm_home=False)
    assert not np.allclose(world.task.state_vector()[4:6], vec[4:6])  # the cube entries moved
    world.task.place_cube(np.array([1.2, 0.0]), arm_home=False)  # past the table edge
    assert not world.task.object_in_workspace()
    world.advance(1.0)
    assert world.task.cube_position()[2] < -0.1
    assert not world.task.object_in_workspace() and not world.task.success("forward")


def _colour_pixels(image: np.ndarray, rgb: tuple[float, float, float]) -> int:
    ref = np.array(rgb[:3]) * 255
    return int(np.sum(np.linalg.norm(image.astype(np.float32) - ref, axis=-1) < 60))


@pytest.mark.timeout(120)
def test_two_cameras_render_at_once(cfg: Config):
    rig = build_sim(cfg)
    try:
        rig.start()
        first = {name: cam.read() for name, cam in rig.cameras.items()}
        for name, frame in first.items():
            cam_cfg = cfg.camera(name)
            assert frame is not None, name
            assert frame.image.shape == (cam_cfg.height, cam_cfg.width, 3) and frame.image.dtype == np.uint8
            assert frame.image.std() > 10, f"{name} looks blank"
        front = first["front"].image
        assert _colour_pixels(front, ZONE_A.rgba) > 20 and _colour_pixels(front, ZONE_B.rgba) > 20
        # The newest frame advances.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(
            cam.read().index < first[name].index + 3 for name, cam in rig.cameras.items()
        ):
            time.sleep(0.05)
        for name, cam in rig.cameras.items():
            latest = cam.read()
            assert latest.index >= first[name].index + 3 and latest.timestamp > first[name].timestamp
            assert cam.stats.frames >= 4 and cam.stats.capture_ms > 0
        # The wrist camera rides on the hand: moving the arm changes its view.
        before = rig.cameras["wrist"].read()
        space = ActionSpace(cfg.action, cfg.workspace)
        goal = np.array([0.6, 0.15, 0.1])
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and np.linalg.norm(rig.arm.read().position - goal) > 0.01:
            rig.arm.send_target(
                space.target(space.action_towards(goal - rig.arm.read().position, False), rig.arm.read())
            )
            time.sleep(0.1)
        time.sleep(0.3)
        after = rig.cameras["wrist"].read()
        assert np.abs(after.image.astype(int) - before.image.astype(int)).mean() > 5
    finally:
        rig.close()


def test_unknown_sim_camera_is_refused_by_name(cfg: Config, world: SimWorld):
    bad = cfg.camera("front").model_copy(update={"sim_camera": "ceiling"})
    with pytest.raises(ValueError, match="ceiling"):
        SimCamera(world, bad)
