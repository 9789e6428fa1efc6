"""The franky gripper on its own thread, so that gripper commands never block the control tick.

The control thread only writes `desired_closed` and reads `width`; the `franky-gripper` thread
issues the commands (franky `*_async` futures, one at a time) and polls the width, which blocks
~17 ms per read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from spec.clock import now
from spec.config import ArmConfig

GRIPPER_POLL_S = 0.05


class GripperWorker(threading.Thread):
    """Owns the gripper connection: commands go out as futures, the state is polled."""

    def __init__(self, gripper: Any, cfg: ArmConfig, on_error: Callable[[str], None]) -> None:
        super().__init__(name="franky-gripper", daemon=True)
        self.gripper = gripper
        self.speed = cfg.gripper_speed
        self.force = cfg.gripper_force
        self.on_error = on_error  # called on this thread
        self.desired_closed: bool | None = None  # written by the control thread
        self.commanded_closed: bool | None = None
        self.commands = 0
        self.last_result: bool | None = None
        self.width = float(gripper.width)
        self.answered_at: float = now()  # spec.clock.now() of the last width read (the daemon watches it)
        self.max_width = float(gripper.max_width) or 0.08
        self._future: Any = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.monotonic()
            try:
                self._command()
                # Blocks ~17 ms for the next gripper datagram. `width` releases the GIL while it
                # waits; `state` does not (other threads measured stalled for up to 53 ms).
                self.width = float(self.gripper.width)
                self.answered_at = now()
            except Exception as exc:  # a gripper fault must not kill the thread
                self.on_error(f"gripper: {type(exc).__name__}: {exc}")
                self._halt.wait(1.0)
            self._halt.wait(max(0.0, GRIPPER_POLL_S - (time.monotonic() - t0)))

    def _command(self) -> None:
        desired = self.desired_closed
        if desired is None or desired == self.commanded_closed:
            return
        if self._future is not None:
            if not self._future.wait(0.0):
                return  # one command at a time; the newest wish goes out when this one ends
            self._collect()
        if desired:
            # Close on whatever is there: any final width between 0 and fully open counts.
            self._future = self.gripper.grasp_async(0.0, self.speed, self.force, 0.005, self.max_width)
        else:
            self._future = self.gripper.open_async(self.speed)
        self.commanded_closed = desired
        self.commands += 1

    def _collect(self) -> None:
        future, self._future = self._future, None
        try:
            self.last_result = bool(future.get())
        except Exception as exc:
            self.on_error(f"gripper command failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Ask the thread to end (the caller joins it)."""
        self._halt.set()
