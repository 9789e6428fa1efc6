"""The simulated world: one MjModel/MjData, a physics thread in (scaled) real time, and the task.

Threads: the physics thread steps MjData; the arm and the task read and write it. Everyone holds
`world.lock` while touching `world.data`. The arm's state is also published as an immutable
snapshot after every control period, so `SimArm.read()` never waits. The sim cameras render in a
separate process (render_process.py, started by the first `SimCamera.connect()`): after every
control period and every `publish()` the world copies what rendering needs (qpos, mocap poses)
into shared memory for it, and `close()` stops it.

Two ways to run it:
- `start()`: physics runs on its own thread at `sim.realtime_factor` x real time (the daemon).
- `advance(seconds)`: step synchronously from the caller's thread, as fast as the CPU allows
  (tests and benchmarks; only while the thread is not running).

Mirroring: `mirror_joints(q)` puts the arm at joints `q` kinematically (the arm ignores physics
and its controller from then on, the cube still does physics) so the sim cameras can render what
an external arm does, e.g. franky driving franka-sim. `stop_mirroring()` hands the arm back to
the controller, holding the mirrored pose.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass

import mujoco
import numpy as np

from sim.controller import CartesianController, Phase
from sim.model import (
    ARM_JOINTS,
    CUBE_JOINT,
    FINGER_JOINTS,
    FINGER_MAX,
    HAND_BODIES,
    JOINT_LOWER,
    JOINT_UPPER,
    TCP_SITE,
    SceneExtras,
    build_model,
)
from sim.render_host import RenderHost
from sim.task import PushCubeTask
from spec.config import Config
from spec.step import yaw_of

log = logging.getLogger(__name__)

# A physics thread stepping while the interpreter shuts down can crash in MuJoCo: stop them first.
_LIVE: weakref.WeakSet[SimWorld] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for world in list(_LIVE):
        world.close(timeout=2.0)


CONTROL_PERIOD_S = 0.01  # the controller runs every 10 ms of simulated time
MAX_LAG_S = 0.1  # wall time the physics may fall behind before it stops trying to catch up


@dataclass(frozen=True)
class ArmSnapshot:
    """The arm as of the end of the last control period (immutable: safe to hand to any thread)."""

    position: np.ndarray
    quaternion: np.ndarray  # w x y z
    yaw: float
    gripper_width: float
    joints: np.ndarray
    external_force: np.ndarray  # (6,) contact wrench on the hand and fingers about the TCP, base frame
    phase: Phase
    gripper_closed: bool
    sim_time: float
    cube_qpos: np.ndarray  # (7,) the task object's free joint: x y z, quaternion w x y z


@dataclass
class PhysicsStats:
    steps: int = 0
    sim_time: float = 0.0
    wall_time: float = 0.0
    lag_resets: int = 0  # times the thread fell > MAX_LAG_S behind and dropped the backlog
    warnings: int = 0  # MuJoCo instability warnings (it resets the data when they happen)

    def as_dict(self) -> dict[str, float | int]:
        rate = self.steps / self.wall_time if self.wall_time > 0 else 0.0
        return {
            "steps": self.steps,
            "sim_time_s": round(self.sim_time, 4),
            "wall_time_s": round(self.wall_time, 4),
            "steps_per_s": round(rate, 1),
            "lag_resets": self.lag_resets,
            "warnings": self.warnings,
        }


class SimWorld:
    def __init__(self, cfg: Config, extras: SceneExtras | None = None) -> None:
        """`extras`: optional MJCF added to the scene (calibration/ adds a ChArUco board)."""
        self.cfg = cfg
        sim = cfg.sim
        self.realtime_factor = float(sim.realtime_factor)
        self.model = build_model(cfg.arm.home_joints, sim.physics_hz, cfg.arm.gripper_force, extras)
        widths = [c.width for c in cfg.cameras] + [640]
        heights = [c.height for c in cfg.cameras] + [480]
        self.model.vis.global_.offwidth = max(widths)
        self.model.vis.global_.offheight = max(heights)
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(sim.seed)
        self.home_joints = np.asarray(cfg.arm.home_joints, dtype=np.float64)
        self.controller = CartesianController(
            self.model, self.home_joints, gripper_speed=cfg.arm.gripper_speed
        )
        self.substeps = max(1, round(CONTROL_PERIOD_S / self.model.opt.timestep))
        self.physics_stats = PhysicsStats()
        self._qadr = np.array([self.model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._dadr = np.array([self.model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._fadr = np.array([self.model.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._site = self.model.site(TCP_SITE).id
        cube_adr = int(self.model.joint(CUBE_JOINT).qposadr[0])
        self._cube_qpos = slice(cube_adr, cube_adr + 7)
        self._hand_bodies = {self.model.body(b).id for b in HAND_BODIES}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.thread_error: BaseException | None = None
        self.reflex_reason = ""  # why the controller last stopped on a reflex
        self._render: RenderHost | None = None
        self._render_lock = threading.Lock()
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        mujoco.mj_forward(self.model, self.data)
        self._snapshot = self._make_snapshot()
        self.task = PushCubeTask(self, cfg.workspace)

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the physics thread (idempotent)."""
        if self.running:
            return
        self._stop.clear()
        self.thread_error = None
        self._thread = threading.Thread(target=self._run, name="sim-physics", daemon=True)
        _LIVE.add(self)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the physics thread and the render process (the sim cameras keep their last frame)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("sim physics thread did not stop within %.1f s", timeout)
            self._thread = None
        with self._render_lock:
            host, self._render = self._render, None
        if host is not None:
            host.close(timeout)

    def render_host(self, timeout: float = 60.0) -> RenderHost:
        """The render process serving this world's cameras, started on first use."""
        with self._render_lock:
            host = self._render
            if host is None or host.closed:
                host = RenderHost(self.model)
                with self.lock:  # from here on every state change reaches the renderer
                    host.publish(self.data)
                    self._render = host
                _LIVE.add(self)
            # Outside the world lock: starting takes seconds and physics must not wait for it.
            host.start(timeout)
        return host

    def __enter__(self) -> SimWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- stepping -------------------------------------------------------------------------------
    def _step_period(self) -> None:
        """One control period: controller update, then physics substeps (lock held)."""
        ctrl = self.controller
        ctrl.update(self.data, self.substeps * self.model.opt.timestep)
        warn_before = int(self.data.warning.number.sum())
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
            if ctrl.mirroring:
                ctrl.apply_mirror(self.data)
        if ctrl.mirroring:
            mujoco.mj_forward(self.model, self.data)
        new_warnings = int(self.data.warning.number.sum()) - warn_before
        if new_warnings > 0:
            self.physics_stats.warnings += new_warnings
            log.warning("MuJoCo reported %d instability warning(s) at t=%.3f", new_warnings, self.data.time)
        self.physics_stats.steps += self.substeps
        self.physics_stats.sim_time += self.substeps * self.model.opt.timestep
        self._snapshot = self._make_snapshot()
        self._publish_render_state()

    def _publish_render_state(self) -> None:
        host = self._render
        if host is not None:
            host.publish(self.data)

    def advance(self, seconds: float) -> None:
        """Step the physics synchronously for `seconds` of simulated time (thread not running)."""
        if self.running:
            raise RuntimeError(
                "advance() steps synchronously; the physics thread is running (use one or the other)"
            )
        periods = max(1, round(seconds / (self.substeps * self.model.opt.timestep)))
        t0 = time.perf_counter()
        for _ in range(periods):
            with self.lock:
                self._step_period()
        self.physics_stats.wall_time += time.perf_counter() - t0

    def _run(self) -> None:
        period_wall = self.substeps * self.model.opt.timestep / self.realtime_factor
        start = time.perf_counter()
        wall_before = self.physics_stats.wall_time
        deadline = start
        try:
            while not self._stop.is_set():
                with self.lock:
                    self._step_period()
                deadline += period_wall
                now = time.perf_counter()
                if now - deadline > MAX_LAG_S:
                    # The CPU cannot keep up: run slower than real time rather than burst.
                    deadline = now
                    self.physics_stats.lag_resets += 1
                elif deadline > now:
                    self._stop.wait(deadline - now)
                self.physics_stats.wall_time = wall_before + time.perf_counter() - start
        except BaseException as exc:  # surfaced through `thread_error` and the log
            self.thread_error = exc
            log.exception("sim physics thread died")

    # --- state ----------------------------------------------------------------------------------
    def _make_snapshot(self) -> ArmSnapshot:
        d = self.data
        rot = d.site_xmat[self._site].reshape(3, 3)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._site])
        if quat[0] < 0:  # one hemisphere, so consumers can compare quaternions directly
            quat = -quat
        pos = d.site_xpos[self._site].copy()
        return ArmSnapshot(
            position=pos,
            quaternion=quat,
            yaw=yaw_of(rot),
            gripper_width=float(np.sum(d.qpos[self._fadr])),
            joints=d.qpos[self._qadr].copy(),
            external_force=self._hand_wrench(pos),
            phase=self.controller.phase,
            gripper_closed=self.controller.gripper_closed,
            sim_time=float(d.time),
            cube_qpos=d.qpos[self._cube_qpos].copy(),
        )

    def _hand_wrench(self, tcp: np.ndarray) -> np.ndarray:
        """Sum of contact forces the environment exerts on the hand and fingers, and their torque
        about the TCP (what Franka's estimated external wrench measures, without its noise)."""
        m, d = self.model, self.data
        wrench = np.zeros(6)
        f6 = np.zeros(6)
        for i in range(d.ncon):
            con = d.contact[i]
            b1 = m.geom_bodyid[con.geom1]
            b2 = m.geom_bodyid[con.geom2]
            on1, on2 = b1 in self._hand_bodies, b2 in self._hand_bodies
            if on1 == on2:
                continue
            mujoco.mj_contactForce(m, d, i, f6)
            # The force acts on geom2 along the contact frame (normal from geom1 to geom2).
            force = con.frame.reshape(3, 3).T @ f6[:3]
            if on1:
                force = -force
            wrench[:3] += force
            wrench[3:] += np.cross(con.pos - tcp, force)
        return wrench

    def snapshot(self) -> ArmSnapshot:
        return self._snapshot

    def publish(self) -> None:
        """Refresh kinematics and the arm snapshot after a direct edit of the data (lock held)."""
        mujoco.mj_forward(self.model, self.data)
        self._snapshot = self._make_snapshot()
        self._publish_render_state()

    def place_arm(self, q: np.ndarray, gripper_width: float = 2 * FINGER_MAX) -> None:
        """Put the arm at joints `q` at rest, set points and gripper reset to match (lock held)."""
        d = self.data
        d.qpos[self._qadr] = q
        d.qvel[self._dadr] = 0.0
        d.qpos[self._fadr] = gripper_width / 2.0
        d.qvel[self.model.joint(FINGER_JOINTS[0]).dofadr[0]] = 0.0
        d.qvel[self.model.joint(FINGER_JOINTS[1]).dofadr[0]] = 0.0
        self.controller.reset(np.asarray(q, dtype=np.float64), gripper_open=True)
        d.ctrl[:7] = q
        d.ctrl[7:9] = gripper_width / 2.0

    def place_arm_at(self, position: np.ndarray, yaw: float, gripper_width: float) -> np.ndarray:
        """Put the arm at rest with the TCP at `position`, gripper down at `yaw` (rad), the fingers
        `gripper_width` apart and holding there; returns the joints (ValueError if unreachable).
        The joints come from IK with the posture kept near home, as the tracking keeps it."""
        width = float(np.clip(gripper_width, 0.0, 2 * FINGER_MAX))
        with self.lock:
            q = self.controller.solve(np.asarray(position, dtype=np.float64), yaw)
            self.place_arm(q, gripper_width=width)
            self.controller.finger_cmd = width / 2.0  # hold the width, not snap open (place_arm opens)
            self.data.qacc_warmstart[:] = 0.0
            self.publish()
        return q

    def mirror_joints(self, q: np.ndarray, gripper_width: float | None = None) -> None:
        """Show the arm at joints `q` (7 values, rad; kinematic, no arm physics). See module doc."""
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"mirror_joints needs 7 finite joint angles, got {q.tolist()}")
        q = np.clip(q, JOINT_LOWER, JOINT_UPPER)
        fingers = None
        if gripper_width is not None:
            if not math.isfinite(gripper_width):
                raise ValueError(f"gripper_width must be finite, got {gripper_width}")
            fingers = float(np.clip(gripper_width / 2.0, 0.0, FINGER_MAX))
        with self.lock:
            ctrl = self.controller
            ctrl.mirroring = True
            ctrl.mirror_q = q
            ctrl.mirror_fingers = fingers
            ctrl.apply_mirror(self.data)
            self.publish()

    def reflex(self, reason: str) -> None:
        """The controller stops on a reflex, as libfranka's does on a collision or a missed
        deadline: the arm freezes and takes no target until its driver recovers it."""
        with self.lock:
            self.reflex_reason = reason
            self.controller.reflex(self.data)
            self.publish()

    def stop_mirroring(self) -> None:
        with self.lock:
            ctrl = self.controller
            if not ctrl.mirroring:
                return
            ctrl.mirroring = False
            ctrl.reset(ctrl.mirror_q, gripper_open=False)
            ctrl.finger_cmd = float(np.mean(self.data.qpos[self._fadr]))
            self.publish()

    def stats(self) -> dict[str, float | int]:
        return self.physics_stats.as_dict()
