"""Camera crop rectangles: parse and check one against the camera's full frame, draw a preview.

The policy sees `crop` resized to `output`; a crop whose aspect ratio differs from the output's is
allowed (it is stretched) but reported, since the page keeps the ratio and a CLI user may not mean it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from calibration.config_file import ConfigEditError
from camera.crop import crop_resize
from spec.camera_config import CameraConfig, CropRect

ASPECT_TOLERANCE = 0.02  # relative difference of w/h ratios reported as a stretch


def parse_rect(text: str) -> dict[str, int]:
    """`"x,y,w,h"` in full-resolution pixels."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ConfigEditError("rect", f"expected x,y,w,h (4 integers), got {text!r}")
    out: dict[str, int] = {}
    for name, raw in zip("xywh", parts, strict=True):
        try:
            out[name] = int(raw)
        except ValueError:
            raise ConfigEditError(f"rect.{name}", f"must be an integer number of pixels, got {raw!r}") from None
    return out


def check_crop(cam: CameraConfig, rect: dict[str, Any]) -> CropRect:
    """The rectangle as a CropRect if it lies inside the camera's full frame, else an error that
    names the bad value."""
    field = f"cameras.{cam.name}.crop"
    vals: dict[str, int] = {}
    for k in "xywh":
        v = rect.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
            raise ConfigEditError(f"{field}.{k}", f"must be an integer number of pixels, got {v!r}")
        vals[k] = int(v)
    x, y, w, h = vals["x"], vals["y"], vals["w"], vals["h"]
    for k, v in (("x", x), ("y", y)):
        if v < 0:
            raise ConfigEditError(f"{field}.{k}", f"must be >= 0, got {v}")
    for k, v in (("w", w), ("h", h)):
        if v <= 0:
            raise ConfigEditError(f"{field}.{k}", f"must be > 0, got {v}")
    if x + w > cam.width:
        raise ConfigEditError(
            f"{field}.{'w' if x < cam.width else 'x'}",
            f"x + w = {x} + {w} = {x + w} is beyond the camera's full width {cam.width}",
        )
    if y + h > cam.height:
        raise ConfigEditError(
            f"{field}.{'h' if y < cam.height else 'y'}",
            f"y + h = {y} + {h} = {y + h} is beyond the camera's full height {cam.height}",
        )
    return CropRect(x=x, y=y, w=w, h=h)


def aspect_note(cam: CameraConfig, crop: CropRect) -> str | None:
    want = cam.output.width / cam.output.height
    got = crop.w / crop.h
    if abs(got / want - 1.0) <= ASPECT_TOLERANCE:
        return None
    return (
        f"the crop's aspect ratio {got:.3f} (w/h) differs from the output's {want:.3f} "
        f"({cam.output.width}x{cam.output.height}): the policy view will be stretched"
    )


def crop_edits(cam: CameraConfig, crop: CropRect) -> dict[str, Any]:
    return {f"cameras.{cam.name}.crop": {"x": crop.x, "y": crop.y, "w": crop.w, "h": crop.h}}


def preview(image: np.ndarray, cam: CameraConfig, crop: CropRect) -> np.ndarray:
    """The full RGB frame with the rectangle drawn, and beside it the policy's view (crop resized
    to `output`, scaled up to the frame's height) so the operator sees what the policy will see."""
    if image.ndim != 3 or image.shape[:2] != (cam.height, cam.width):
        raise ValueError(
            f"the image is {image.shape[1]}x{image.shape[0]} but camera {cam.name!r} is "
            f"{cam.width}x{cam.height} at full resolution"
        )
    full = np.ascontiguousarray(image.copy())
    thick = max(1, round(min(cam.width, cam.height) / 160))
    cv2.rectangle(full, (crop.x, crop.y), (crop.x + crop.w - 1, crop.y + crop.h - 1), (255, 40, 40), thick)
    view = crop_resize(image, crop, cam.output)
    scale = cam.height / view.shape[0]
    big = cv2.resize(view, (max(1, round(view.shape[1] * scale)), cam.height), interpolation=cv2.INTER_NEAREST)
    gap = np.full((cam.height, max(2, thick * 2), 3), 255, dtype=np.uint8)
    return np.hstack([full, gap, big])


def save_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def load_image(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read an image from {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the server's snapshot is not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
