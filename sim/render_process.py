"""The sim's render process: renders every sim camera of one SimWorld, like camera hardware would.

Why a process: `mujoco.Renderer.render()` holds the GIL for the whole rasterisation (milliseconds
on llvmpipe), which delayed the daemon's 10 Hz control thread by several ms when the cameras
rendered on threads of the daemon. Here they render in a process of their own: a fresh
interpreter (`python -m sim.render_process`, never a fork of a process that has
threads and GL contexts, and unlike multiprocessing's "spawn" it never re-imports the daemon's
main module); `render_host.RenderHost` is the daemon's side.

The process builds nothing from config: its first message is the world's compiled MjModel
(pickled, so scene extras, textures and offscreen size come along); it keeps its own MjData.
Before each round of renders it copies qpos and mocap poses from the world's `StateBlock` and
runs `mj_forward`, then renders each due camera into its `FrameSlot`. That is all the sim changes
at run time; a change to the parent's MjModel after start (e.g. a geom colour) would not show.
Each camera renders every `period_s` wall seconds (`fps * sim.realtime_factor`); a camera that
falls behind skips frames rather than bursting.

Requests come over a socket pair: ("init", MjModel) -> ("ready", pid) or ("fatal", text); then
("add", CameraSpec) -> ("added", key) once its first frame is in the slot, or ("error", key,
text); ("remove", key) -> ("removed", key); ("stop",). Render errors after that are written into
the camera's slot. The process exits by itself, removing the shared memory, when the socket
reaches EOF or its parent pid changes (the daemon died, even by SIGKILL), checked at least every
`POLL_S`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

# A render process never picks its GL backend from anything but the environment it inherited;
# default to offscreen EGL before mujoco is first imported (FACTS.md: egl or osmesa work here).
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim.render_shm import CameraSpec, FrameSlot, StateBlock  # noqa: E402
from spec.clock import now  # noqa: E402

log = logging.getLogger("sim.render_process")

POLL_S = 0.5  # longest wait between two checks that the daemon is still there


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A renderer with shadows, reflections and skybox off: a few ms per ~100 px frame on llvmpipe
    instead of 140-300 ms with MuJoCo's defaults (FACTS.md)."""
    renderer = mujoco.Renderer(model, height, width)
    flags = renderer.scene.flags
    for flag in (
        mujoco.mjtRndFlag.mjRND_SHADOW,
        mujoco.mjtRndFlag.mjRND_REFLECTION,
        mujoco.mjtRndFlag.mjRND_SKYBOX,
    ):
        flags[flag] = 0
    return renderer


class _Camera:
    def __init__(self, model: mujoco.MjModel, spec: CameraSpec) -> None:
        self.spec = spec
        self.slot = FrameSlot.attach(spec.slot_name, spec.height, spec.width)
        try:
            self.renderer = make_renderer(model, spec.height, spec.width)
        except BaseException:
            self.slot.close()
            raise
        self.image = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
        self.index = spec.first_index
        self.due = 0.0
        self.render_s_total = 0.0
        self.render_count = 0

    def render(self, data: mujoco.MjData) -> None:
        t0 = time.perf_counter()
        self.renderer.update_scene(data, camera=self.spec.cam_id)
        self.renderer.render(out=self.image)
        dt = time.perf_counter() - t0
        if self.index > self.spec.first_index:  # the first frame pays for the GL context and shader compilation
            self.render_s_total += dt
            self.render_count += 1
        capture_ms = 1e3 * self.render_s_total / self.render_count if self.render_count else 0.0
        self.slot.write(self.image, self.index, now(), 1e3 * dt, capture_ms)
        self.index += 1

    def close(self, unlink: bool = False) -> None:
        self.renderer.close()
        self.slot.close(unlink=unlink)


class RenderServer:
    def __init__(self, conn: Connection, model: mujoco.MjModel, state_name: str, parent_pid: int) -> None:
        self.conn = conn
        self.model = model
        self.data = mujoco.MjData(model)
        self.state = StateBlock.attach(state_name)
        self.parent_pid = parent_pid
        self.cameras: dict[str, _Camera] = {}
        self._state_seq = -1

    def _refresh_state(self) -> None:
        d = self.data
        seq = self.state.read(d.qpos, d.mocap_pos, d.mocap_quat)
        if seq >= 0 and seq != self._state_seq:  # unchanged state: the kinematics are still valid
            mujoco.mj_forward(self.model, d)
            self._state_seq = seq

    def _add(self, spec: CameraSpec) -> None:
        try:
            cam = _Camera(self.model, spec)
        except Exception as exc:
            self.conn.send(("error", spec.key, f"{type(exc).__name__}: {exc}"))
            return
        try:
            self._refresh_state()
            cam.render(self.data)  # the first frame is there before connect() returns
        except Exception as exc:
            cam.close()
            self.conn.send(("error", spec.key, f"{type(exc).__name__}: {exc}"))
            return
        cam.due = time.perf_counter() + spec.period_s
        self.cameras[spec.key] = cam
        self.conn.send(("added", spec.key))

    def _remove(self, key: str) -> None:
        cam = self.cameras.pop(key, None)
        if cam is not None:
            cam.close()
        self.conn.send(("removed", key))

    def _handle(self, msg: tuple) -> bool:
        """Run one request; False for stop."""
        if msg[0] == "add":
            self._add(msg[1])
        elif msg[0] == "remove":
            self._remove(msg[1])
        elif msg[0] == "stop":
            return False
        else:
            log.error("unknown request %r", msg[0])
        return True

    def _parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid

    def run(self) -> bool:
        """Serve until told to stop (True) or the daemon is gone (False)."""
        while True:
            t = time.perf_counter()
            wait = min((c.due for c in self.cameras.values()), default=t + POLL_S) - t
            try:
                if self.conn.poll(min(max(wait, 0.0), POLL_S)):
                    while True:
                        if not self._handle(self.conn.recv()):
                            return True
                        if not self.conn.poll(0):
                            break
            except (EOFError, OSError):
                return False  # the daemon's end of the pipe is closed: it died
            if not self._parent_alive():
                return False
            t = time.perf_counter()
            due = [c for c in self.cameras.values() if c.due <= t]
            if not due:
                continue
            self._refresh_state()
            for cam in due:
                try:
                    cam.render(self.data)
                except Exception as exc:  # keep serving: a later frame may succeed
                    cam.slot.report_error(f"{type(exc).__name__}: {exc}")
                    log.exception("camera %s: render failed", cam.spec.name)
                cam.due += cam.spec.period_s
                late = time.perf_counter() - cam.due
                if late > cam.spec.period_s:
                    cam.due = time.perf_counter()  # fell behind: skip frames rather than burst

    def close(self, unlink: bool) -> None:
        """Free the renderers; `unlink` removes the shared memory (when the daemon cannot)."""
        for cam in self.cameras.values():
            try:
                cam.close(unlink=unlink)
            except Exception:
                log.exception("closing camera %s", cam.spec.name)
        self.cameras.clear()
        self.state.close(unlink=unlink)


INIT_TIMEOUT_S = 60.0


def render_main(conn: Connection, state_name: str, parent_pid: int) -> int:
    """Serve the daemon over `conn`; the process exit code."""
    # Ctrl-C reaches the whole process group: let the daemon decide when its cameras stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="sim-render[%(process)d] %(levelname)s %(message)s")
    try:
        if not conn.poll(INIT_TIMEOUT_S):
            log.error("no model from daemon %d within %.0f s", parent_pid, INIT_TIMEOUT_S)
            return 1
        kind, model = conn.recv()
        if kind != "init":
            raise ValueError(f"first request must be 'init', got {kind!r}")
        server = RenderServer(conn, model, state_name, parent_pid)
    except (EOFError, OSError):
        return 1  # the daemon went away during start-up
    except Exception as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", os.getpid()))
    stopped = False
    try:
        stopped = server.run()
    except BaseException as exc:
        for cam in server.cameras.values():
            cam.slot.report_error(f"render process failed: {type(exc).__name__}: {exc}")
        log.exception("render process failed")
        server.close(unlink=False)
        return 1
    if not stopped:
        log.info("daemon %d is gone: exiting and removing the shared memory", parent_pid)
    server.close(unlink=not stopped)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The sim's render process (started by RenderHost).")
    ap.add_argument("--fd", type=int, required=True, help="inherited socket to the daemon")
    ap.add_argument("--state", required=True, help="shared-memory name of the world state block")
    ap.add_argument("--parent-pid", type=int, required=True)
    args = ap.parse_args(argv)
    return render_main(Connection(args.fd), args.state, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
