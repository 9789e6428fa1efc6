"""The reversible push task: push the cube from zone A (red) into zone B (green) — forward — and
from B back into A — backward.

Reset distributions: forward starts with the cube in A, backward with it in B, each jittered
uniformly by up to `sim.start_jitter_m` in x and y and `sim.start_jitter_yaw_deg` in yaw, the arm at
home with the gripper open. Success:
the cube's centre inside the target zone's patch (B forward, A backward).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sim.model import CUBE_HALF, CUBE_JOINT, TABLE_X, TABLE_Y, ZONE_A, ZONE_B, Zone
from spec.config import SimConfig, WorkspaceConfig
from spec.direction import check_direction
from spec.step import GRIPPER_MAX_WIDTH

if TYPE_CHECKING:
    from sim.world import SimWorld


# ee xyz, gripper width, cube xyz, sin and cos of 4 x cube yaw (a cube looks the same every 90 deg).
STATE_DIM = 9
STATE_LAYOUT = (
    "ee_x",
    "ee_y",
    "ee_z",
    "gripper",
    "cube_x",
    "cube_y",
    "cube_z",
    "cube_sin4yaw",
    "cube_cos4yaw",
)
# The hand (clipped to the workspace box) can still push the cube back toward the middle this far
# outside the box (x, y); a cube farther out is stuck there for good and needs a person
# (tests/test_sim_world.py pushes one from either side of this line).
REACH_MARGIN_M = 0.02


def cube_pose_of_state(
    state: np.ndarray, workspace: WorkspaceConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`PushCubeTask.state_vector` undone for the cube, for one vector [STATE_DIM] or many [...,
    STATE_DIM]: its centre (m) and yaw (rad, modulo 90 deg: only 4 x yaw is recorded, a cube looks
    the same every quarter turn). Exact unless the vector clipped a coordinate (cube far off)."""
    s = np.asarray(state, dtype=np.float64)
    if s.shape[-1] != STATE_DIM:
        raise ValueError(f"state vector has {s.shape[-1]} values, expected {STATE_DIM} ({', '.join(STATE_LAYOUT)})")
    low, high = np.asarray(workspace.low, dtype=np.float64), np.asarray(workspace.high, dtype=np.float64)
    centre = low + (s[..., 4:7] + 1.0) * (high - low) / 2.0
    return centre, np.arctan2(s[..., 7], s[..., 8]) / 4.0


def cube_in_goal(centre: np.ndarray, direction: str) -> bool | np.ndarray:
    """The success test: the cube's centre (one [3] or many [..., 3]) inside `direction`'s target zone
    and resting on the table."""
    return goal_zone(direction).contains(centre) & (np.abs(np.asarray(centre)[..., 2] - CUBE_HALF) < 0.01)


def success_of_state(state: np.ndarray, direction: str, workspace: WorkspaceConfig) -> np.ndarray:
    """`PushCubeTask.success` read off state vectors [..., STATE_DIM] instead of the live world. Lets
    a learner be paid the task's true reward on stored transitions (a sim diagnostic: what a perfect
    goal classifier would pay)."""
    return np.asarray(cube_in_goal(cube_pose_of_state(state, workspace)[0], direction))


def start_zone(direction: str) -> Zone:
    return ZONE_A if check_direction(direction) == "forward" else ZONE_B


def goal_zone(direction: str) -> Zone:
    return ZONE_B if check_direction(direction) == "forward" else ZONE_A


class PushCubeTask:
    def __init__(self, world: SimWorld, workspace: WorkspaceConfig, sim: SimConfig | None = None) -> None:
        self.world = world
        # The world's config unless told otherwise (SimWorld builds its task from its own config).
        sim = world.cfg.sim if sim is None else sim
        self.jitter_m = float(sim.start_jitter_m)
        self.jitter_yaw = math.radians(sim.start_jitter_yaw_deg)
        self.low = np.asarray(workspace.low, dtype=np.float64)
        self.high = np.asarray(workspace.high, dtype=np.float64)
        jnt = world.model.joint(CUBE_JOINT)
        self._qadr = int(jnt.qposadr[0])
        self._dadr = int(jnt.dofadr[0])
        self.zones = {"a": ZONE_A, "b": ZONE_B}

    # --- reading ----------------------------------------------------------------------------------
    def cube_pose(self) -> tuple[np.ndarray, float]:
        """Cube centre (x, y, z) in the base frame and its yaw (rad).

        Read from the world's snapshot (published after every control period and every edit), so
        the control tick never waits for the physics thread's lock."""
        q = self.world.snapshot().cube_qpos
        w, x, y, z = q[3:]
        yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        return q[:3], yaw

    def cube_position(self) -> np.ndarray:
        return self.cube_pose()[0]

    def success(self, direction: str) -> bool:
        """The cube rests in the target zone: B for forward, A for backward."""
        return bool(cube_in_goal(self.cube_position(), direction))

    def object_in_workspace(self) -> bool:
        """The cube is on the table and within reach (False once it fell off or was pushed away)."""
        pos = self.cube_position()
        on_table = (
            pos[2] > CUBE_HALF * 0.5 and TABLE_X[0] < pos[0] < TABLE_X[1] and TABLE_Y[0] < pos[1] < TABLE_Y[1]
        )
        lo = self.low[:2] - REACH_MARGIN_M
        hi = self.high[:2] + REACH_MARGIN_M
        return bool(on_table and np.all(pos[:2] >= lo) and np.all(pos[:2] <= hi))

    def state_vector(self) -> np.ndarray:
        """Low-dimensional state for state-mode learning, each entry roughly in [-1, 1] (STATE_LAYOUT)."""
        snap = self.world.snapshot()
        cube, yaw = self.cube_pose()
        span = self.high - self.low
        ee = 2.0 * (snap.position - self.low) / span - 1.0
        obj = 2.0 * (cube - self.low) / span - 1.0
        grip = 2.0 * snap.gripper_width / GRIPPER_MAX_WIDTH - 1.0
        vec = np.concatenate([ee, [grip], obj, [math.sin(4 * yaw), math.cos(4 * yaw)]])
        return np.clip(vec, -1.5, 1.5).astype(np.float32)

    # --- resetting --------------------------------------------------------------------------------
    def reset_scene(self, direction: str, rng: np.random.Generator | None = None) -> None:
        """Cube into the start zone of `direction` (jittered), arm at home, gripper open.

        Safe while the physics thread runs (done under the world lock, between two control periods).
        """
        zone = start_zone(direction)
        rng = self.world.rng if rng is None else rng
        dx, dy = rng.uniform(-self.jitter_m, self.jitter_m, size=2)
        yaw = rng.uniform(-self.jitter_yaw, self.jitter_yaw)
        self.place_cube(np.array([zone.center[0] + dx, zone.center[1] + dy]), yaw)

    def place_cube(self, xy: np.ndarray, yaw: float = 0.0, arm_home: bool = True, z: float = CUBE_HALF) -> None:
        world = self.world
        with world.lock:
            d = world.data
            d.qpos[self._qadr : self._qadr + 3] = (float(xy[0]), float(xy[1]), float(z))
            d.qpos[self._qadr + 3 : self._qadr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
            d.qvel[self._dadr : self._dadr + 6] = 0.0
            if arm_home:
                world.place_arm(world.home_joints)
            d.qacc_warmstart[:] = 0.0
            world.publish()
