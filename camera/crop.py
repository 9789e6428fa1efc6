"""Crop and resize a full frame to the policy's view."""

from __future__ import annotations

import cv2
import numpy as np

from spec.camera_config import CameraConfig, CropRect, OutputSize


def crop_resize(image: np.ndarray, crop: CropRect, out: OutputSize) -> np.ndarray:
    view = image[crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
    if view.shape[0] == out.height and view.shape[1] == out.width:
        return np.ascontiguousarray(view)
    # INTER_AREA is the right filter for shrinking; it averages instead of aliasing.
    interp = cv2.INTER_AREA if view.shape[1] > out.width else cv2.INTER_LINEAR
    return cv2.resize(view, (out.width, out.height), interpolation=interp)


def view_of(image: np.ndarray, cfg: CameraConfig) -> np.ndarray:
    return crop_resize(image, cfg.crop_rect, cfg.output)
