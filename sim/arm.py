"""`Arm` for the simulated Panda: the same contract as the franky backend, over `SimWorld`.

The world's physics (thread or `advance()`) moves the arm; this class only hands commands to the
controller and reads the snapshot the physics publishes, so every call returns in microseconds.
`connect()` does not start the physics: whoever builds the world starts it (see `build_sim`).
"""

from __future__ import annotations

import numpy as np

from arm.base import Arm, ArmMode, ArmState, ArmStats, ArmTarget
from sim.controller import Phase
from sim.world import SimWorld
from spec.clock import now
from spec.config import Config

_MODES = {Phase.READY: ArmMode.READY, Phase.HOMING: ArmMode.HOMING, Phase.STOPPED: ArmMode.STOPPED}


class SimArm(Arm):
    def __init__(self, world: SimWorld, cfg: Config | None = None) -> None:
        self.world = world
        cfg = cfg or world.cfg
        self.low = np.asarray(cfg.workspace.low, dtype=np.float64)
        self.high = np.asarray(cfg.workspace.high, dtype=np.float64)
        self._connected = False
        self._stats = ArmStats()

    def connect(self) -> None:
        with self.world.lock:
            # Start from where the arm is, not from a target left by a previous client. A STOPPED
            # arm stays stopped: only resume() (the operator) clears an emergency stop.
            self.world.controller.hold(self.world.data)
        self._connected = True

    def read(self) -> ArmState:
        snap = self.world.snapshot()
        if not self._connected:
            mode = ArmMode.DISCONNECTED
        elif self.world.thread_error is not None:
            # The physics died: the arm would not move any more, like a controller in reflex.
            mode = ArmMode.REFLEX
            self._stats.last_error = f"sim physics thread died: {self.world.thread_error!r}"
        else:
            mode = _MODES[snap.phase]
        # Copies: a caller editing its state in place must not change what others read.
        return ArmState(
            position=snap.position.copy(),
            quaternion=snap.quaternion.copy(),
            yaw=snap.yaw,
            gripper_width=snap.gripper_width,
            joints=snap.joints.copy(),
            external_force=snap.external_force.copy(),
            mode=mode,
            timestamp=now(),
            gripper_closed=snap.gripper_closed,
        )

    def send_target(self, target: ArmTarget) -> None:
        pos = np.asarray(target.position, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(
                f"target position must be 3 finite numbers, got {np.asarray(target.position).tolist()}"
            )
        if target.yaw is not None and not np.isfinite(target.yaw):
            raise ValueError(f"target yaw must be finite or None, got {target.yaw}")
        if not self._connected:
            return
        # The loop clips to the workspace already; clipping again here keeps the arm inside the
        # box whoever calls it.
        pos = np.clip(pos, self.low, self.high)
        with self.world.lock:
            accepted = self.world.controller.set_target(pos, target.yaw, target.gripper_closed)
        if accepted:
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
        with self.world.lock:
            self.world.controller.stop(self.world.data)
            self.world.publish()

    def resume(self) -> None:
        with self.world.lock:
            self.world.controller.resume(self.world.data)
            self.world.publish()

    def close(self) -> None:
        self._connected = False

    @property
    def stats(self) -> ArmStats:
        return self._stats

    def help_request(self) -> str | None:
        if self.world.thread_error is not None:
            return f"sim physics thread died: {self.world.thread_error!r}"
        return None
