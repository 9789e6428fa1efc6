"""Build the whole sim from a config: world, arm and the sim cameras, started and closed together."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.arm import SimArm
from sim.camera import SimCamera
from sim.world import SimWorld
from spec.config import Config


@dataclass
class SimRig:
    world: SimWorld
    arm: SimArm
    cameras: dict[str, SimCamera] = field(default_factory=dict)

    def start(self) -> None:
        """Physics thread first, then the arm, then one render thread per camera."""
        self.world.start()
        self.arm.connect()
        for cam in self.cameras.values():
            cam.connect()

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.close()
        self.arm.close()
        self.world.close()

    def __enter__(self) -> SimRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_sim(cfg: Config) -> SimRig:
    """The sim world, its arm, and a SimCamera for every `backend: sim` camera (not started)."""
    world = SimWorld(cfg)
    cams = {c.name: SimCamera(world, c) for c in cfg.cameras if c.backend == "sim"}
    return SimRig(world=world, arm=SimArm(world, cfg), cameras=cams)
