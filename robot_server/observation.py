"""One tick's observation: arm state + the newest frame of each camera, cropped and resized.

A frame older than `max_frame_age_ticks` periods is rejected: acting on a frozen camera is worse
than holding still, and storing it would teach the learner from a stale view. What a session does
about a stale tick is robot_server.stale's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from arm.base import ArmState
from camera.base import Camera
from camera.crop import view_of
from spec.camera_config import CameraConfig
from spec.clock import now
from spec.step import ActionSpace


@dataclass
class Observation:
    data: dict[str, np.ndarray]  # "obs/<camera>", "obs/proprio"[, "obs/state"]
    max_age_s: float


@dataclass(frozen=True)
class Stale:
    """Why a tick has no observation: the cameras without a fresh frame (the ones to reset)."""

    cameras: tuple[str, ...]
    reason: str


class Observer:
    def __init__(
        self,
        cameras: Mapping[str, Camera],
        camera_cfgs: list[CameraConfig],
        action_space: ActionSpace,
        max_age_s: float,
        state_source: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.cameras = cameras
        self.cfgs = {c.name: c for c in camera_cfgs}
        self.action_space = action_space
        self.max_age_s = max_age_s
        self.state_source = state_source

    def observe(self, state: ArmState) -> tuple[Observation | None, Stale | None]:
        """The observation, or (None, which cameras are stale and why) when one has no fresh frame."""
        t = now()
        data: dict[str, np.ndarray] = {}
        worst = 0.0
        stale: dict[str, str] = {}
        for name, cam in self.cameras.items():
            frame = cam.read()
            if frame is None:
                stale[name] = f"camera {name}: no frame yet"
                continue
            age = t - frame.timestamp
            worst = max(worst, age)
            if age > self.max_age_s:
                stale[name] = f"camera {name}: newest frame is {age * 1e3:.0f} ms old"
            elif not stale:  # cropping is wasted work once the tick has no observation
                data[f"obs/{name}"] = view_of(frame.image, self.cfgs[name])
        if stale:
            return None, Stale(tuple(stale), "; ".join(stale.values()))
        data["obs/proprio"] = self.action_space.proprio(state)
        if self.state_source is not None:
            data["obs/state"] = np.asarray(self.state_source(), dtype=np.float32)
        return Observation(data=data, max_age_s=worst), None
