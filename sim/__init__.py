"""The simulated Franka world: a MuJoCo Panda of our own making, a table with a reversible push
task, and `Arm` / `Camera` implementations over it (see world.py for the threading model).

    rig = build_sim(cfg); rig.start()        # physics thread, arm, cameras (rendered in their own process)
    rig.world.task.reset_scene("forward", rng)
    state = rig.arm.read(); frame = rig.cameras["wrist"].read()
"""

import os

# MuJoCo picks its GL backend when it is first imported: offscreen EGL unless told otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.arm import SimArm  # noqa: E402
from sim.camera import SimCamera  # noqa: E402
from sim.expert import ScriptedExpert  # noqa: E402
from sim.rig import SimRig, build_sim  # noqa: E402
from sim.task import STATE_DIM, STATE_LAYOUT, PushCubeTask  # noqa: E402
from sim.world import SimWorld  # noqa: E402
from spec.direction import DIRECTIONS  # noqa: E402

__all__ = [
    "DIRECTIONS",
    "STATE_DIM",
    "STATE_LAYOUT",
    "PushCubeTask",
    "ScriptedExpert",
    "SimArm",
    "SimCamera",
    "SimRig",
    "SimWorld",
    "build_sim",
]
