"""Cartesian tracking for the simulated Panda, run by the physics thread every control period.

The design is the hardware's in miniature: a motion generator moves a reference pose toward the
commanded target under a speed limit (so a 2 cm step takes ~60-70 ms and 10 Hz streaming lags
like a real arm), differential IK (damped least squares, posture kept near home in the null space)
turns the reference into joint set points, and stiff joint PD servos with gravity compensation
(the model's position actuators) track them. Because the set points come from kinematics, not
from the measured joints, a blocked arm pushes with bounded servo force instead of winding up.
"""

from __future__ import annotations

import enum
import math

import mujoco
import numpy as np

from sim.model import (
    ARM_ACTUATORS,
    ARM_JOINTS,
    FINGER_JOINTS,
    FINGER_MAX,
    JOINT_LOWER,
    JOINT_UPPER,
    TCP_SITE,
)
from spec.step import yaw_of

# Gripper pointing straight down with yaw 0: TCP x along base x, z along -z (Franka's home).
R_DOWN = np.diag([1.0, -1.0, -1.0])
LIMIT_MARGIN = 0.02  # rad kept away from the joint limits
_DLS_DAMPING = 1e-4
_EYE6 = np.eye(6)
_EYE7 = np.eye(7)


class Phase(enum.StrEnum):
    READY = "ready"
    HOMING = "homing"
    STOPPED = "stopped"
    REFLEX = "reflex"  # stopped by the controller itself (a collision reflex); recover() clears it


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


class CartesianController:
    """Owns the arm's set points; every method must be called with the world lock held."""

    def __init__(
        self,
        model: mujoco.MjModel,
        home_joints: np.ndarray,
        max_speed: float = 0.3,
        max_yaw_rate: float = 1.5,
        max_joint_speed: float = 1.5,
        home_joint_speed: float = 0.8,
        gripper_speed: float = 0.05,
    ) -> None:
        self.model = model
        self.home = np.asarray(home_joints, dtype=np.float64).copy()
        self.max_speed = max_speed
        self.max_yaw_rate = max_yaw_rate
        self.max_joint_speed = max_joint_speed
        self.home_joint_speed = home_joint_speed
        self.finger_speed = gripper_speed / 2.0  # the width closes at `gripper_speed`, each finger half
        self._ik = mujoco.MjData(model)  # a private kinematic copy: IK never touches the live data
        self._site = model.site(TCP_SITE).id
        self._qadr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._dadr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._fadr = np.array([model.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._fdadr = np.array([model.joint(j).dofadr[0] for j in FINGER_JOINTS])
        # The position servos apply kp (ctrl - q) - kv qdot; commanding q_des + (kv / kp) qdot_des
        # turns that into kp (q_des - q) + kv (qdot_des - qdot): velocity feed-forward, so the arm
        # does not trail its set point by kv / kp (50 ms) and keeps the integrator's implicit damping.
        arm_acts = [model.actuator(a).id for a in ARM_ACTUATORS]
        self._ff = -model.actuator_biasprm[arm_acts, 2] / model.actuator_gainprm[arm_acts, 0]
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.phase = Phase.READY
        self.mirroring = False
        self.mirror_q = self.home.copy()
        self.mirror_fingers: float | None = None
        self.q_des = self.home.copy()
        self.finger_cmd = FINGER_MAX
        self.gripper_closed = False
        self.target_pos, rot = self.fk(self.home)
        self.target_yaw = yaw_of(rot)
        self.ref_pos = self.target_pos.copy()
        self.ref_yaw = self.target_yaw

    # --- kinematics -------------------------------------------------------------------------
    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation matrix for arm joints `q`."""
        self._ik.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self._ik)
        return self._ik.site_xpos[self._site].copy(), self._ik.site_xmat[self._site].reshape(3, 3).copy()

    def _dls(self, q: np.ndarray, pos_goal: np.ndarray, yaw_goal: float) -> tuple[np.ndarray, np.ndarray, float]:
        """One damped-least-squares step from `q` toward the TCP at `pos_goal`, gripper down at
        `yaw_goal`: (joint step, null-space projector, norm of the pose error)."""
        pos, rot = self.fk(q)
        mujoco.mj_comPos(self.model, self._ik)
        mujoco.mj_jacSite(self.model, self._ik, self._jacp, self._jacr, self._site)
        jac = np.vstack([self._jacp[:, self._dadr], self._jacr[:, self._dadr]])
        # Orientation error: half the sum of column cross products, i.e. vee(M - M^T) / 2.
        m = rot_z(yaw_goal) @ R_DOWN @ rot.T
        err_rot = 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
        err = np.concatenate([pos_goal - pos, err_rot])
        # Damped least squares: well behaved near singularities and at unreachable targets.
        j_pinv = jac.T @ np.linalg.inv(jac @ jac.T + _DLS_DAMPING * _EYE6)
        return j_pinv @ err, _EYE7 - j_pinv @ jac, float(np.linalg.norm(err))

    def solve(self, pos: np.ndarray, yaw: float, tol: float = 1e-7, max_iters: int = 500) -> np.ndarray:
        """Joints that put the TCP at `pos`, gripper down at `yaw`, posture near home: what the
        tracking would settle to, for placing the arm at a logged pose. ValueError if unreachable."""
        goal = np.asarray(pos, dtype=np.float64)
        q = self.home.copy()
        for i in range(max_iters):
            dq, null, err = self._dls(q, goal, float(yaw))
            if err < tol:
                return q
            # The posture pull fades out: with damping it is not exactly in the null space and
            # would otherwise hold the pose error at ~0.1 mm.
            pull = 0.5 * 0.95**i
            q = np.clip(q + dq + null @ ((self.home - q) * pull), JOINT_LOWER + LIMIT_MARGIN, JOINT_UPPER - LIMIT_MARGIN)
        raise ValueError(f"no joint solution puts the TCP at {np.round(goal, 4).tolist()} with yaw {yaw:.3f} rad "
                         f"(pose error {err:.2g} after {max_iters} iterations)")

    def _ik_step(self, dt: float) -> None:
        dq, null, _err = self._dls(self.q_des, self.ref_pos, self.ref_yaw)
        dq += null @ ((self.home - self.q_des) * min(1.0, 2.0 * dt))
        step_max = self.max_joint_speed * dt
        peak = np.max(np.abs(dq))
        if peak > step_max:
            dq *= step_max / peak
        self.q_des = np.clip(self.q_des + dq, JOINT_LOWER + LIMIT_MARGIN, JOINT_UPPER - LIMIT_MARGIN)

    # --- commands (world lock held) -------------------------------------------------------------
    def set_target(self, pos: np.ndarray, yaw: float | None, gripper_closed: bool) -> bool:
        if self.phase is not Phase.READY or self.mirroring:
            return False
        self.target_pos = np.asarray(pos, dtype=np.float64).copy()
        if yaw is not None:
            self.target_yaw = _wrap(float(yaw))
        self.gripper_closed = bool(gripper_closed)
        return True

    def go_home(self) -> bool:
        if self.phase in (Phase.STOPPED, Phase.REFLEX) or self.mirroring:
            return False
        self.phase = Phase.HOMING
        return True

    def stop(self, data: mujoco.MjData) -> None:
        """Freeze at the measured pose: set points jump to where the arm is now."""
        self.phase = Phase.STOPPED
        self._hold_measured(data)

    def resume(self, data: mujoco.MjData) -> None:
        if self.phase is Phase.STOPPED:
            self._hold_measured(data)
            self.phase = Phase.READY

    def reflex(self, data: mujoco.MjData) -> None:
        """A controller reflex, as libfranka's: the arm freezes where it is and takes no targets
        (nor homing) until `recover()`; an emergency stop still wins."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.REFLEX
            self._hold_measured(data)

    def recover(self, data: mujoco.MjData) -> bool:
        """Automatic error recovery: leave REFLEX holding the measured pose; False if not in REFLEX."""
        if self.phase is not Phase.REFLEX:
            return False
        self._hold_measured(data)
        self.phase = Phase.READY
        return True

    def hold(self, data: mujoco.MjData) -> None:
        """Track the measured pose from now on (a new client connecting), unless busy or stopped."""
        if self.phase is Phase.READY and not self.mirroring:
            self._hold_measured(data)

    def reset(self, q: np.ndarray, gripper_open: bool = True) -> None:
        """Re-seat the set points after the arm was placed at `q` kinematically (scene reset)."""
        self.q_des = np.asarray(q, dtype=np.float64).copy()
        self.target_pos, rot = self.fk(self.q_des)
        self.target_yaw = yaw_of(rot)
        self.ref_pos = self.target_pos.copy()
        self.ref_yaw = self.target_yaw
        if gripper_open:
            self.gripper_closed = False
            self.finger_cmd = FINGER_MAX
        if self.phase is Phase.HOMING:
            self.phase = Phase.READY

    def _hold_measured(self, data: mujoco.MjData) -> None:
        self.q_des = data.qpos[self._qadr].copy()
        pos, rot = self.fk(self.q_des)
        self.target_pos, self.ref_pos = pos.copy(), pos.copy()
        self.target_yaw = self.ref_yaw = yaw_of(rot)
        self.finger_cmd = float(np.mean(data.qpos[self._fadr]))

    # --- the control step (physics thread) ------------------------------------------------------
    def update(self, data: mujoco.MjData, dt: float) -> None:
        """Advance the set points by one control period of `dt` seconds and write `data.ctrl`."""
        if self.mirroring:
            data.ctrl[:7] = self.mirror_q
            return
        q_before = self.q_des.copy()
        if self.phase is Phase.HOMING:
            self._home_step(data, dt)
        elif self.phase is Phase.READY:
            self._track_step(dt)
            want = 0.0 if self.gripper_closed else FINGER_MAX
            step = self.finger_speed * dt
            self.finger_cmd += float(np.clip(want - self.finger_cmd, -step, step))
        data.ctrl[:7] = self.q_des + self._ff * (self.q_des - q_before) / dt
        data.ctrl[7:9] = self.finger_cmd

    def _track_step(self, dt: float) -> None:
        delta = self.target_pos - self.ref_pos
        dist = float(np.linalg.norm(delta))
        step = self.max_speed * dt
        self.ref_pos = self.target_pos.copy() if dist <= step else self.ref_pos + delta * (step / dist)
        dyaw = _wrap(self.target_yaw - self.ref_yaw)
        self.ref_yaw = _wrap(
            self.ref_yaw + float(np.clip(dyaw, -self.max_yaw_rate * dt, self.max_yaw_rate * dt))
        )
        self._ik_step(dt)

    def _home_step(self, data: mujoco.MjData, dt: float) -> None:
        # A straight line in joint space, every joint arriving together, like franky's JointMotion.
        delta = self.home - self.q_des
        peak = float(np.max(np.abs(delta)))
        step = self.home_joint_speed * dt
        self.q_des = self.home.copy() if peak <= step else self.q_des + delta * (step / peak)
        measured = data.qpos[self._qadr]
        arrived = peak <= step and np.max(np.abs(measured - self.home)) < 5e-3
        if arrived and np.max(np.abs(data.qvel[self._dadr])) < 0.05:
            self.reset(self.home, gripper_open=False)
            self.phase = Phase.READY

    def apply_mirror(self, data: mujoco.MjData) -> None:
        """Impose the mirrored joints kinematically (called after every physics step)."""
        data.qpos[self._qadr] = self.mirror_q
        data.qvel[self._dadr] = 0.0
        if self.mirror_fingers is not None:
            data.qpos[self._fadr] = self.mirror_fingers
            data.qvel[self._fdadr] = 0.0
