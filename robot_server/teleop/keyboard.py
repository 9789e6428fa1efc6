"""Keyboard teleop for the web page: held keys arrive as axes and expire unless repeated.

The page sends the axes of the keys held (robot base frame, see teleop.mapping: +x toward a user
facing the robot, +y to their right, +z up, +yaw anticlockwise from above) every ~100 ms while any
key is down, and once with zeros on keyup. Each call holds for `hold_s`, so a lost keyup (a closed
tab, a dropped request) stops the arm within `hold_s` instead of leaving it moving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

import numpy as np

from robot_server.teleop.mapping import EventQueue, TeleopEvent, motion_action
from spec.clock import now
from spec.step import ActionSpace


class KeyboardTeleop:
    """Implements the Teleop protocol (robot_server.teleop.Teleop)."""

    name = "keyboard"

    def __init__(
        self,
        space: ActionSpace,
        *,
        hold_s: float = 0.3,
        takeover_release_s: float = 1.0,
        speed: float = 0.5,
        clock: Callable[[], float] = now,
    ) -> None:
        if not 0.0 < speed <= 1.0:
            raise ValueError(f"keyboard speed must be in (0, 1], got {speed}")
        self.space = space
        self.hold_s = hold_s
        self.takeover_release_s = takeover_release_s
        self.speed = speed  # fraction of the largest step a held key commands
        self._clock = clock
        self._lock = threading.Lock()
        self._motion = np.zeros(4)
        self._expires = -np.inf
        self._last_active = -np.inf
        self._gripper_closed = False
        self._events = EventQueue()

    def set(
        self,
        x: float = 0.0,
        y: float = 0.0,
        z: float = 0.0,
        yaw: float = 0.0,
        gripper: Literal["open", "close"] | None = None,
        hold_s: float | None = None,
    ) -> None:
        """Replace the held axes (each in [-1, 1]) for `hold_s`; `gripper` opens or closes it."""
        motion = np.array([x, y, z, yaw], dtype=np.float64)
        if not np.all(np.isfinite(motion)) or np.any(np.abs(motion) > 1.0):
            raise ValueError(f"keyboard axes must be finite and in [-1, 1], got x={x} y={y} z={z} yaw={yaw}")
        if gripper not in (None, "open", "close"):
            raise ValueError(f"gripper must be 'open', 'close' or None, got {gripper!r}")
        hold = self.hold_s if hold_s is None else hold_s
        if not hold > 0:
            raise ValueError(f"hold_s must be positive, got {hold_s}")
        t = self._clock()
        with self._lock:
            self._motion = motion
            self._expires = t + hold
            if np.any(motion != 0.0):
                self._last_active = t
            if gripper is not None:
                closed = gripper == "close"
                if closed != self._gripper_closed:
                    self._events.put(TeleopEvent("gripper_toggle", self.name, t))
                self._gripper_closed = closed
                self._last_active = t

    def release(self) -> None:
        with self._lock:
            self._motion = np.zeros(4)
            self._expires = -np.inf

    def toggle_demo(self) -> None:
        """The page's demo start/stop key, as the same event the SpaceMouse's right button makes."""
        t = self._clock()
        with self._lock:
            self._last_active = t
        self._events.put(TeleopEvent("demo_toggle", self.name, t))

    def _held(self, t: float) -> np.ndarray:
        return self._motion if t <= self._expires else np.zeros(4)

    def action(self) -> np.ndarray:
        with self._lock:
            motion = self._held(self._clock()) * self.speed
            closed = self._gripper_closed
        if not self.space.cfg.yaw:
            motion[3] = 0.0
        return motion_action(motion, closed, self.space)

    def is_active(self) -> bool:
        t = self._clock()
        with self._lock:
            if np.any(self._held(t) != 0.0):
                return True
            return t - self._last_active <= self.takeover_release_s

    def poll_events(self) -> list[TeleopEvent]:
        return self._events.drain()

    def sync_gripper(self, closed: bool) -> None:
        with self._lock:
            self._gripper_closed = bool(closed)

    def fault(self) -> str | None:
        """The page's keys have no device to lose."""
        return None

    def status(self) -> dict[str, object]:
        t = self._clock()
        with self._lock:
            held = self._held(t)
            return {
                "held": {k: round(float(v), 3) for k, v in zip(("x", "y", "z", "yaw"), held, strict=True)},
                "expires_in_s": round(max(0.0, self._expires - t), 3) if np.isfinite(self._expires) else 0.0,
                "gripper_closed": self._gripper_closed,
                "active": bool(np.any(held != 0.0)) or t - self._last_active <= self.takeover_release_s,
            }
