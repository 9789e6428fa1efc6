"""Pinhole camera intrinsics: from a MuJoCo camera (fovy + resolution), a JSON file, or a device.

JSON files use either our names (fx, fy, cx, cy, width, height, dist) or RealSense's
(`rs.intrinsics`: fx, fy, ppx, ppy, width, height, coeffs), so a dump of the device's own
intrinsics can be used as it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist_coeffs: tuple[float, ...] = field(default=(0.0, 0.0, 0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"intrinsics {name} must be a positive number, got {v!r}")
        for name, v, size in (("cx", self.cx, self.width), ("cy", self.cy, self.height)):
            if not (math.isfinite(v) and 0 <= v <= size):
                raise ValueError(f"intrinsics {name}={v!r} must lie inside the {self.width}x{self.height} image")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics size must be positive, got {self.width}x{self.height}")
        if len(self.dist_coeffs) not in (0, 4, 5, 8, 12, 14):
            raise ValueError(f"intrinsics dist must have 0, 4, 5, 8, 12 or 14 values, got {len(self.dist_coeffs)}")

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist(self) -> np.ndarray:
        return np.asarray(self.dist_coeffs, dtype=np.float64)

    @classmethod
    def from_fovy(cls, fovy_deg: float, width: int, height: int) -> Intrinsics:
        """A MuJoCo camera: square pixels, `fovy` the vertical field of view, no distortion.

        MuJoCo's frustum spans the whole image, so the optical axis meets its centre, which is
        pixel (w - 1) / 2 in OpenCV's convention (pixel centres at integer coordinates).
        """
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera delivering a resized image (the lens is unchanged)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            width, height, self.fx * sx, self.fy * sy,
            (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, self.dist_coeffs,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
            "cx": self.cx, "cy": self.cy, "dist": list(self.dist_coeffs),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "intrinsics") -> Intrinsics:
        def get(*names: str) -> Any:
            for n in names:
                if n in d:
                    return d[n]
            raise ValueError(f"{source}: missing {' or '.join(names)}")

        try:
            dist = d.get("dist", d.get("coeffs", []))
            return cls(
                int(get("width")), int(get("height")), float(get("fx")), float(get("fy")),
                float(get("cx", "ppx")), float(get("cy", "ppy")), tuple(float(v) for v in dist),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Intrinsics:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read intrinsics {path}: {exc}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: intrinsics must be a JSON object")
        return cls.from_dict(d, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")


def camera_intrinsics(camera: Any) -> Intrinsics | None:
    """The intrinsics of a live camera object, when it can tell (sim: from the MuJoCo model; a
    driver exposing `intrinsics()` returning an `rs.intrinsics`-like object or dict)."""
    world = getattr(camera, "world", None)
    cam_name = getattr(camera, "camera_name", None)
    cfg = getattr(camera, "cfg", None)
    if world is not None and cam_name is not None and cfg is not None:
        fovy = float(world.model.camera(cam_name).fovy[0])
        return Intrinsics.from_fovy(fovy, cfg.width, cfg.height)
    getter = getattr(camera, "intrinsics", None)
    if callable(getter):
        raw = getter()
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raw = {k: getattr(raw, k) for k in ("width", "height", "fx", "fy", "ppx", "ppy", "coeffs")}
        return Intrinsics.from_dict(raw, f"camera {getattr(camera, 'name', '?')} intrinsics")
    return None
