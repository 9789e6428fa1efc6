"""Hand-eye samples on disk: one full-resolution image plus the arm pose it was taken at.

    <dir>/0000.png    the camera's full frame (RGB saved as PNG, lossless)
    <dir>/0000.json   {"camera", "position", "quaternion" (w x y z), "joints", timestamps, ...}
    <dir>/intrinsics.json   when the camera could tell its intrinsics

Written by `POST /calibration/handeye/samples` on the robot and by `calibrate handeye-sim
--save-samples`; read by `calibrate handeye`. Samples are only ever added, never overwritten.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calibration.intrinsics import Intrinsics

INTRINSICS_FILE = "intrinsics.json"


@dataclass
class Sample:
    index: int
    image_path: Path
    position: list[float]
    quaternion: list[float]  # w x y z
    meta: dict[str, Any] = field(default_factory=dict)

    def image(self) -> np.ndarray:
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read sample image {self.image_path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _next_index(directory: Path) -> int:
    # Images count too: an image left without its JSON (a crash mid-save) keeps its number.
    used = [int(p.stem) for p in directory.iterdir() if p.suffix in (".json", ".png") and p.stem.isdigit()]
    return max(used, default=-1) + 1


def save_sample(
    directory: str | Path,
    image: np.ndarray,
    position: Any,
    quaternion: Any,
    meta: dict[str, Any] | None = None,
    intrinsics: Intrinsics | None = None,
) -> Sample:
    """Add one sample to `directory` (created if needed); the JSON is written last, so a sample
    without its JSON (a crash mid-save) is simply not a sample."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pos = [float(v) for v in np.asarray(position, dtype=np.float64).reshape(-1)]
    quat = [float(v) for v in np.asarray(quaternion, dtype=np.float64).reshape(-1)]
    if len(pos) != 3 or len(quat) != 4 or not np.all(np.isfinite(pos + quat)):
        raise ValueError(f"a sample needs a finite position (3) and quaternion (4), got {pos} {quat}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a sample image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    if intrinsics is not None and not (d / INTRINSICS_FILE).exists():
        intrinsics.save(d / INTRINSICS_FILE)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    while True:
        index = _next_index(d)
        img_path = d / f"{index:04d}.png"
        try:
            with open(img_path, "xb") as f:  # "x": two savers at once never share a number
                f.write(png.tobytes())
            break
        except FileExistsError:
            continue
    body = {
        "index": index,
        "position": pos,
        "quaternion": quat,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(meta or {}),
    }
    tmp = d / f".{index:04d}.json.tmp"
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, d / f"{index:04d}.json")
    return Sample(index, img_path, pos, quat, body)


def load_samples(directory: str | Path) -> list[Sample]:
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"no sample directory {d}")
    out = []
    for js in sorted(d.glob("[0-9]*.json")):
        try:
            body = json.loads(js.read_text())
            sample = Sample(int(js.stem), d / f"{js.stem}.png", list(body["position"]), list(body["quaternion"]), body)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"bad sample file {js}: {exc}") from None
        if not sample.image_path.is_file():
            raise ValueError(f"sample {js} has no image {sample.image_path.name}")
        out.append(sample)
    return out


def sample_intrinsics(directory: str | Path) -> Intrinsics | None:
    p = Path(directory) / INTRINSICS_FILE
    return Intrinsics.load(p) if p.is_file() else None
