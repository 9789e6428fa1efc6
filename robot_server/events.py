"""The operator's event log: what happened recently, newest last, for /status and the page.

Events of the DURABLE kinds (interventions, resets, pauses, camera resets, help requests, e-stops)
also go to the replay store's own event log (through the recorder's writer thread), so they outlive
the daemon and are kept whether or not a segment is being recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

KEEP = 200  # events kept in memory; the page shows the last few


class Event(StrEnum):
    SESSION_STARTED = "session_started"
    SESSION_PAUSED = "session_paused"  # by: operator | cameras (frames stale) | store (its disk is full)
    SESSION_RESUMED = "session_resumed"  # by: operator | cameras (fresh frames are back) | store (space is back)
    SESSION_ENDED = "session_ended"
    RESET_REQUESTED = "reset_requested"
    RESET_DONE = "reset_done"
    SUCCESS_CONFIRMED = "success_confirmed"  # the operator saw a direction's task done (robot)
    INTERVENTION = "intervention"  # kind: operator | takeover | manual_reset (session.InterventionKind)
    TAKEOVER_RELEASED = "takeover_released"
    DEMO_STARTED = "demo_started"
    DEMO_HOLDING_GOAL = "demo_holding_goal"
    DEMO_FINISHED = "demo_finished"
    DEMO_DISCARDED = "demo_discarded"
    TELEOP_BUTTON_IGNORED = "teleop_button_ignored"
    EVAL_STARTED = "eval_started"
    EVAL_EPISODE = "eval_episode"  # one episode's verdict (kept in the store as the episode's success)
    EVAL_ENDED = "eval_ended"
    CAMERA_RESET = "camera_reset"  # the daemon restarted cameras whose frames had stopped
    ESTOP = "estop"
    ESTOP_RELEASED = "estop_released"
    ARM_RESUMED = "arm_resumed"
    HELP_REQUESTED = "help_requested"
    HELP_RESOLVED = "help_resolved"
    # The loop's timing over one control.tick_stats_s window (robot_server/tick_stats.py): written to
    # the store directly, never through EventLog; GET /events leaves it out unless asked for by type.
    TICK_STATS = "tick_stats"


DURABLE = frozenset(
    {
        Event.INTERVENTION,
        Event.SESSION_PAUSED,
        Event.SESSION_RESUMED,
        Event.CAMERA_RESET,
        Event.RESET_REQUESTED,
        Event.RESET_DONE,
        Event.SUCCESS_CONFIRMED,
        Event.HELP_REQUESTED,
        Event.HELP_RESOLVED,
        Event.ESTOP,
        Event.ESTOP_RELEASED,
        Event.TICK_STATS,
    }
)
# The same kinds as a type of their own: what the API accepts as a filter of the stored log.
DurableEvent = StrEnum("DurableEvent", [(e.name, e.value) for e in Event if e in DURABLE])


class EventLog:
    def __init__(self, store: Callable[[dict[str, Any]], None] | None = None, keep: int = KEEP) -> None:
        self.keep = keep
        self._store = store  # Recorder.log_event: never blocks the tick
        self._events: list[dict[str, Any]] = []

    def add(self, event: Event, **data: Any) -> None:
        t = time.time()
        self._events.append({"t": t, "event": event.value, **data})
        del self._events[: -self.keep]
        if event in DURABLE and self._store is not None:
            self._store({"type": event.value, "time": t, **data})

    def recent(self, n: int = 20) -> list[dict[str, Any]]:
        return self._events[-n:]
