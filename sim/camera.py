"""`Camera` for the sim: a MuJoCo camera rendered offscreen by the world's render process.

Real cameras deliver frames from their own hardware; so do these. Rendering holds the GIL for the
whole rasterisation, so it runs in a separate process (render_process.py, one per SimWorld for
all its cameras) and never delays the daemon's control thread. This class has no thread: `read()`
copies the newest complete frame out of shared memory (tens of microseconds at sim resolutions)
and returns the same `Frame` object again while no newer one exists. Shadows, reflections,
skybox and multisampling are off: a ~100 px frame takes a few milliseconds on llvmpipe.

The frame rate is `cam_cfg.fps` in simulated time, i.e. `fps * sim.realtime_factor` frames per
wall second, so frames stay as fresh relative to control ticks when the sim runs faster.
`Frame.timestamp` is `spec.clock.now()` in the render process when the frame was done
(CLOCK_MONOTONIC is system-wide, so it compares with the daemon's clock).
"""

from __future__ import annotations

import mujoco

from camera.base import Camera, CameraStats, Frame
from sim.render_host import RenderHost
from sim.render_shm import FrameSlot
from sim.world import SimWorld
from spec.camera_config import CameraConfig

_MAX_ERRORS = 20


class SimCamera(Camera):
    def __init__(self, world: SimWorld, cam_cfg: CameraConfig) -> None:
        self.world = world
        self.cfg = cam_cfg
        self.name = cam_cfg.name
        self.camera_name = cam_cfg.sim_camera or cam_cfg.name
        cam_id = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name)
        if cam_id < 0:
            names = [world.model.camera(i).name for i in range(world.model.ncam)]
            raise ValueError(
                f"camera {self.name!r}: no MuJoCo camera named {self.camera_name!r} (have {names})"
            )
        self._cam_id = cam_id
        self.period = 1.0 / (cam_cfg.fps * world.realtime_factor)
        self._latest: Frame | None = None
        self._stats = CameraStats()
        self._host: RenderHost | None = None
        self._key: str | None = None
        self._slot: FrameSlot | None = None
        self._frames_before = 0  # frames of earlier connections, so stats.frames only grows
        self._errors_seen = 0
        self._dead_pid: int | None = None  # the dead render process already reported
        self._restarts_seen = 0

    @property
    def connected(self) -> bool:
        return self._slot is not None and self._host is not None and not self._host.closed

    def connect(self, timeout: float = 30.0) -> None:
        """Start (or join) the world's render process; returns once this camera's first frame is
        there. Raises RenderProcessError (a RuntimeError naming MUJOCO_GL) if it cannot render."""
        if self.connected:
            return
        self._detach()
        host = self.world.render_host(timeout)
        try:
            key, slot = host.add_camera(
                self.name, self._cam_id, self.cfg.height, self.cfg.width, self.period, timeout
            )
        except BaseException:
            if host.cameras == 0:
                host.close()  # started for this camera only
            raise
        self._host, self._key, self._slot = host, key, slot
        self._errors_seen = 0
        self._dead_pid = None
        self._restarts_seen = host.restarts
        self._latest = slot.read(None)

    def read(self) -> Frame | None:
        slot = self._slot
        if slot is None:
            return self._latest  # closed: the last frame stays readable
        frame = slot.read(self._latest)
        self._latest = frame
        return frame

    def close(self, timeout: float = 5.0) -> None:
        """Stop rendering this camera (the last one of a world stops its render process)."""
        host, key = self._host, self._key
        self._refresh_stats()
        self._detach()
        if host is not None and key is not None:
            host.remove_camera(key, timeout)

    def reset(self) -> None:
        """Restart the world's render process (it serves every sim camera of the world, as one
        USB hub would): frames come back once the new process has rendered them."""
        if self._host is not None:
            self._host.reset()

    def _detach(self) -> None:
        if self._slot is not None:
            self._frames_before = self._stats.frames
        self._host = self._key = self._slot = None

    @property
    def stats(self) -> CameraStats:
        self._refresh_stats()
        return self._stats

    @property
    def render_pid(self) -> int | None:
        """The render process serving this camera (None when not connected)."""
        return self._host.pid if self.connected and self._host is not None else None

    def _refresh_stats(self) -> None:
        slot, host, st = self._slot, self._host, self._stats
        if slot is None or host is None:
            return
        frames, capture_ms, errors, text = slot.counters()  # the final ones once the world closed
        st.frames = self._frames_before + frames
        st.capture_ms = capture_ms
        latest = slot.read(self._latest)
        if latest is not None:
            self._latest = latest
            st.last_frame_at = latest.timestamp
        if errors > self._errors_seen:
            more = errors - self._errors_seen - 1
            st.errors.append(text + (f" (and {more} earlier)" if more else ""))
            self._errors_seen = errors
        code, pid = host.exitcode, host.pid
        if code is not None and not host.closed and pid != self._dead_pid:
            st.errors.append(f"sim render process {pid} died (exit code {code}): no new frames until it restarts")
            self._dead_pid = pid
        if host.restarts > self._restarts_seen:
            st.resets += host.restarts - self._restarts_seen
            self._restarts_seen = host.restarts
            st.errors.append(f"sim render process restarted as {pid} (after exit code {host.last_exit})")
        del st.errors[:-_MAX_ERRORS]
