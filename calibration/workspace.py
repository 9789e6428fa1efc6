"""The workspace safety box and the home pose, from poses the operator jogged the arm to.

The operator jogs the end-effector (SpaceMouse or keyboard teleop, while no session runs) to the
corners of the region the task needs and marks each; the box is the points' bounding box plus a
margin. The arm is always clipped to the box in effect, so marked points cannot lie outside it:
to grow the box, use the margin (or edit the file).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.config_file import ConfigEditError

MIN_EXTENT_M = 0.05  # a box thinner than this on any axis leaves the policy no room to act
MAX_MARGIN_M = 0.25
DISTINCT_M = 0.001  # points closer than this count as one
DECIMALS = 4  # 0.1 mm in the config file


@dataclass(frozen=True)
class Box:
    low: list[float]
    high: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "size": [round(h - lo, DECIMALS) for lo, h in zip(self.low, self.high, strict=True)],
        }


def _point(p: Sequence[float], what: str = "point") -> np.ndarray:
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ConfigEditError("points", f"{what} must be 3 finite numbers (x, y, z in m), got {list(p)}")
    return a


def distinct_points(points: Sequence[Sequence[float]]) -> int:
    kept: list[np.ndarray] = []
    for p in points:
        a = _point(p)
        if all(np.linalg.norm(a - k) > DISTINCT_M for k in kept):
            kept.append(a)
    return len(kept)


def propose_box(points: Sequence[Sequence[float]], margin_m: float = 0.0) -> Box:
    """The bounding box of `points` grown by `margin_m` on every side; refused (naming the field)
    with fewer than 2 distinct points or a box under MIN_EXTENT_M on an axis."""
    if not (math.isfinite(margin_m) and 0 <= margin_m <= MAX_MARGIN_M):
        raise ConfigEditError("margin_m", f"must be between 0 and {MAX_MARGIN_M} m, got {margin_m}")
    pts = np.array([_point(p) for p in points]) if points else np.zeros((0, 3))
    n = distinct_points(pts) if len(pts) else 0
    if n < 2:
        raise ConfigEditError(
            "points", f"need at least 2 distinct points (more than {DISTINCT_M * 1e3:.0f} mm apart), have {n}"
        )
    low = pts.min(axis=0) - margin_m
    high = pts.max(axis=0) + margin_m
    for axis, lo, hi in zip("xyz", low, high, strict=True):
        if hi - lo < MIN_EXTENT_M:
            raise ConfigEditError(
                "workspace",
                f"the box is only {(hi - lo) * 100:.1f} cm along {axis} (needs >= {MIN_EXTENT_M * 100:.0f} cm): "
                f"mark points farther apart along {axis} or add a margin",
            )
    return Box([round(float(v), DECIMALS) for v in low], [round(float(v), DECIMALS) for v in high])


def workspace_edits(box: Box) -> dict[str, Any]:
    return {"workspace.low": box.low, "workspace.high": box.high}


def home_edits(joints: Sequence[float]) -> dict[str, Any]:
    q = np.asarray(joints, dtype=np.float64).reshape(-1)
    if q.shape != (7,) or not np.all(np.isfinite(q)):
        raise ConfigEditError("arm.home_joints", f"need 7 finite joint angles (rad), got {list(joints)}")
    return {"arm.home_joints": [round(float(v), DECIMALS) for v in q]}


def inside(box_low: Sequence[float], box_high: Sequence[float], p: Sequence[float]) -> bool:
    a = _point(p)
    return bool(np.all(a >= np.asarray(box_low) - 1e-9) and np.all(a <= np.asarray(box_high) + 1e-9))


@dataclass
class PointLog:
    """The points marked so far (shared by API threads)."""

    points: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, position: Sequence[float]) -> dict[str, Any]:
        p = [round(float(v), 5) for v in _point(position, "the arm position")]
        with self._lock:
            entry = {"index": len(self.points), "position": p, "at": time.time()}
            self.points.append(entry)
            return entry

    def clear(self) -> int:
        with self._lock:
            n = len(self.points)
            self.points.clear()
            return n

    def positions(self) -> list[list[float]]:
        with self._lock:
            return [list(p["position"]) for p in self.points]

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.points]
