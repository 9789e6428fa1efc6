"""The robot asking the operator for help: open requests, one per source, shown until resolved."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from robot_server.events import Event, EventLog


class HelpSource(StrEnum):
    ARM = "arm"  # the arm paused itself (e.g. repeated reflexes)
    OBJECT = "object"  # sim: the object left the workspace
    HOMING = "homing"  # the arm did not reach home in time
    CAMERAS = "cameras"  # no fresh frame for session.stale_help_s after a camera reset
    STORE = "store"  # the replay store's disk is full (robot_server.store_space): free some space
    GRIPPER = "gripper"  # the gripper has not answered for arm.gripper_help_s
    TELEOP = "teleop"  # a teleop device was lost mid-demo (the demo was ended)
    MANUAL_RESET = "manual_reset"  # a person must put the scene back
    EVAL_VERDICT = "eval_verdict"  # the robot: was the eval episode a success?
    FORWARD_NO_PROGRESS = "forward_no_progress"  # session.help_after_steps forward steps, no success
    BACKWARD_NO_PROGRESS = "backward_no_progress"  # ... backward steps, no return to the start


@dataclass
class HelpRequest:
    reason: str
    since: float


class HelpRequests:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self._open: dict[HelpSource, HelpRequest] = {}

    def ask(self, source: HelpSource, reason: str) -> bool:
        """Open (or update the reason of) a request; True if it is new (then it is a stored event)."""
        current = self._open.get(source)
        self._open[source] = HelpRequest(reason, current.since if current else time.time())
        if current is None:
            self.events.add(Event.HELP_REQUESTED, source=source.value, reason=reason)
        return current is None

    def resolve(self, source: HelpSource) -> None:
        if self._open.pop(source, None) is not None:
            self.events.add(Event.HELP_RESOLVED, source=source.value)

    def is_open(self, source: HelpSource) -> bool:
        return source in self._open

    def as_list(self) -> list[dict[str, Any]]:
        return [{"source": s.value, "reason": r.reason, "since": r.since} for s, r in self._open.items()]
