"""Build the whole sim from a config: world, arm, sim cameras and scripted expert, started and closed
together. The one way to build the sim (the daemon's devices, the gymnasium env, tests, benches)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.arm import SimArm
from sim.camera import SimCamera
from sim.expert import ScriptedExpert
from sim.task import PushCubeTask
from sim.world import SimWorld
from spec.config import Config
from spec.step import ActionSpace


@dataclass
class SimRig:
    world: SimWorld
    arm: SimArm
    expert: ScriptedExpert
    cameras: dict[str, SimCamera] = field(default_factory=dict)

    @property
    def task(self) -> PushCubeTask:
        return self.world.task

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


def build_sim(cfg: Config, cameras: bool = True) -> SimRig:
    """The sim world, its arm, its expert and (with `cameras`) a SimCamera for every `backend: sim`
    camera; nothing started."""
    world = SimWorld(cfg)
    cams = {c.name: SimCamera(world, c) for c in cfg.cameras if c.backend == "sim"} if cameras else {}
    expert = ScriptedExpert(world, ActionSpace(cfg.action, cfg.workspace))
    return SimRig(world=world, arm=SimArm(world, cfg), expert=expert, cameras=cams)
