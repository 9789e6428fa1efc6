"""The hardware arm: a Franka FR3/Panda through franky (libfranka), or franka-sim speaking its protocol.

`FrankyArm` implements `arm.base.Arm`: connection, the tick (`read()`, `send_target()`), homing,
emergency stop, and franky state -> `ArmState`. It delegates following the target to
`arm.tracking`, the gripper to `arm.gripper` and unattended recovery to `arm.recovery`.

Threads (all owned here; only the control thread calls the public methods):
- the control thread: `read()` and `send_target()` each make a few sub-millisecond franky calls
  (state, poll for an asynchronous motion error, re-target) and return;
- libfranka's 1 kHz motion thread (started by franky on move(); it inherits the control
  thread's scheduling policy, see `_open_connections`);
- `franky-recovery`: runs the `RecoveryMachine` after a reflex. Recovery calls block for tens of
  milliseconds (`recover_from_errors()` ~60 ms on franka-sim), so they never run on the tick;
- `franky-gripper` (`arm.gripper.GripperWorker`): issues gripper commands and polls the gripper
  width, which blocks ~17 ms per read; `read()` returns its latest width.

Orientation: roll and pitch are held with the gripper pointing down (R = Rz(yaw) diag(1,-1,-1),
the convention of the MuJoCo sim arm); yaw is the target's, or held.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from arm.base import Arm, ArmMode, ArmState, ArmStats, ArmTarget
from arm.gripper import GripperWorker
from arm.recovery import MAX_ERRORS_KEPT, RECOVERY_MODES, RecoveryMachine, RecoveryState
from arm.tracking import TRACKINGS, Tracking
from spec.clock import now
from spec.config import Config
from spec.step import yaw_of

log = logging.getLogger(__name__)

THREAD_JOIN_S = 3.0
CONNECT_TIMEOUT_S = 15.0


def _franky() -> Any:
    # Imported on first use so that the sim backend and the unit tests never need libfranka.
    import franky

    return franky


def down_quaternion_xyzw(yaw: float) -> np.ndarray:
    """Gripper pointing down, rotated by `yaw` about the base z axis: Rz(yaw) * Rx(pi), as x y z w."""
    return np.array([math.cos(yaw / 2.0), math.sin(yaw / 2.0), 0.0, 0.0])


def _motion_errors(franky: Any) -> tuple[type[BaseException], ...]:
    """What an aborted motion raises: libfranka's ControlException (a reflex, a rejected move) or
    a plain RuntimeError from franky's own planner (e.g. Ruckig's "Motion planner failed")."""
    return (franky.ControlException, RuntimeError)


def _is_preemption(exc: BaseException) -> bool:
    # Our own stop() preempts a running motion; that is not a reflex.
    return "preempted" in str(exc)


class _RecoveryAdapter:
    """franky seen through the RecoverableRobot protocol (called from the recovery thread)."""

    def __init__(self, arm: FrankyArm) -> None:
        self.arm = arm

    def recover(self) -> bool:
        robot = self.arm.robot
        try:
            robot.poll_motion()  # consume a motion error still stored in franky
        except Exception as exc:
            log.debug("stale motion error before recovery: %s", exc)
        return bool(robot.recover_from_errors())

    def robot_mode(self) -> str:
        return str(self.arm.robot.state.robot_mode.name)

    def start_retreat(self, up_m: float) -> None:
        if self.arm.stopped:
            return  # an emergency stop forbids every motion, recovery ones too
        franky = _franky()
        pose = self.arm.robot.state.O_T_EE
        target = np.asarray(pose.translation, dtype=np.float64).copy()
        # Up, but never above the workspace (and never down if already above it).
        target[2] = max(target[2], min(target[2] + up_m, self.arm.high[2]))
        self.arm.robot.move(
            franky.CartesianMotion(franky.Affine(target, pose.quaternion), franky.ReferenceType.Absolute),
            asynchronous=True,
        )

    def start_home(self) -> None:
        if self.arm.stopped:
            return
        self.arm.robot.move(_franky().JointMotion(self.arm.home_joints), asynchronous=True)

    def motion_running(self) -> bool:
        robot = self.arm.robot
        robot.poll_motion()  # raises the motion's error, if it had one
        return bool(robot.is_in_control)


class FrankyArm(Arm):
    def __init__(self, cfg: Config) -> None:
        if cfg.arm.tracking not in TRACKINGS:
            raise ValueError(f"arm.tracking must be one of {sorted(TRACKINGS)}, got {cfg.arm.tracking!r}")
        self.cfg = cfg
        self.low = np.asarray(cfg.workspace.low, dtype=np.float64)
        self.high = np.asarray(cfg.workspace.high, dtype=np.float64)
        self.home_joints = np.asarray(cfg.arm.home_joints, dtype=np.float64)  # JointMotion wants numpy
        self.robot: Any = None
        self.gripper: Any = None
        self._gripper_wraps: list[Callable[[Any], Any]] = []  # decorate_gripper(), applied at each connect
        self._stats = ArmStats()
        self._mode = ArmMode.DISCONNECTED
        self._disconnect_reason: str | None = None
        self._tracking: Tracking | None = None
        self._homing: str | None = None  # None | "winding_down" | "moving"
        self._yaw_hold = 0.0
        self._episodes_seen = 0
        self._gripper_worker: GripperWorker | None = None
        self._machine: RecoveryMachine | None = None
        self._recovery_thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._last_state: ArmState | None = None
        self.commanded_position: np.ndarray | None = None  # the last position handed to franky
        self.commanded_yaw: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> None:
        if self.robot is not None:
            return
        franky = _franky()
        arm = self.cfg.arm
        self.robot, self.gripper = self._open_connections(franky)
        for wrap in self._gripper_wraps:
            self.gripper = wrap(self.gripper)
        self._tracking = TRACKINGS[arm.tracking](franky, self.robot, self.cfg)
        self._machine = RecoveryMachine(
            _RecoveryAdapter(self),
            arm.recovery,
            self._stats,
            is_control_error=lambda exc: isinstance(exc, _motion_errors(franky)),
        )
        self._episodes_seen = 0
        self._closing.clear()
        self._gripper_worker = GripperWorker(self.gripper, arm, self._record_error)
        self._gripper_worker.start()
        self._recovery_thread = threading.Thread(target=self._recovery_loop, name="franky-recovery", daemon=True)
        self._recovery_thread.start()
        self._mode = ArmMode.READY
        self._disconnect_reason = None
        self._resync()
        if self.robot.state.robot_mode == franky.RobotMode.Reflex:
            self._machine.on_reflex("robot was in Reflex mode at connect")
            self._wake.set()
        log.info("franky arm connected to %s (tracking=%s)", arm.host, self._tracking.name)

    def _open_connections(self, franky: Any) -> tuple[Any, Any]:
        """franky's Robot and Gripper, opened on a short-lived thread with a deadline.

        libfranka waits without a timeout when the server accepts the TCP connection but never
        answers (franka-sim busy with another client). The thread also keeps the caller's
        scheduling: constructing a Robot switches the constructing thread to SCHED_FIFO 99
        whenever it may (as root, even with RealtimeConfig.Ignore), and every thread started from
        it inherits that, including the 1 kHz motion threads franky starts on move(). So with
        realtime "ignore" everything runs SCHED_OTHER and cannot starve a small machine; on a
        PREEMPT_RT robot PC give the control thread a real-time priority
        (control.realtime_priority) and the motion threads it starts inherit it.
        """
        arm = self.cfg.arm
        realtime = franky.RealtimeConfig.Ignore if arm.realtime == "ignore" else franky.RealtimeConfig.Enforce
        result: dict[str, Any] = {}

        def open_both() -> None:
            try:
                result["robot"] = franky.Robot(
                    arm.host,
                    relative_dynamics_factor=arm.dynamics_factor,
                    default_torque_threshold=arm.collision_torque,
                    default_force_threshold=arm.collision_force,
                    realtime_config=realtime,
                )
                result["gripper"] = franky.Gripper(arm.host)
            except Exception as exc:
                result["error"] = exc

        opener = threading.Thread(target=open_both, name="franky-connect", daemon=True)
        opener.start()
        opener.join(CONNECT_TIMEOUT_S)
        if opener.is_alive():
            raise ConnectionError(
                f"the robot at arm.host={arm.host!r} did not answer within {CONNECT_TIMEOUT_S:g} s "
                "(is another client connected?)"
            )
        if "error" in result:
            exc = result["error"]
            raise ConnectionError(f"cannot connect to the robot at arm.host={arm.host!r}: {exc}") from exc
        return result["robot"], result["gripper"]

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self.robot is not None and self._tracking is not None:
            try:
                if self.robot.is_in_control:
                    self._tracking.wind_down()
                    self.robot.join_motion(timeout=2.0)
            except Exception as exc:
                log.info("closing: %s", exc)
        if self._recovery_thread is not None:
            self._recovery_thread.join(timeout=THREAD_JOIN_S)
        if self._gripper_worker is not None:
            self._gripper_worker.stop()
            self._gripper_worker.join(timeout=THREAD_JOIN_S)
        self._recovery_thread = self._gripper_worker = None
        # franky closes the connections when the last reference goes: drop every one of them.
        self.robot = self.gripper = self._tracking = None
        self._mode = ArmMode.DISCONNECTED

    # -- the tick ----------------------------------------------------------------------------------

    def read(self) -> ArmState:
        if self.robot is None:
            return self._disconnected_state()
        franky = _franky()
        machine = self._machine
        try:
            if not machine.active:
                # The recovery thread owns motion errors while it works; otherwise surface them.
                try:
                    self.robot.poll_motion()
                except _motion_errors(franky) as exc:
                    self._on_control_error(exc)
            state = self.robot.state
        except franky.NetworkException as exc:
            self._lost_connection(exc)
            return self._disconnected_state()
        if (
            machine.state is RecoveryState.RUNNING
            and not machine.active
            and self._mode is not ArmMode.STOPPED
            and state.robot_mode == franky.RobotMode.Reflex
        ):
            # A reflex with no motion error to show for it (e.g. the arm was pushed while idle).
            self._on_control_error(RuntimeError(f"robot in Reflex mode: {state.last_motion_errors}"))
        if machine.episodes != self._episodes_seen and not machine.active:
            self._episodes_seen = machine.episodes
            self._resync(state)
        if self._homing is not None and not machine.active:
            self._advance_homing()
        self._last_state = self._state_from(state)
        return self._last_state

    def send_target(self, target: ArmTarget) -> None:
        pos = np.asarray(target.position, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"target position must be 3 finite numbers, got {np.asarray(target.position).tolist()}")
        if target.yaw is not None and not math.isfinite(target.yaw):
            raise ValueError(f"target yaw must be finite or None, got {target.yaw}")
        if self.mode is not ArmMode.READY:
            return
        franky = _franky()
        pos = np.clip(pos, self.low, self.high)  # the caller clipped already; a bug must not reach the arm
        yaw = self._yaw_hold if target.yaw is None else float(target.yaw)
        pose = franky.Affine(pos, down_quaternion_xyzw(yaw))
        try:
            self._tracking.send(pose)
        except _motion_errors(franky) as exc:  # an asynchronous error of the previous motion
            self._on_control_error(exc)
            return
        except (franky.InvalidMotionTypeException, franky.InvalidOperationException) as exc:
            self._record_error(f"target refused: {exc}")
            return
        except franky.NetworkException as exc:
            self._lost_connection(exc)
            return
        self.commanded_position = pos
        self.commanded_yaw = yaw
        if target.yaw is not None:
            self._yaw_hold = yaw
        self._gripper_worker.desired_closed = bool(target.gripper_closed)
        self._stats.targets += 1

    def go_home(self) -> None:
        if self.mode is not ArmMode.READY:
            log.info("go_home ignored in mode %s", self.mode)
            return
        self._stats.homings += 1
        self._mode = ArmMode.HOMING
        self._homing = "winding_down"
        self._advance_homing()

    def stop(self) -> None:
        self._homing = None
        self._mode = ArmMode.STOPPED
        if self._machine is not None:
            self._machine.cancel_motion()
            self._wake.set()
        if self.robot is None:
            return
        try:
            self.robot.stop()
        except Exception as exc:
            self._record_error(f"stop: {type(exc).__name__}: {exc}")
        if self._tracking is not None:
            self._tracking.reset()

    def resume(self) -> None:
        if self.robot is None:
            return
        if self._mode is ArmMode.STOPPED:
            self._mode = ArmMode.READY
            self._resync()
        if self._machine.state is RecoveryState.PAUSED:
            self._machine.resume()
            self._wake.set()

    @property
    def stats(self) -> ArmStats:
        return self._stats

    def decorate_gripper(self, wrap: Callable[[Any], Any]) -> bool:
        """`wrap` gets the franky Gripper (the one the gripper thread talks to) at every connect."""
        self._gripper_wraps.append(wrap)
        if self.gripper is not None:  # connected already: the gripper thread uses it from its next call on
            self.gripper = wrap(self.gripper)
            if self._gripper_worker is not None:
                self._gripper_worker.gripper = self.gripper
        return True

    def help_request(self) -> str | None:
        if self._disconnect_reason is not None:
            return self._disconnect_reason
        return self._machine.help_reason if self._machine is not None else None

    # -- details -----------------------------------------------------------------------------------

    @property
    def mode(self) -> ArmMode:
        if self.robot is None or self._mode is ArmMode.DISCONNECTED or self._machine is None:
            return ArmMode.DISCONNECTED
        if self._mode is ArmMode.STOPPED:
            return ArmMode.STOPPED
        return RECOVERY_MODES.get(self._machine.state, self._mode)

    @property
    def stopped(self) -> bool:
        return self._mode is ArmMode.STOPPED

    @property
    def tracking(self) -> str:
        return self._tracking.name if self._tracking is not None else self.cfg.arm.tracking

    def _advance_homing(self) -> None:
        franky = _franky()
        try:
            if self._homing == "winding_down" and self._tracking is not None:
                self._tracking.wind_down()
            if self.robot.is_in_control:
                return
            if self._homing == "winding_down":
                self.robot.move(franky.JointMotion(self.home_joints), asynchronous=True)
                self._homing = "moving"
            elif self._homing == "moving":
                self._homing = None
                self._mode = ArmMode.READY
                self._resync()
        except _motion_errors(franky) as exc:  # e.g. a move rejected at once
            self._on_control_error(exc)

    def _on_control_error(self, exc: BaseException) -> None:
        if _is_preemption(exc):
            log.info("motion preempted: %s", exc)
            return
        log.warning("control error: %s", exc)
        self._homing = None
        if self._mode is ArmMode.HOMING:
            self._mode = ArmMode.READY
        self._tracking.reset()
        self._machine.on_reflex(str(exc))
        self._wake.set()

    def _recovery_loop(self) -> None:
        while not self._closing.is_set():
            machine = self._machine
            if machine.active:
                try:
                    machine.step()
                except Exception as exc:  # a bug or a lost connection: stop and ask, never spin
                    log.exception("recovery step failed")
                    self._record_error(f"recovery: {type(exc).__name__}: {exc}")
                    machine.fault(f"recovery step failed: {type(exc).__name__}: {exc}")
                self._wake.wait(0.01)
            else:
                self._wake.wait(0.5)
            self._wake.clear()

    def _resync(self, state: Any = None) -> None:
        """Start tracking from where the arm is: after connect, homing, recovery or a stop."""
        state = state if state is not None else self.robot.state
        self._yaw_hold = yaw_of(np.asarray(state.O_T_EE.matrix))
        if self._tracking is not None:
            self._tracking.reset()

    def _record_error(self, message: str) -> None:
        log.warning("%s", message)
        self._stats.last_error = message
        self._stats.errors.append(message)
        del self._stats.errors[:-MAX_ERRORS_KEPT]

    def _lost_connection(self, exc: BaseException) -> None:
        self._disconnect_reason = f"connection to the robot at {self.cfg.arm.host} lost: {exc}"
        self._record_error(self._disconnect_reason)
        self._mode = ArmMode.DISCONNECTED

    def _state_from(self, state: Any) -> ArmState:
        pose = state.O_T_EE
        x, y, z, w = (float(v) for v in pose.quaternion)
        worker = self._gripper_worker
        if worker is not None:
            self._stats.gripper_answered_at = worker.answered_at
        return ArmState(
            position=np.array(pose.translation, dtype=np.float64),
            quaternion=np.array([w, x, y, z]),
            yaw=yaw_of(np.asarray(pose.matrix)),
            gripper_width=worker.width if worker is not None else 0.0,
            joints=np.array(state.q, dtype=np.float64),
            external_force=np.array(state.O_F_ext_hat_K, dtype=np.float64),
            mode=self.mode,
            timestamp=now(),
            gripper_closed=bool(worker is not None and worker.desired_closed),
        )

    def _disconnected_state(self) -> ArmState:
        last = self._last_state
        if last is not None:
            return dataclasses.replace(last, mode=ArmMode.DISCONNECTED, timestamp=now())
        return ArmState(
            position=np.zeros(3),
            quaternion=np.array([1.0, 0.0, 0.0, 0.0]),
            yaw=0.0,
            gripper_width=0.0,
            joints=np.zeros(7),
            external_force=np.zeros(6),
            mode=ArmMode.DISCONNECTED,
            timestamp=now(),
        )
