"""SpaceMouse teleop: a thread reads /dev/hidrawN and keeps the newest state; the tick maps it.

Reading hidraw directly (no hidapi) keeps one code path for real devices and for tests, which feed
reports through a FIFO given as `path`. hidraw delivers exactly one report per read().

A missing, unreadable or unplugged device never raises into the daemon: the status says what is
wrong (logged once per change) and the thread tries again every `retry_s`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_server.teleop.hid import HidDevice, ReportError, decode_report, find_spacemice
from robot_server.teleop.mapping import (
    EventQueue,
    TeleopEvent,
    motion_action,
    normalise_axes,
    pressed_bits,
    spacemouse_motion,
)
from spec.clock import now
from spec.config import SpaceMouseConfig
from spec.step import ActionSpace

log = logging.getLogger(__name__)

READ_SIZE = 64  # larger than any SpaceMouse report


@dataclass(frozen=True)
class SpaceMouseState:
    axes: np.ndarray  # (6,) tx ty tz rx ry rz in [-1, 1], after dead zone and scale (device frame)
    raw: tuple[int, ...]  # (6,) last raw counts
    buttons: int  # bitmask of buttons held
    timestamp: float | None  # now() of the last report
    connected: bool


class SpaceMouseReader:
    """Implements the Teleop protocol (robot_server.teleop.Teleop) for a 3Dconnexion SpaceMouse."""

    name = "spacemouse"

    def __init__(
        self,
        cfg: SpaceMouseConfig,
        space: ActionSpace,
        *,
        clock: Callable[[], float] = now,
        sysfs: Path = Path("/sys/class/hidraw"),
        dev: Path = Path("/dev"),
    ) -> None:
        self.cfg = cfg
        self.space = space
        self._clock = clock
        self._sysfs = sysfs
        self._dev = dev
        self._lock = threading.Lock()
        self._raw = [0] * 6
        self._axes = np.zeros(6)
        self._buttons = 0
        self._last_report: float | None = None
        self._last_active = -np.inf
        self._gripper_closed = False
        self._events = EventQueue()
        self._fd: int | None = None
        self._device: HidDevice | None = None
        self._state = "disabled" if not cfg.enabled else "stopped"
        self._message = "spacemouse: disabled" if not cfg.enabled else "spacemouse: not started"
        self.reports = 0
        self.bad_reports = 0
        self.connects = 0
        self._times: collections.deque[float] = collections.deque(maxlen=200)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if not self.cfg.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spacemouse", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if not self.cfg.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._disconnect("spacemouse: stopped", state="stopped", log_it=False)

    # --- Teleop protocol --------------------------------------------------------------------

    def action(self) -> np.ndarray:
        with self._lock:
            axes, closed = self._axes.copy(), self._gripper_closed
        motion = spacemouse_motion(axes)
        if not self.space.cfg.yaw:
            motion[3] = 0.0
        return motion_action(motion, closed, self.space)

    def is_active(self) -> bool:
        """Moving the cap or pressing a button, or having done so within `takeover_release_s`."""
        with self._lock:
            if np.any(self._axes != 0.0) or self._buttons:
                return True
            return self._clock() - self._last_active <= self.cfg.takeover_release_s

    def poll_events(self) -> list[TeleopEvent]:
        """Button presses since the last poll: gripper_toggle (left), demo_toggle (right)."""
        return self._events.drain()

    def sync_gripper(self, closed: bool) -> None:
        """Start toggling from the arm's real gripper state (call when taking over)."""
        with self._lock:
            self._gripper_closed = bool(closed)

    def fault(self) -> str | None:
        """Why the SpaceMouse cannot be read (not found, unplugged, a reader error), or None."""
        if not self.cfg.enabled:
            return None
        with self._lock:
            return None if self._fd is not None else self._message

    def state(self) -> SpaceMouseState:
        with self._lock:
            return SpaceMouseState(
                axes=self._axes.copy(),
                raw=tuple(self._raw),
                buttons=self._buttons,
                timestamp=self._last_report,
                connected=self._fd is not None,
            )

    def status(self) -> dict[str, object]:
        with self._lock:
            t = self._clock()
            times = list(self._times)
            rate = (
                (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            )
            return {
                "state": self._state,
                "message": self._message,
                "device": None if self._device is None else self._device.path,
                "model": None if self._device is None else self._device.name,
                "reports": self.reports,
                "bad_reports": self.bad_reports,
                "connects": self.connects,
                "report_rate_hz": round(rate, 1),
                "age_s": None if self._last_report is None else round(t - self._last_report, 3),
                "axes": [round(float(a), 3) for a in self._axes],
                "buttons": self._buttons,
                "gripper_closed": self._gripper_closed,
                "active": bool(np.any(self._axes != 0.0) or self._buttons)
                or t - self._last_active <= self.cfg.takeover_release_s,
            }

    # --- reports ----------------------------------------------------------------------------

    def handle_report(self, data: bytes, t: float | None = None) -> bool:
        """Apply one raw report to the state; False (and counted) if it was malformed."""
        t = self._clock() if t is None else t
        try:
            report = decode_report(data)
        except ReportError as exc:
            self.bad_reports += 1
            if self.bad_reports <= 3:
                log.warning("spacemouse: ignoring a bad report: %s", exc)
            return False
        if report is None:
            return True
        cfg = self.cfg
        with self._lock:
            self.reports += 1
            self._times.append(t)
            self._last_report = t
            if report.translation is not None:
                self._raw[:3] = report.translation
            if report.rotation is not None:
                self._raw[3:] = report.rotation
            if report.translation is not None or report.rotation is not None:
                self._axes = normalise_axes(self._raw, cfg.full_scale, cfg.deadzone, cfg.scale)
            if report.buttons is not None:
                for bit in pressed_bits(self._buttons, report.buttons):
                    if bit == cfg.gripper_button:
                        self._gripper_closed = not self._gripper_closed
                        self._events.put(TeleopEvent("gripper_toggle", self.name, t))
                    elif bit == cfg.demo_button:
                        self._events.put(TeleopEvent("demo_toggle", self.name, t))
                self._buttons = report.buttons
            if np.any(self._axes != 0.0) or self._buttons:
                self._last_active = t
        return True

    # --- reader thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._fd is None:
                    if not self._connect():
                        self._stop.wait(self.cfg.retry_s)
                    continue
                self._read_once()
            except Exception as exc:  # nothing may escape into the daemon
                self._disconnect(f"spacemouse: reader error ({type(exc).__name__}: {exc}); retrying", "error")
                self._stop.wait(self.cfg.retry_s)

    def _candidates(self) -> tuple[list[HidDevice], str]:
        if self.cfg.path:
            p = Path(self.cfg.path)
            if not p.exists():
                return [], f"spacemouse: not found ({self.cfg.path} does not exist)"
            return [HidDevice(self.cfg.path, 0, 0, p.name)], ""
        found = find_spacemice(self._sysfs, self._dev)
        return found, f"spacemouse: not found (looked for 3Dconnexion on {self._dev}/hidraw*)"

    def _connect(self) -> bool:
        candidates, why = self._candidates()
        if not candidates:
            self._set_status("searching", why)
            return False
        problems = []
        for device in candidates:
            try:
                fd = os.open(device.path, os.O_RDONLY | os.O_NONBLOCK)
            except PermissionError:
                problems.append(
                    f"cannot open {device.path}: permission denied (give your user read access to "
                    "3Dconnexion hidraw devices with a udev rule)"
                )
                continue
            except OSError as exc:
                problems.append(f"cannot open {device.path}: {exc.strerror}")
                continue
            with self._lock:
                self._fd, self._device = fd, device
            self.connects += 1
            self._set_status("connected", f"spacemouse: connected ({device.path}, {device.name})")
            return True
        self._set_status("error", "spacemouse: " + "; ".join(problems))
        return False

    def _read_once(self) -> None:
        fd = self._fd
        assert fd is not None
        ready, _, _ = select.select([fd], [], [], 1.0 / self.cfg.rate_hz)
        if not ready:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # ENODEV / EIO when the device is unplugged
            why = "unplugged" if exc.errno in (errno.ENODEV, errno.EIO) else exc.strerror
            self._lost(why)
            return
        if not data:  # end of file: the writer of a FIFO went away
            self._lost("device closed")
            return
        self.handle_report(data)

    def _lost(self, why: str) -> None:
        path = self._device.path if self._device else self.cfg.path
        self._disconnect(
            f"spacemouse: disconnected from {path} ({why}); retrying every {self.cfg.retry_s:g} s",
            "disconnected",
        )
        self._stop.wait(self.cfg.retry_s)

    def _disconnect(self, message: str, state: str, log_it: bool = True) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            self._device = None
            # Without a device nothing is held: the arm must not keep moving on a stale deflection.
            self._raw = [0] * 6
            self._axes = np.zeros(6)
            self._buttons = 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._set_status(state, message, log_it=log_it)

    def _set_status(self, state: str, message: str, log_it: bool = True) -> None:
        changed = message != self._message
        self._state, self._message = state, message
        if changed and log_it:
            (log.info if state == "connected" else log.warning)("%s", message)
