"""Teleoperation inputs: a 3Dconnexion SpaceMouse (hidraw) and the web page's keyboard fallback.

Both implement `Teleop`. The daemon asks `is_active()` each tick to take control from the policy,
uses `action()` while it is, drains `poll_events()` for button presses (demo start/stop), and calls
`sync_gripper()` with the arm's gripper state when a takeover starts, so the first toggle acts
from what the arm really holds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from robot_server.teleop.hid import HidReport, ReportError, decode_report, find_spacemice
from robot_server.teleop.keyboard import KeyboardTeleop
from robot_server.teleop.mapping import TeleopEvent, motion_action, normalise_axes, spacemouse_motion
from robot_server.teleop.spacemouse import SpaceMouseReader, SpaceMouseState


@runtime_checkable
class Teleop(Protocol):
    name: str

    def action(self) -> np.ndarray:
        """The end-effector delta action in [-1, 1]^dim (ActionSpace layout, gripper last)."""
        ...

    def is_active(self) -> bool:
        """True while the user is moving, and for `takeover_release_s` after."""
        ...

    def poll_events(self) -> list[TeleopEvent]: ...

    def sync_gripper(self, closed: bool) -> None: ...

    def status(self) -> dict[str, object]: ...

    def fault(self) -> str | None:
        """Why the device cannot be read now (unplugged, read errors), or None while it works."""
        ...


__all__ = [
    "HidReport",
    "KeyboardTeleop",
    "ReportError",
    "SpaceMouseReader",
    "SpaceMouseState",
    "Teleop",
    "TeleopEvent",
    "decode_report",
    "find_spacemice",
    "motion_action",
    "normalise_axes",
    "spacemouse_motion",
]
