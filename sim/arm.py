"""`Arm` for the simulated Panda: the same contract as the franky backend, over `SimWorld`.

The world's physics (thread or `advance()`) moves the arm; this class only hands commands to the
controller and reads the snapshot the physics publishes, so every call returns in microseconds.
`connect()` does not start the physics: whoever builds the world starts it (see `build_sim`).

Reflexes go through the hardware's recovery state machine (arm.recovery): when the controller
stops on a reflex (`SimWorld.reflex()`, as libfranka's would on a collision), `read()` reports it,
and the machine recovers, verifies, retreats and resumes, or pauses for the operator after
repeated reflexes. Every sim call is microseconds, so the machine is stepped on the caller's
thread. The gripper is a device of its own (`SimGripper`): when it does not answer, the arm keeps
working and the last width and command stay, as with franky's gripper thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from arm.base import Arm, ArmMode, ArmState, ArmStats, ArmTarget, GripperNotAnswering
from arm.recovery import RECOVERY_MODES, RecoveryMachine, RecoveryState
from sim.controller import Phase
from sim.world import SimWorld
from spec.clock import now
from spec.config import Config

_MODES = {
    Phase.READY: ArmMode.READY,
    Phase.HOMING: ArmMode.HOMING,
    Phase.STOPPED: ArmMode.STOPPED,
    Phase.REFLEX: ArmMode.REFLEX,
}


class SimGripper:
    """The sim's gripper: `width()` is its answer (the measured finger gap), `command()` its order.
    Both raise `GripperNotAnswering` on a gripper that does not answer (see fault injection)."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world

    def width(self) -> float:
        return float(self.world.snapshot().gripper_width)

    def command(self, closed: bool) -> bool:
        """Accept `closed` as the gripper's next state; returns it."""
        return bool(closed)


class _SimRecovery:
    """The sim controller seen through arm.recovery's RecoverableRobot protocol."""

    def __init__(self, arm: SimArm) -> None:
        self.arm = arm
        self.world = arm.world

    def recover(self) -> bool:
        with self.world.lock:
            self.world.controller.recover(self.world.data)
            self.world.publish()
        return True

    def robot_mode(self) -> str:
        phase = self.world.controller.phase
        return {Phase.REFLEX: "Reflex", Phase.HOMING: "Move", Phase.STOPPED: "Idle"}.get(phase, "Idle")

    def start_retreat(self, up_m: float) -> None:
        with self.world.lock:
            c = self.world.controller
            target = c.ref_pos.copy()
            target[2] = max(target[2], min(target[2] + up_m, self.arm.high[2]))
            c.set_target(target, None, c.gripper_closed)

    def start_home(self) -> None:
        with self.world.lock:
            self.world.controller.go_home()
            self.world.publish()

    def motion_running(self) -> bool:
        c = self.world.controller
        return c.phase is Phase.HOMING or float(np.linalg.norm(c.target_pos - c.ref_pos)) > 1e-6


class SimArm(Arm):
    def __init__(self, world: SimWorld, cfg: Config | None = None) -> None:
        self.world = world
        cfg = cfg or world.cfg
        self.low = np.asarray(cfg.workspace.low, dtype=np.float64)
        self.high = np.asarray(cfg.workspace.high, dtype=np.float64)
        self._connected = False
        self._stats = ArmStats()
        self.gripper: Any = SimGripper(world)  # a SimGripper, or a decorator around one
        self._gripper_width = 0.0
        self._gripper_closed = False
        self._machine = RecoveryMachine(_SimRecovery(self), cfg.arm.recovery, self._stats)

    def decorate_gripper(self, wrap: Callable[[Any], Any]) -> bool:
        self.gripper = wrap(self.gripper)  # used from the next read() or send_target() on
        return True

    def connect(self) -> None:
        with self.world.lock:
            # Start from where the arm is, not from a target left by a previous client. A STOPPED
            # arm stays stopped: only resume() (the operator) clears an emergency stop.
            self.world.controller.hold(self.world.data)
            self._gripper_closed = self.world.controller.gripper_closed
        self._connected = True

    def read(self) -> ArmState:
        snap = self.world.snapshot()
        machine = self._machine
        if (
            self._connected
            and snap.phase is Phase.REFLEX
            and machine.state is RecoveryState.RUNNING
            and not machine.active
        ):
            machine.on_reflex(f"sim controller reflex: {self.world.reflex_reason}")
        if machine.active:
            machine.step()
        try:
            self._gripper_width = self.gripper.width()
            self._stats.gripper_answered_at = now()
        except GripperNotAnswering:
            pass  # the last width stays; the daemon watches gripper_answered_at
        if not self._connected:
            mode = ArmMode.DISCONNECTED
        elif self.world.thread_error is not None:
            # The physics died: the arm would not move any more, like a controller in reflex.
            mode = ArmMode.REFLEX
            self._stats.last_error = f"sim physics thread died: {self.world.thread_error!r}"
        elif snap.phase is Phase.STOPPED:
            mode = ArmMode.STOPPED
        elif machine.state is not RecoveryState.RUNNING:
            mode = RECOVERY_MODES[machine.state]
        else:
            mode = _MODES[snap.phase]
        # Copies: a caller editing its state in place must not change what others read.
        return ArmState(
            position=snap.position.copy(),
            quaternion=snap.quaternion.copy(),
            yaw=snap.yaw,
            gripper_width=self._gripper_width,
            joints=snap.joints.copy(),
            external_force=snap.external_force.copy(),
            mode=mode,
            timestamp=now(),
            gripper_closed=self._gripper_closed,
        )

    def send_target(self, target: ArmTarget) -> None:
        pos = np.asarray(target.position, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(
                f"target position must be 3 finite numbers, got {np.asarray(target.position).tolist()}"
            )
        if target.yaw is not None and not np.isfinite(target.yaw):
            raise ValueError(f"target yaw must be finite or None, got {target.yaw}")
        if not self._connected or self._machine.active or self._machine.state is not RecoveryState.RUNNING:
            return
        closed = self._gripper_closed
        with contextlib.suppress(GripperNotAnswering):  # the arm goes on; the gripper keeps its last command
            closed = self.gripper.command(bool(target.gripper_closed))
        # The loop clips to the workspace already; clipping again here keeps the arm inside the
        # box whoever calls it.
        pos = np.clip(pos, self.low, self.high)
        with self.world.lock:
            accepted = self.world.controller.set_target(pos, target.yaw, closed)
        if accepted:  # a stopped arm ignores targets, its gripper included
            self._gripper_closed = closed
            self._stats.targets += 1

    def go_home(self) -> None:
        if not self._connected:
            return
        with self.world.lock:
            started = self.world.controller.go_home()
            self.world.publish()  # so a read() right after go_home() already says HOMING
        if started:
            self._stats.homings += 1

    def stop(self) -> None:
        self._machine.cancel_motion()
        with self.world.lock:
            self.world.controller.stop(self.world.data)
            self.world.publish()

    def resume(self) -> None:
        with self.world.lock:
            self.world.controller.resume(self.world.data)
            self.world.publish()
        if self._machine.state is RecoveryState.PAUSED:
            self._machine.resume()

    def close(self) -> None:
        self._connected = False

    @property
    def stats(self) -> ArmStats:
        return self._stats

    def help_request(self) -> str | None:
        if self.world.thread_error is not None:
            return f"sim physics thread died: {self.world.thread_error!r}"
        return self._machine.help_reason
