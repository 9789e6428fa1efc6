"""The daemon's side of the sim render process (see render_process.py): start it, add and remove
cameras, stop it. One per SimWorld, created by `SimWorld.render_host()`.

Nothing here runs per frame: the world publishes its state with `publish()` (a few microseconds),
cameras read their `FrameSlot` directly. Requests to the process are serialised by a lock and
every wait has a timeout; a process that does not stop is terminated, then killed.

A process that dies (a GL crash, the OOM killer, a stray `kill`) is restarted by a watchdog
thread, as a real camera driver reopens a device (a hung process never dies by itself:
`reset()` kills it, and the same restart follows): the new process attaches to the same shared
memory and re-adds every camera, continuing its frame numbering, so readers never reconnect.
Until its first frame the loop sees stale frames and holds the arm. Restarts are counted
(`restarts`, and in each camera's `stats.resets`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import mujoco

from sim.render_shm import CameraSpec, FrameSlot, StateBlock

log = logging.getLogger(__name__)

# Hosts still running at interpreter exit stop their process (it would also notice the exit
# within render_process.POLL_S and leave by itself).
_LIVE: weakref.WeakSet[RenderHost] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for host in list(_LIVE):
        host.close(timeout=2.0)


WATCH_S = 0.25  # how often the watchdog checks that the process is alive
RESTART_TIMEOUT_S = 30.0  # for a restarted process to load the model and render each camera
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)  # between failed restarts (the last one repeats)


class RenderProcessError(RuntimeError):
    """The render process could not start, or could not render a camera."""


def _gl_hint() -> str:
    return (
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}; offscreen rendering needs EGL "
        "(Debian libegl1 libegl-mesa0 libgl1-mesa-dri) or MUJOCO_GL=osmesa (libosmesa6)"
    )


class RenderHost:
    def __init__(self, model: mujoco.MjModel) -> None:
        """Creates the state block only; `start()` launches the process."""
        self.model = model
        self.state = StateBlock.create(model.nq, model.nmocap)
        self._state_lock = threading.Lock()  # publish() vs close(): the block is never written closed
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._slots: dict[str, FrameSlot] = {}
        self._specs: dict[str, CameraSpec] = {}  # what a restarted process must render again
        self._keys = itertools.count()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self.closed = False
        self.restarts = 0  # processes restarted after one died
        self.last_exit: int | None = None  # exit code of the last process that died
        _LIVE.add(self)

    # --- state ------------------------------------------------------------------------------------
    def publish(self, data: mujoco.MjData) -> None:
        """Hand the world's state to the renderer (the world calls this with its lock held)."""
        with self._state_lock:
            if not self.closed:
                self.state.write(data.qpos, data.mocap_pos, data.mocap_quat)

    # --- process ----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def exitcode(self) -> int | None:
        """None while the process runs (or before it started); negative: killed by that signal."""
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 60.0) -> None:
        """Launch the process and wait until it has loaded the model (idempotent)."""
        with self._lock:
            if self.closed:
                raise RenderProcessError("this render host was closed")
            if self._proc is not None:
                return
            try:
                self._spawn_locked(timeout)
            except BaseException:
                self._close_locked(timeout=2.0)
                raise
            threading.Thread(target=self._watch, name="sim-render-watchdog", daemon=True).start()

    def _spawn_locked(self, timeout: float) -> None:
        """Start a process and wait for its "ready"; on failure the new process is stopped."""
        parent_conn, child_conn = multiprocessing.Pipe()
        # Run from the directory this `sim` package was imported from: `-m` puts the cwd first on
        # sys.path, so the child imports the same code whatever the daemon's cwd is.
        root = Path(__file__).resolve().parents[1]
        cmd = [
            sys.executable, "-m", "sim.render_process",
            "--fd", str(child_conn.fileno()),
            "--state", self.state.name,
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        # Mesa's llvmpipe rasterises on one thread per core by default; the sim's small frames
        # are as fast on the calling thread alone, and rendering then never takes both cores
        # away from the control thread at once (a GPU driver ignores this).
        env = {"LP_NUM_THREADS": "0", **os.environ}
        try:
            proc = subprocess.Popen(
                cmd, pass_fds=(child_conn.fileno(),), stdin=subprocess.DEVNULL, cwd=root, env=env
            )
        finally:
            child_conn.close()  # only the child holds that end now: its death reads as EOF here
        self._proc, self._conn = proc, parent_conn
        try:
            with contextlib.suppress(OSError):  # died at once: _wait() reports its exit code
                parent_conn.send(("init", self.model))
            self._wait(("ready",), None, timeout)
        except BaseException:
            _stop_process(proc)
            raise
        log.info("sim render process %d started", proc.pid)

    # --- restart ------------------------------------------------------------------------------------
    def _watch(self) -> None:
        failures = 0
        while True:
            pause = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1] if failures else WATCH_S
            if self._stop.wait(pause):
                return
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            with self._lock:
                if self.closed:
                    return
                try:
                    self._restart_locked(proc)
                    failures = 0
                except (RenderProcessError, TimeoutError, OSError) as exc:
                    failures += 1
                    log.error("sim render process: restart %d failed: %s", failures, exc)

    def reset(self) -> None:
        """Kill the process (a hung one too) and let the watchdog start a new one, as after a crash:
        the sim's version of a camera hardware reset. Returns at once; counted in `restarts`."""
        proc = self._proc
        if self.closed or proc is None or proc.poll() is not None:
            return  # closed, never started, or already dead (the watchdog is on it)
        log.warning("sim render process %d: reset requested, killing it", proc.pid)
        with contextlib.suppress(OSError):  # exited meanwhile
            proc.kill()

    def _restart_locked(self, dead: subprocess.Popen) -> None:
        self.last_exit = dead.returncode
        log.error("sim render process %d died (exit code %s): restarting it", dead.pid, dead.returncode)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._spawn_locked(RESTART_TIMEOUT_S)
        assert self._conn is not None
        try:
            for key, spec in self._specs.items():
                # Continue the slot's numbering: readers take a frame as new when its index changes.
                again = dataclasses.replace(spec, first_index=self._slots[key].counters()[0])
                self._conn.send(("add", again))
                reply = self._wait(("added",), key, RESTART_TIMEOUT_S)
                if reply[0] == "error":
                    raise RenderProcessError(f"camera {spec.name!r}: {reply[2]}")
        except BaseException:
            assert self._proc is not None
            _stop_process(self._proc)  # the watchdog sees it dead and tries again
            raise
        self.restarts += 1
        log.info("sim render process restarted (%d restarts): %d cameras", self.restarts, len(self._specs))

    def _wait(self, kinds: tuple[str, ...], key: str | None, timeout: float) -> tuple:
        """The next reply of one of `kinds` (for `key`); raises if the process dies or is silent."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"sim render process {self._proc.pid}: no {kinds[0]!r} within {timeout:.0f} s")
            try:
                ready = self._conn.poll(min(left, 0.2))
                msg = self._conn.recv() if ready else None
            except (EOFError, OSError):
                msg = None
                time.sleep(0.02)  # the process closed its end: give it a moment to exit
            if msg is None:
                if self._proc.poll() is not None:
                    raise RenderProcessError(
                        f"sim render process exited with code {self._proc.returncode} (its stderr says "
                        f"why; {_gl_hint()})"
                    )
                continue
            if msg[0] == "fatal":
                raise RenderProcessError(f"sim render process failed to start: {msg[1]} ({_gl_hint()})")
            if msg[0] in kinds and (key is None or msg[1] == key):
                return msg
            if msg[0] == "error" and msg[1] == key:
                return msg
            log.debug("sim render process: stale reply %r", msg[:2])

    # --- cameras ----------------------------------------------------------------------------------
    def add_camera(
        self, name: str, cam_id: int, height: int, width: int, period_s: float, timeout: float = 30.0
    ) -> tuple[str, FrameSlot]:
        """Render MuJoCo camera `cam_id` every `period_s`; returns once its first frame is in the
        returned slot. Raises RenderProcessError (e.g. no GL) or TimeoutError."""
        slot = FrameSlot.create(height, width)
        key = f"{name}-{next(self._keys)}"
        spec = CameraSpec(key, name, cam_id, height, width, period_s, slot.name)
        with self._lock:
            try:
                if self.closed or self._conn is None:
                    raise RenderProcessError("the sim render process is not running")
                try:
                    self._conn.send(("add", spec))
                except OSError as exc:
                    raise RenderProcessError(f"the sim render process is gone (exit code {self.exitcode})") from exc
                reply = self._wait(("added",), key, timeout)
            except BaseException:
                slot.close()
                raise
            if reply[0] == "error":
                slot.close()
                raise RenderProcessError(f"camera {name!r}: cannot render offscreen: {reply[2]} ({_gl_hint()})")
            self._slots[key] = slot
            self._specs[key] = spec
        return key, slot

    def remove_camera(self, key: str, timeout: float = 5.0) -> None:
        """Stop rendering one camera and remove its slot; the last one stops the process."""
        with self._lock:
            slot = self._slots.pop(key, None)
            self._specs.pop(key, None)
            if slot is None:
                return
            if self._conn is not None and self.exitcode is None:
                try:
                    self._conn.send(("remove", key))
                    self._wait(("removed",), key, timeout)
                except (OSError, RenderProcessError, TimeoutError) as exc:
                    log.warning("sim render process: removing camera %s: %s", key, exc)
            slot.close()
            if not self._slots:
                self._close_locked(timeout)

    @property
    def cameras(self) -> int:
        return len(self._slots)

    # --- lifecycle --------------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop the process (join, then terminate, then kill) and remove all shared memory."""
        with self._lock:
            self._close_locked(timeout)

    def _close_locked(self, timeout: float) -> None:
        if self.closed:
            return
        with self._state_lock:
            self.closed = True
        self._stop.set()
        proc, conn = self._proc, self._conn
        if proc is not None and conn is not None:
            with contextlib.suppress(OSError):  # already gone
                conn.send(("stop",))
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("sim render process %d did not stop within %.1f s: terminating", proc.pid, timeout)
                proc.terminate()
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(2.0)
            conn.close()
        for slot in self._slots.values():
            slot.close()
        self._slots.clear()
        self._specs.clear()
        self.state.close()
        _LIVE.discard(self)


def _stop_process(proc: subprocess.Popen) -> None:
    """Kill a process that failed to start or restart, and reap it."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(2.0)
