"""The camera interface every device implements, real or simulated."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import numpy as np

from spec.clock import now


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # H x W x 3 uint8 RGB at the camera's full resolution
    timestamp: float  # host monotonic time the frame arrived (spec.clock.now)
    index: int  # frame counter since connect
    hw_timestamp_ms: float | None = None  # device clock, when the device has one


@dataclass
class CameraStats:
    frames: int = 0
    resets: int = 0
    last_frame_at: float | None = None
    capture_ms: float = 0.0  # mean time to produce a frame (render cost in sim)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "resets": self.resets,
            "age_s": None if self.last_frame_at is None else round(now() - self.last_frame_at, 4),
            "capture_ms": round(self.capture_ms, 3),
            "last_error": self.errors[-1] if self.errors else None,
        }


class Camera(abc.ABC):
    """A camera that delivers frames on its own thread; `read()` returns the newest without waiting."""

    name: str

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The newest frame, or None if none has arrived yet. Never blocks."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def reset(self) -> None:
        """Restart the device (a camera whose frames stopped) and return at once, without waiting
        for it: the caller sees frames come back through `read()`. Counted in `stats.resets`."""

    @property
    @abc.abstractmethod
    def stats(self) -> CameraStats: ...

    def wait_for_frame(self, timeout: float = 10.0) -> Frame:
        """Block until a first frame exists (start-up only, never inside the tick)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.read()
            if frame is not None:
                return frame
            time.sleep(0.01)
        raise TimeoutError(f"camera {self.name!r}: no frame within {timeout:.1f} s")
