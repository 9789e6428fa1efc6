"""Teleop arbitration: which input drives the arm this tick.

An operator's input always wins: while a teleop device is active it drives the arm instead of the
policy (a takeover, counted as an intervention), the expert or the hold. With several devices, the
first active one in the list wins (the SpaceMouse before the page's keyboard). A broken input
device is skipped, never allowed to stop the control loop.
"""

from __future__ import annotations

import logging
from enum import Enum

from robot_server.teleop import Teleop

log = logging.getLogger(__name__)


class Takeover(Enum):
    """How the operator's control of a policy-driven arm changed this tick."""

    NONE = "none"
    STARTED = "started"
    ENDED = "ended"


class TeleopArbiter:
    def __init__(self, teleops: list[Teleop] | None = None) -> None:
        self.teleops = list(teleops or [])
        self.taking_over = False  # an operator is overriding the policy

    def active(self) -> Teleop | None:
        for t in self.teleops:
            try:
                if t.is_active():
                    return t
            except Exception:  # a broken input device must not stop the loop
                continue
        return None

    def over_policy(self) -> tuple[Teleop | None, Takeover]:
        """The teleop overriding the policy this tick (None: the policy acts), and the change."""
        tele = self.active()
        was, self.taking_over = self.taking_over, tele is not None
        if self.taking_over and not was:
            return tele, Takeover.STARTED
        if was and not self.taking_over:
            return None, Takeover.ENDED
        return tele, Takeover.NONE

    def end_takeover(self) -> None:
        self.taking_over = False

    def demo_toggles(self) -> int:
        """Presses of a demo button (SpaceMouse right button, or the page's key) since the last tick."""
        presses = 0
        for t in self.teleops:
            try:
                events = t.poll_events()
            except Exception:
                continue
            presses += sum(1 for ev in events if ev.kind == "demo_toggle")
        return presses

    def sync_idle(self, gripper_closed: bool) -> None:
        """An idle teleop follows the arm's gripper, so a takeover, a jog or a toggle starts from
        what the arm really holds (not from the state the teleop last commanded)."""
        for t in self.teleops:
            try:
                if not t.is_active():
                    t.sync_gripper(gripper_closed)
            except Exception:
                continue
