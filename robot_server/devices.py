"""Build the arm and cameras a config names. The daemon never branches on "sim" after this."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from arm.base import Arm
from camera.base import Camera
from spec.config import Config

log = logging.getLogger(__name__)


@dataclass
class Devices:
    arm: Arm
    cameras: dict[str, Camera]
    world: Any | None = None  # sim.SimWorld when any device is simulated
    task: Any | None = None  # sim only: scene resets, success check
    expert: Any | None = None  # sim only: scripted demonstrations
    state_dim: int | None = None  # sim only: low-dimensional state for --state learning

    def state_vector(self) -> np.ndarray:
        assert self.task is not None
        return self.task.state_vector()

    def connect(self) -> None:
        self.arm.connect()
        for cam in self.cameras.values():
            cam.connect()

    def close(self) -> None:
        for cam in self.cameras.values():
            try:
                cam.close()
            except Exception:
                log.exception("closing camera %s", cam.name)
        try:
            self.arm.close()
        except Exception:
            log.exception("closing the arm")
        if self.world is not None:
            self.world.close()


def build_devices(cfg: Config, action_space: Any) -> Devices:
    needs_world = cfg.arm.backend == "sim" or any(c.backend == "sim" for c in cfg.cameras)
    world = None
    if needs_world:
        from sim import SimWorld

        world = SimWorld(cfg)

    if cfg.arm.backend == "sim":
        from sim import SimArm

        arm: Arm = SimArm(world, cfg)
    else:
        from arm.franky_arm import FrankyArm

        arm = FrankyArm(cfg)
        if world is not None:
            # Sim cameras show what the franky arm does (franka-sim has no cameras).
            arm = _Mirrored(arm, world)

    cameras: dict[str, Camera] = {}
    for cc in cfg.cameras:
        if cc.backend == "sim":
            from sim import SimCamera

            cameras[cc.name] = SimCamera(world, cc)
        else:
            from camera.realsense import RealSenseCamera

            cameras[cc.name] = RealSenseCamera(cc)

    task = expert = None
    state_dim = None
    if world is not None and cfg.arm.backend == "sim":
        from sim import STATE_DIM, ScriptedExpert

        task = world.task
        expert = ScriptedExpert(world, action_space)
        state_dim = STATE_DIM
    if world is not None:
        world.start()
    return Devices(arm=arm, cameras=cameras, world=world, task=task, expert=expert, state_dim=state_dim)


class _Mirrored(Arm):
    """A real arm whose joint readings are copied into the sim world for its cameras."""

    def __init__(self, inner: Arm, world: Any) -> None:
        self.inner = inner
        self.world = world

    def connect(self) -> None:
        self.inner.connect()

    def read(self):  # type: ignore[override]
        state = self.inner.read()
        self.world.mirror_joints(state.joints)
        return state

    def send_target(self, target) -> None:  # type: ignore[override]
        self.inner.send_target(target)

    def go_home(self) -> None:
        self.inner.go_home()

    def stop(self) -> None:
        self.inner.stop()

    def resume(self) -> None:
        self.inner.resume()

    def close(self) -> None:
        self.inner.close()

    @property
    def stats(self):  # type: ignore[override]
        return self.inner.stats

    def help_request(self) -> str | None:
        return self.inner.help_request()
