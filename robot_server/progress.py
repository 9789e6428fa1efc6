"""The robot asks for help when practice makes no progress (session.help_after_steps).

Progress in a direction is that direction's success: in sim the task's success test; on the
robot, where the daemon has no success signal, a success the operator confirms (and, for either
direction, a manual reset: a person has just put the scene right). The daemon has no classifier
score (checkpoints carry the policy only), so backward progress is judged the same way, not by
the state-matching score. After `help_after_steps` steps in one direction without progress, a
help request opens (a stored event); the next progress resolves it.
"""

from __future__ import annotations

from collections.abc import Callable

from robot_server.help import HelpRequests, HelpSource
from spec.direction import DIRECTIONS, Direction

STUCK = {"forward": HelpSource.FORWARD_NO_PROGRESS, "backward": HelpSource.BACKWARD_NO_PROGRESS}


class ProgressWatch:
    def __init__(
        self, help: HelpRequests, after_steps: int, success: Callable[[Direction], bool] | None
    ) -> None:
        self.help = help
        self.after_steps = after_steps  # 0 = never ask
        self.success = success  # None: no success test (the robot)
        self.without_success: dict[Direction, int] = dict.fromkeys(DIRECTIONS, 0)

    def step(self, direction: Direction) -> None:
        """Count one practice step acted in `direction`."""
        if self.success is not None and self.success(direction):
            self.progress(direction)
            return
        self.without_success[direction] += 1
        n = self.without_success[direction]
        if self.after_steps and n >= self.after_steps:
            judge = "the task's success test" if self.success is not None else "a success confirmed by the operator"
            self.help.ask(STUCK[direction], f"{n} {direction} steps without {judge}: check the scene, "
                          "request a reset, or confirm a success")

    def progress(self, direction: Direction) -> None:
        self.without_success[direction] = 0
        self.help.resolve(STUCK[direction])

    def close(self) -> None:
        """The session ended: its requests go with it."""
        for d in DIRECTIONS:
            self.help.resolve(STUCK[d])
