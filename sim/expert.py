"""A scripted pusher that solves the push task in either direction: the sim's demonstrator.

Each call looks at the true cube and hand positions and returns one normalised action (the same
[-1, 1] actions a policy outputs, made with `ActionSpace.action_towards`). It is a feedback state
machine, re-aimed every step, so a cube that turns or slides off the line is simply approached
again:

  approach  travel above the stand-off point behind the cube (on the far side from the goal);
  descend   lower the closed gripper to pushing height;
  push      move through the cube toward the goal centre, steering back onto the cube-goal line;
            leaving the line or losing the cube sends it back to approach (lifting first);
  done      the cube is near the goal centre: lift clear and hold.
"""

from __future__ import annotations

import numpy as np

from sim.model import CUBE_HALF
from sim.task import check_direction, goal_zone
from sim.world import SimWorld
from spec.step import ActionSpace

PUSHER_HALF = 0.015  # closed fingers, half their extent along the push (finger) axis, m
STANDOFF = CUBE_HALF + PUSHER_HALF + 0.02  # start this far behind the cube centre
Z_PUSH = 0.022  # TCP height while pushing: fingertips ~1.7 cm above the table
Z_SAFE = 0.09  # TCP height to travel over the cube
DONE_TOL = 0.015  # cube this close to the goal centre: stop pushing
RESUME_TOL = 0.03  # a finished cube moved this far away from the goal centre: push again
MAX_LATERAL = 0.018  # pusher further than this from the cube-goal line: re-approach
AT_POINT = 0.012  # close enough to a waypoint in the plane


class ScriptedExpert:
    def __init__(self, world: SimWorld, action_space: ActionSpace) -> None:
        self.world = world
        self.space = action_space
        self.phase = "approach"
        self._direction: str | None = None

    def reset(self) -> None:
        self.phase = "approach"
        self._direction = None

    def act(self, direction: str) -> np.ndarray:
        """The next action for `direction` ("forward": push A to B, "backward": B to A)."""
        check_direction(direction)
        if direction != self._direction:
            self.reset()
            self._direction = direction
        snap = self.world.snapshot()
        ee = snap.position
        cube = self.world.task.cube_position()
        goal = np.asarray(goal_zone(direction).center)
        target = self._waypoint(ee, cube[:2], goal)
        return self.space.action_towards(target - ee, close_gripper=True, delta_yaw=-snap.yaw)

    def _waypoint(self, ee: np.ndarray, cube: np.ndarray, goal: np.ndarray) -> np.ndarray:
        to_goal = goal - cube
        dist = float(np.linalg.norm(to_goal))
        if self.phase == "done" and dist > RESUME_TOL:
            self.phase = "approach"
        if self.phase != "done" and dist < DONE_TOL:
            self.phase = "done"
        if self.phase == "done":
            return np.array([ee[0], ee[1], Z_SAFE])

        u = to_goal / dist
        n = np.array([-u[1], u[0]])
        rel = ee[:2] - cube
        along, lateral = float(rel @ u), float(rel @ n)
        standoff = cube - u * STANDOFF

        if self.phase == "push":
            lost = abs(lateral) > MAX_LATERAL or along > -(CUBE_HALF + PUSHER_HALF) + 0.012
            if lost or ee[2] > Z_PUSH + 0.02:
                self.phase = "approach"
            else:
                # Advance along the line and pull back onto it; never push the cube past the goal.
                step = min(self.space.cfg.max_translation_m, dist)
                xy = cube + u * (along + step)
                return np.array([xy[0], xy[1], Z_PUSH])

        off_standoff = float(np.linalg.norm(ee[:2] - standoff))
        if off_standoff > AT_POINT:
            self.phase = "approach"
            if ee[2] < Z_SAFE - 0.015 and np.linalg.norm(rel) < STANDOFF + 0.05:
                return np.array([ee[0], ee[1], Z_SAFE])  # near the cube: lift before moving across
            return np.array([standoff[0], standoff[1], Z_SAFE])
        self.phase = "descend"
        if ee[2] > Z_PUSH + 0.006:
            return np.array([standoff[0], standoff[1], Z_PUSH])
        self.phase = "push"
        return np.array([standoff[0], standoff[1], Z_PUSH])
