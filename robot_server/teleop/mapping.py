"""Teleop input -> end-effector delta action, and button edges -> events.

Sign conventions (defaults; flip any axis with a negative `teleop.spacemouse.scale` entry). The
user stands in front of the robot, facing it, with the SpaceMouse's cable pointing at the robot.
The robot base frame then has +x toward the user, +y to the user's right, +z up, and the gripper
follows the cap as the user sees it:

    push the cap away from you   -> gripper moves away from you   (dx < 0; device +ty is toward you)
    push the cap to your right   -> gripper moves to your right    (dy > 0; device +tx)
    lift the cap                 -> gripper moves up               (dz > 0; device +tz is down)
    twist the cap anticlockwise  -> gripper yaws anticlockwise     (dyaw > 0; device +rz is clockwise
                                    (seen from above)                seen from above), if yaw is on

Tilting the cap (rx, ry) is unused: the action space holds roll and pitch.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spec.step import ActionSpace

EventKind = Literal["gripper_toggle", "demo_toggle"]


def normalise_axes(
    raw: Sequence[float], full_scale: float, deadzone: float, scale: Sequence[float]
) -> np.ndarray:
    """Raw device counts -> [-1, 1]: divide by full scale, cut the dead zone, rescale, apply `scale`.

    The dead zone is cut, not just masked, so the output starts from 0 at its edge instead of
    jumping to `deadzone`.
    """
    v = np.clip(np.asarray(raw, dtype=np.float64) / full_scale, -1.0, 1.0)
    mag = np.clip((np.abs(v) - deadzone) / (1.0 - deadzone), 0.0, 1.0)
    return np.clip(np.sign(v) * mag * np.asarray(scale, dtype=np.float64), -1.0, 1.0)


def spacemouse_motion(axes: np.ndarray) -> np.ndarray:
    """Normalised device axes (tx ty tz rx ry rz) -> robot-frame motion (dx, dy, dz, dyaw)."""
    tx, ty, tz, _rx, _ry, rz = (float(a) for a in axes)
    return np.array([ty, tx, -tz, -rz])


def motion_action(motion: np.ndarray, gripper_closed: bool, space: ActionSpace) -> np.ndarray:
    """Robot-frame motion in [-1, 1] -> the policy's action (norm-clipped; yaw only if enabled)."""
    m = np.clip(np.asarray(motion, dtype=np.float64), -1.0, 1.0)
    return space.action_towards(
        m[:3] * space.cfg.max_translation_m, gripper_closed, delta_yaw=float(m[3]) * space.cfg.max_yaw_rad
    )


def pressed_bits(old: int, new: int) -> list[int]:
    """Button indices that went from released to pressed."""
    rising = new & ~old
    return [i for i in range(rising.bit_length()) if rising >> i & 1]


@dataclass(frozen=True)
class TeleopEvent:
    kind: EventKind
    source: str  # "spacemouse" | "keyboard"
    t: float  # spec.clock.now()

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "source": self.source, "t": self.t}


class EventQueue:
    """Edge events for the daemon to poll; bounded, so nobody polling cannot grow memory."""

    def __init__(self, maxlen: int = 64) -> None:
        self._q: collections.deque[TeleopEvent] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def put(self, event: TeleopEvent) -> None:
        with self._lock:
            self._q.append(event)

    def drain(self) -> list[TeleopEvent]:
        with self._lock:
            out = list(self._q)
            self._q.clear()
        return out
