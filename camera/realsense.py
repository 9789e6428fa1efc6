"""Intel RealSense colour camera (pyrealsense2): a live device by serial, or a recording (.db3).

One capture thread per camera keeps only the newest frame; `read()` returns it without waiting.
When no frame has arrived for `cfg.reset_after_s` the thread recovers on its own (a hardware reset
and reopen for a device, a reopen for a recording), counts it in `stats.resets` and records why;
`reset()` asks it to do the same now.
Nothing here ever waits for console input.

Several cameras share one `rs.context` per process (librealsense's advice); tests pass their own.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from camera.base import Camera, CameraStats, Frame
from spec.camera_config import CameraConfig
from spec.clock import now

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # errors kept in stats; older ones are dropped
WAIT_MS = 100  # one capture-thread wait; bounds how late close() and the stall check react
REOPEN_RETRY_S = 1.0  # between attempts to reopen a device that is not (yet) back
FIRST_FRAME_GRACE_S = 5.0  # a real device may take seconds to send its first frame after a reset


class RealSenseError(RuntimeError):
    """A RealSense camera could not be opened; the message names the camera and what was wrong."""


class CameraNotFound(RealSenseError):
    pass


@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    name: str
    firmware: str | None = None
    usb_type: str | None = None
    playback: bool = False


@dataclass
class RealSenseStats(CameraStats):
    serial: str | None = None
    hw_frame_number: int | None = None
    dropped: int = 0  # gaps in the device's frame numbers
    state: str = "closed"  # closed | opening | streaming | recovering

    def as_dict(self) -> dict[str, object]:
        d = super().as_dict()
        d.update(
            serial=self.serial, hw_frame_number=self.hw_frame_number, dropped=self.dropped, state=self.state
        )
        return d


def _rs() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RealSenseError(
            f"pyrealsense2 cannot be imported ({exc}); it needs Debian's libusb-1.0-0 "
            "(scripts/setup.sh installs it)"
        ) from exc
    return rs


_shared_ctx: Any = None
_shared_ctx_lock = threading.Lock()


def shared_context() -> Any:
    """The process-wide rs.context, created on first use."""
    global _shared_ctx
    with _shared_ctx_lock:
        if _shared_ctx is None:
            _shared_ctx = _rs().context()
        return _shared_ctx


def _info(dev: Any, key: Any) -> str | None:
    return dev.get_info(key) if dev.supports(key) else None


def list_devices(context: Any = None) -> list[DeviceInfo]:
    """Connected RealSense devices (an empty list when there is none)."""
    rs = _rs()
    ctx = context if context is not None else shared_context()
    out = []
    for dev in ctx.query_devices():
        out.append(
            DeviceInfo(
                serial=_info(dev, rs.camera_info.serial_number) or "",
                name=_info(dev, rs.camera_info.name) or "",
                firmware=_info(dev, rs.camera_info.firmware_version),
                usb_type=_info(dev, rs.camera_info.usb_type_descriptor),
                playback=bool(dev.is_playback()),
            )
        )
    return out


class RealSenseCamera(Camera):
    """`cfg.playback` set: play that recording; otherwise open the device `cfg.serial`.

    `real_time=False` plays a recording as fast as it is consumed (tests); `loop` repeats it.
    """

    def __init__(
        self, cfg: CameraConfig, *, context: Any = None, real_time: bool = True, loop: bool = True
    ) -> None:
        if not (cfg.serial or cfg.playback):
            raise RealSenseError(f"camera {cfg.name!r}: a realsense camera needs `serial` or `playback`")
        self.cfg = cfg
        self.name = cfg.name
        self._ctx = context
        self._real_time = real_time
        self._loop = loop
        self._stats = RealSenseStats(serial=cfg.serial)
        self._latest: Frame | None = None
        self._pipeline: Any = None
        self._opened_at = 0.0
        self._index = 0
        self._stop = threading.Event()
        self._reset = threading.Event()  # reset() asks the capture thread to recover
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the pipeline between connect/close and the thread

    # --- Camera interface -------------------------------------------------------------------

    @property
    def stats(self) -> RealSenseStats:
        return self._stats

    @property
    def is_playback(self) -> bool:
        return self.cfg.playback is not None

    def connect(self) -> None:
        """Open the stream (raising a clear error if that fails) and start the capture thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def read(self, max_age_s: float | None = None) -> Frame | None:
        """The newest frame (None before the first, or if older than `max_age_s`). Never blocks."""
        frame = self._latest
        if frame is None or (max_age_s is not None and now() - frame.timestamp > max_age_s):
            return None
        return frame

    def age_s(self) -> float | None:
        """Seconds since the newest frame arrived (None before the first)."""
        frame = self._latest
        return None if frame is None else now() - frame.timestamp

    def reset(self) -> None:
        """Hardware-reset and reopen the device (reopen a recording) on the capture thread, which
        owns the pipeline; returns at once."""
        self._reset.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                self._error("capture thread did not stop within 5 s")
            self._thread = None
        self._close_pipeline()
        self._stats.state = "closed"

    # --- opening ----------------------------------------------------------------------------

    def _context(self) -> Any:
        return self._ctx if self._ctx is not None else shared_context()

    def _open(self) -> None:
        rs = _rs()
        cfg = self.cfg
        self._stats.state = "opening"
        config = rs.config()
        if cfg.playback is not None:
            if not os.path.isfile(cfg.playback):
                raise RealSenseError(f"camera {cfg.name!r}: recording {cfg.playback!r} does not exist")
            config.enable_device_from_file(cfg.playback, repeat_playback=self._loop)
        else:
            serials = [d.serial for d in list_devices(self._context())]
            if cfg.serial not in serials:
                connected = ", ".join(serials) if serials else "none"
                raise CameraNotFound(
                    f"camera {cfg.name!r}: RealSense serial {cfg.serial} is not connected "
                    f"(connected: {connected})"
                )
            config.enable_device(cfg.serial)
        config.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        pipeline = rs.pipeline(self._context())
        try:
            # Resolve first so a recording's pace is set before its first frame: started in real
            # time, a quickly recorded file can race past most frames before set_real_time lands.
            # start() reuses the device resolved here.
            dev = config.resolve(rs.pipeline_wrapper(pipeline)).get_device()
            if dev.is_playback():
                dev.as_playback().set_real_time(self._real_time)
            pipeline.start(config)
        except RuntimeError as exc:
            raise RealSenseError(
                f"camera {cfg.name!r}: cannot start {self._wanted()}: {exc}{self._offer()}"
            ) from exc
        serial = _info(dev, rs.camera_info.serial_number)
        with self._lock:
            self._pipeline = pipeline
        self._stats.serial = serial
        self._stats.hw_frame_number = None
        self._opened_at = now()
        self._stats.state = "streaming"
        log.info("camera %s: streaming %s from %s", cfg.name, self._wanted(), self._source())

    def _wanted(self) -> str:
        c = self.cfg
        return f"colour {c.width}x{c.height} RGB8 @ {c.fps} fps"

    def _source(self) -> str:
        return f"recording {self.cfg.playback}" if self.is_playback else f"serial {self.cfg.serial}"

    def _offer(self) -> str:
        """What the device or recording does offer, to make a resolution mismatch obvious."""
        rs = _rs()
        try:
            if self.is_playback:
                # A private context, so the shared one never holds the file open.
                modes = _colour_modes(rs, rs.context().load_device(self.cfg.playback).query_sensors())
            else:
                dev = next(
                    d
                    for d in self._context().query_devices()
                    if _info(d, rs.camera_info.serial_number) == self.cfg.serial
                )
                modes = _colour_modes(rs, dev.query_sensors())
        except Exception:  # only decorates an error message
            return ""
        return f" (colour modes available: {', '.join(sorted(modes))})" if modes else ""

    def _close_pipeline(self) -> None:
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError as exc:
                self._error(f"stopping the stream: {exc}")

    # --- capture thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._reset.is_set():
                    self._reset.clear()
                    self._recover("reset requested")
                    continue
                if self._pipeline is None:
                    try:
                        self._open()
                    except RealSenseError as exc:
                        self._stats.state = "recovering"
                        self._error(str(exc))
                        self._stop.wait(REOPEN_RETRY_S)
                    continue
                self._step()
            except Exception as exc:  # never let the thread die: record, drop the stream, retry
                self._error(f"capture failed: {type(exc).__name__}: {exc}")
                self._close_pipeline()
                self._stop.wait(REOPEN_RETRY_S)

    def _step(self) -> None:
        pipeline = self._pipeline
        ok, frames = pipeline.try_wait_for_frames(WAIT_MS)
        if ok:
            colour = frames.get_color_frame()
            if colour:
                self._deliver(colour)
                return
        since = now() - max(self._opened_at, self._stats.last_frame_at or 0.0)
        if since > self._stall_limit():
            self._recover(f"no frame for {since:.1f} s")

    def _stall_limit(self) -> float:
        limit = self.cfg.reset_after_s
        got_frame_since_open = (self._stats.last_frame_at or 0.0) > self._opened_at
        if not self.is_playback and not got_frame_since_open:
            limit = max(limit, FIRST_FRAME_GRACE_S)
        return limit

    def _deliver(self, colour: Any) -> None:
        t_arrive = now()
        image = np.asanyarray(colour.get_data())
        if image.shape != (self.cfg.height, self.cfg.width, 3):
            self._error(f"frame of shape {image.shape}, expected {(self.cfg.height, self.cfg.width, 3)}")
            return
        image = image.copy()  # the SDK recycles its buffer once `colour` is released
        number = int(colour.get_frame_number())
        last = self._stats.hw_frame_number
        if last is not None and number > last + 1:
            self._stats.dropped += number - last - 1
        frame = Frame(
            image=image, timestamp=t_arrive, index=self._index, hw_timestamp_ms=float(colour.get_timestamp())
        )
        self._index += 1
        self._latest = frame
        s = self._stats
        s.hw_frame_number = number
        s.frames += 1
        s.last_frame_at = t_arrive
        cost_ms = (now() - t_arrive) * 1e3
        s.capture_ms = cost_ms if s.frames == 1 else 0.95 * s.capture_ms + 0.05 * cost_ms
        s.state = "streaming"

    def _recover(self, why: str) -> None:
        s = self._stats
        s.resets += 1
        s.state = "recovering"
        if self.is_playback:
            self._error(f"{why} ({self._source()}): reopening (reset {s.resets})")
            self._close_pipeline()
            return
        self._error(f"{why} ({self._source()}): hardware reset (reset {s.resets})")
        self._close_pipeline()
        rs = _rs()
        try:
            for dev in self._context().query_devices():
                if _info(dev, rs.camera_info.serial_number) == self.cfg.serial:
                    dev.hardware_reset()
                    break
            else:
                self._error(f"serial {self.cfg.serial} is gone; waiting for it to come back")
        except RuntimeError as exc:
            self._error(f"hardware reset of serial {self.cfg.serial} failed: {exc}")
        # The device drops off the bus during a reset; the reopen loop waits for it.
        self._stop.wait(REOPEN_RETRY_S)

    def _error(self, msg: str) -> None:
        errors = self._stats.errors
        if errors and errors[-1] == msg:
            return
        log.warning("camera %s: %s", self.name, msg)
        errors.append(msg)
        del errors[:-MAX_ERRORS]


def _colour_modes(rs: Any, sensors: Any) -> set[str]:
    modes = set()
    for sensor in sensors:
        for p in sensor.get_stream_profiles():
            if p.stream_type() == rs.stream.color and p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                modes.add(f"{v.width()}x{v.height()} {str(p.format()).split('.')[-1]} @ {p.fps()}")
    return modes
