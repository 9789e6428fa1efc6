"""JPEG encoding of camera frames, once per new frame and view, shared by every viewer.

The MJPEG streams and snapshots run on the server's event loop, in the control thread's process:
twenty viewers each cropping and encoding the same frame was twenty times the GIL time for one
picture. The newest encoding per (camera, view) is kept and reused until the camera has a newer
frame. Only the event loop calls this, so it needs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from camera.base import Camera
from camera.crop import view_of
from spec.camera_config import CameraConfig

View = Literal["full", "cropped"]
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Jpeg:
    index: int  # the camera's frame index this is an encoding of
    data: bytes


def encode_jpeg(image: np.ndarray, cfg: CameraConfig, view: View, quality: int = JPEG_QUALITY) -> bytes:
    img = view_of(image, cfg) if view == "cropped" else image
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class FrameJpegs:
    """The newest frame of each camera as a JPEG, encoded at most once per frame and view."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, View], Jpeg] = {}
        self.encodes = 0

    def latest(self, camera: Camera, cfg: CameraConfig, view: View) -> Jpeg | None:
        """The camera's newest frame as a JPEG, or None before its first frame."""
        frame = camera.read()
        if frame is None:
            return None
        key = (cfg.name, view)
        cached = self._latest.get(key)
        if cached is not None and cached.index == frame.index:
            return cached
        jpeg = Jpeg(frame.index, encode_jpeg(frame.image, cfg, view))
        self.encodes += 1
        self._latest[key] = jpeg
        return jpeg
