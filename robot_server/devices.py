"""Build the arm and cameras a config names. The daemon never branches on "sim" after this."""

from __future__ import annotations

import logging
from collections.abc import Callable
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


def build_devices(cfg: Config) -> Devices:
    rig = None
    if cfg.arm.backend == "sim" or any(c.backend == "sim" for c in cfg.cameras):
        from sim import build_sim

        rig = build_sim(cfg)

    if cfg.arm.backend == "sim":
        assert rig is not None
        arm: Arm = rig.arm
    else:
        from arm.franky_driver import FrankyArm

        arm = FrankyArm(cfg)
        if rig is not None:
            # Sim cameras show what the franky arm does (franka-sim has no cameras).
            arm = _Mirrored(arm, rig.world)

    cameras: dict[str, Camera] = dict(rig.cameras) if rig is not None else {}
    for cc in cfg.cameras:
        if cc.backend != "sim":
            from camera.realsense import RealSenseCamera

            cameras[cc.name] = RealSenseCamera(cc)
    cameras = {cc.name: cameras[cc.name] for cc in cfg.cameras}  # in config order

    task = expert = None
    state_dim = None
    if rig is not None and cfg.arm.backend == "sim":
        from sim import STATE_DIM

        task, expert, state_dim = rig.task, rig.expert, STATE_DIM
    world = rig.world if rig is not None else None
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

    def decorate_gripper(self, wrap: Callable[[Any], Any]) -> bool:
        return self.inner.decorate_gripper(wrap)
