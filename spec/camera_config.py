"""Camera configuration: one entry per camera, the same shape for real and simulated devices."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CropRect(BaseModel):
    """A rectangle in full-resolution pixels: x, y of the top-left corner, then width and height."""

    model_config = ConfigDict(extra="forbid")
    x: int = Field(0, ge=0)
    y: int = Field(0, ge=0)
    w: int = Field(..., gt=0)
    h: int = Field(..., gt=0)


class OutputSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(100, gt=0, le=1024)
    height: int = Field(100, gt=0, le=1024)


class Extrinsics(BaseModel):
    """The camera's pose from hand-eye calibration (`robot-server calibrate handeye`), OpenCV camera
    axes (x right, y down, z forward): in the gripper (TCP) frame for a camera on the hand, in the
    robot base frame for a fixed one."""

    model_config = ConfigDict(extra="forbid")
    frame: Literal["gripper", "base"]
    position: list[float] = Field(..., min_length=3, max_length=3, description="m")
    quaternion: list[float] = Field(..., min_length=4, max_length=4, description="w x y z, unit")
    reprojection_px: float | None = Field(None, ge=0, description="RMS error of the calibration")
    samples: int | None = Field(None, ge=1)
    calibrated_at: str | None = None

    @model_validator(mode="after")
    def _valid_pose(self) -> Extrinsics:
        if not all(math.isfinite(v) for v in [*self.position, *self.quaternion]):
            raise ValueError("position and quaternion must be finite")
        if math.hypot(*self.position) > 5.0:
            raise ValueError(f"position {self.position} is more than 5 m from the frame origin")
        norm = math.sqrt(sum(v * v for v in self.quaternion))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"quaternion {self.quaternion} is not unit length (norm {norm:.5f})")
        return self


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_]{0,31}$", description="also the store array name")
    backend: Literal["sim", "realsense"] = "sim"
    serial: str | None = Field(None, description="RealSense serial number")
    playback: str | None = Field(None, description="RealSense recording (.db3) to play instead of a device")
    sim_camera: str | None = Field(None, description="MuJoCo camera name; defaults to `name`")
    width: int = Field(640, gt=0, le=4096)
    height: int = Field(480, gt=0, le=4096)
    fps: int = Field(30, gt=0, le=120)
    crop: CropRect | None = Field(None, description="None = the whole frame")
    output: OutputSize = Field(default_factory=OutputSize)
    reset_after_s: float = Field(2.0, gt=0, description="hardware-reset and reopen after this long without frames")
    extrinsics: Extrinsics | None = Field(None, description="pose from hand-eye calibration; None = not calibrated")

    @model_validator(mode="after")
    def _crop_inside(self) -> CameraConfig:
        c = self.crop
        if c is not None and (c.x + c.w > self.width or c.y + c.h > self.height):
            raise ValueError(
                f"crop {c.x},{c.y} {c.w}x{c.h} does not fit in the {self.width}x{self.height} frame"
            )
        if self.backend == "realsense" and not (self.serial or self.playback):
            raise ValueError("a realsense camera needs `serial` (or `playback`)")
        return self

    @property
    def crop_rect(self) -> CropRect:
        return self.crop or CropRect(x=0, y=0, w=self.width, h=self.height)
