"""The operator's event log: what happened recently, newest last, for /status and the page."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

KEEP = 200  # events kept in memory; the page shows the last few


class Event(StrEnum):
    SESSION_STARTED = "session_started"
    SESSION_PAUSED = "session_paused"
    SESSION_RESUMED = "session_resumed"
    SESSION_ENDED = "session_ended"
    RESET_REQUESTED = "reset_requested"
    MANUAL_RESET = "manual_reset"
    RESET_DONE = "reset_done"
    INTERVENTION = "intervention"
    TAKEOVER = "takeover"
    TAKEOVER_RELEASED = "takeover_released"
    DEMO_STARTED = "demo_started"
    DEMO_HOLDING_GOAL = "demo_holding_goal"
    DEMO_FINISHED = "demo_finished"
    DEMO_DISCARDED = "demo_discarded"
    TELEOP_BUTTON_IGNORED = "teleop_button_ignored"
    ESTOP = "estop"
    ESTOP_RELEASED = "estop_released"
    ARM_RESUMED = "arm_resumed"
    HELP_REQUESTED = "help_requested"


class EventLog:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._events: list[dict[str, Any]] = []

    def add(self, event: Event, **data: Any) -> None:
        self._events.append({"t": time.time(), "event": event.value, **data})
        del self._events[: -self.keep]

    def recent(self, n: int = 20) -> list[dict[str, Any]]:
        return self._events[-n:]
