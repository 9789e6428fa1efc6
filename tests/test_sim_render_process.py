"""Sim cameras render in a process of their own: frames follow the sim, two cameras share it,
reads never block or tear, and the process (and its shared memory) never outlives its owner."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from arm.base import ArmTarget
from sim import SimArm, SimCamera, SimWorld
from sim.model import ZONE_A, ZONE_B
from sim.render_host import RenderProcessError
from sim.render_shm import NAME_PREFIX, FrameSlot
from spec.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SIM_YAML = ROOT / "spec" / "configs" / "sim.yaml"
CUBE_RGB = (0.2, 0.35, 0.9)
# Hand reaching forward and to the left seen from behind (+y): TCP near (0.63, 0.23, 0.14).
Q_REACH_LEFT = np.array([0.35, 0.6, 0.0, -1.7, 0.0, 2.3, 0.785])


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(SIM_YAML, env={})


def segments(pid: int | None = None) -> set[str]:
    """Shared-memory segments created by process `pid` (default: this one)."""
    prefix = f"{NAME_PREFIX}{pid or os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def gone(pid: int) -> bool:
    """No such process any more (an unreaped zombie counts as gone: it runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)


def fresh_frame(cam: SimCamera, timeout: float = 10.0):
    """A frame whose render started after this call (the one in progress may predate it)."""
    start = cam.read().index
    wait_until(lambda: cam.read().index >= start + 2, timeout, f"{cam.name}: two more frames")
    return cam.read()


def colour_mask(image: np.ndarray, rgb: tuple[float, float, float], tol: float = 60) -> np.ndarray:
    return np.linalg.norm(image.astype(np.float32) - np.array(rgb) * 255, axis=-1) < tol


@pytest.mark.timeout(60)
def test_frames_follow_the_cube_and_the_process_ends_with_the_world(cfg: Config):
    assert not segments()
    world = SimWorld(cfg)
    cam = SimCamera(world, cfg.camera("front"))
    try:
        cam.connect()
        pid = cam.render_pid
        assert pid is not None and pid != os.getpid() and not gone(pid)
        width = cfg.camera("front").width
        centres = {}
        for zone in (ZONE_A, ZONE_B):
            world.task.place_cube(np.array(zone.center))
            mask = colour_mask(fresh_frame(cam).image, CUBE_RGB)
            assert mask.sum() > 50, f"cube not visible in {zone.name}"
            centres[zone.name] = np.nonzero(mask)[1].mean()
        # The front camera looks back at the arm: zone A (-y) is on the image's left, B on its right.
        assert centres["zone_a"] < width / 2 < centres["zone_b"], centres
        # State stepped by advance() reaches the frames too: the arm reaches to +y (image right).
        before = fresh_frame(cam).image
        arm = SimArm(world)
        arm.connect()
        arm.send_target(ArmTarget(np.array([0.6, 0.2, 0.1]), None, False))
        world.advance(1.5)
        changed = np.abs(fresh_frame(cam).image.astype(int) - before.astype(int)).sum(-1) > 60
        assert changed.sum() > 200 and np.nonzero(changed)[1].mean() > width / 2
        assert len(segments()) == 2  # the world state and this camera's slot
        last = cam.read()
    finally:
        world.close()
    wait_until(lambda: gone(pid), 5, "render process exits with world.close()")
    assert not segments()
    assert cam.read() is last  # the last frame stays readable after close
    assert cam.stats.frames >= last.index + 1


@pytest.mark.timeout(90)
def test_two_cameras_share_one_process_and_mirroring_shows(cfg: Config):
    world = SimWorld(cfg)
    cams = {name: SimCamera(world, cfg.camera(name)) for name in ("wrist", "front")}
    try:
        for cam in cams.values():
            cam.connect()
        pid = cams["wrist"].render_pid
        assert pid is not None and cams["front"].render_pid == pid  # one process for the world
        for name, cam in cams.items():
            c = cfg.camera(name)
            assert cam.read().image.shape == (c.height, c.width, 3)
        before = {name: fresh_frame(cam).image for name, cam in cams.items()}

        world.mirror_joints(Q_REACH_LEFT)
        reach = {name: fresh_frame(cam).image for name, cam in cams.items()}
        changed = np.abs(reach["front"].astype(int) - before["front"].astype(int)).sum(-1) > 60
        assert changed.sum() > 300, "the mirrored arm does not show in the front view"
        # The hand went to +y, which the front camera sees on the right.
        assert np.nonzero(changed)[1].mean() > 0.6 * cfg.camera("front").width
        assert np.abs(reach["wrist"].astype(int) - before["wrist"].astype(int)).mean() > 5

        world.mirror_joints(np.array(cfg.arm.home_joints))
        back = fresh_frame(cams["front"]).image
        assert np.abs(back.astype(int) - before["front"].astype(int)).mean() < 1.0

        # Closing one camera leaves the other one served; closing the last ends the process.
        cams["wrist"].close()
        assert not gone(pid) and len(segments()) == 2
        fresh_frame(cams["front"])
        cams["front"].close()
        wait_until(lambda: gone(pid), 5, "render process exits with its last camera")
        assert not segments()
    finally:
        world.close()


PARENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from spec.config import load_config
    from sim import SimCamera, SimWorld
    cfg = load_config(sys.argv[1], env={})
    world = SimWorld(cfg)
    world.start()
    cams = [SimCamera(world, cfg.camera(name)) for name in ("wrist", "front")]
    for cam in cams:
        cam.connect()
    print(json.dumps({"render_pid": cams[0].render_pid}), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.timeout(90)
def test_render_process_exits_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(SIM_YAML)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )
    render_pid = None
    try:
        sel = selectors.DefaultSelector()
        sel.register(parent.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=60), "the parent did not start its cameras within 60 s"
        render_pid = json.loads(parent.stdout.readline())["render_pid"]
        assert not gone(render_pid)
        assert len(segments(parent.pid)) == 3  # state and two camera slots
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: gone(render_pid), 5, "orphaned render process exits")
        wait_until(lambda: not segments(parent.pid), 5, "its shared memory is removed")
    finally:
        for pid in (parent.pid, render_pid):
            if pid is not None and not gone(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(10)
        if parent.stdout:
            parent.stdout.close()


@pytest.mark.timeout(90)
def test_read_never_blocks_and_a_dead_renderer_is_reported_and_restarted(cfg: Config):
    world = SimWorld(cfg)
    cam = SimCamera(world, cfg.camera("wrist"))
    try:
        cam.connect()
        pid = cam.render_pid
        fresh_frame(cam)
        os.kill(pid, signal.SIGSTOP)  # a renderer stuck anywhere, e.g. mid-frame
        try:
            time.sleep(0.1)
            held, frames = cam.read(), cam.stats.frames
            for _ in range(2000):
                assert cam.read() is held  # no wait, no None, no half-written newer frame
            assert cam.stats.frames == frames
        finally:
            os.kill(pid, signal.SIGCONT)
        assert fresh_frame(cam).index > held.index
        assert not cam.stats.errors
        # A render error the process writes into the slot shows in the camera's stats.
        cam._slot.report_error("GLError: simulated")
        assert cam.stats.errors == ["GLError: simulated"]

        before = cam.read()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: gone(pid), 5, "render process killed")
        assert cam.read() is not None  # the last frame until the restart, which the loop rejects as stale
        # The watchdog restarts the process on the same shared memory; frames resume, numbered on.
        wait_until(lambda: cam.render_pid not in (None, pid) and cam.stats.resets == 1, 30, "restart")
        assert any("restarted" in e and "exit code -9" in e for e in cam.stats.errors[1:]), cam.stats.errors
        after = fresh_frame(cam)
        assert after.index > before.index and after.timestamp > before.timestamp
        assert cam.stats.frames > before.index
        new_pid = cam.render_pid
        cam.close()
        wait_until(lambda: gone(new_pid), 10, "the restarted process stops with the last camera")
    finally:
        world.close()
    assert not segments()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from sim.render_shm import FrameSlot
    name, h, w, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    slot = FrameSlot.attach(name, h, w)
    image = np.empty((h, w, 3), np.uint8)
    index, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:  # as fast as it can: far harder than a 15 fps camera
        image[...] = index % 251
        slot.write(image, index, time.monotonic(), 0.0, 0.0)
        index += 1
    slot.close()
    print(index)
    """
)


@pytest.mark.timeout(60)
def test_frame_slot_never_hands_out_a_torn_frame():
    h, w = 240, 320
    slot = FrameSlot.create(h, w)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, slot.name, str(h), str(w), "3"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        wait_until(lambda: slot.read() is not None, 30, "first frame from the writer")
        frame, seen, last_index = None, 0, -1
        while writer.poll() is None:
            new = slot.read(frame)
            if new is not frame:
                frame = new
                seen += 1
                assert frame.index > last_index
                last_index = frame.index
                # Every pixel from the same frame, and that frame is the one the index names.
                assert frame.image.min() == frame.image.max() == frame.index % 251, frame.index
        written = int(writer.communicate(timeout=10)[0])
        print(f"{seen} of {written} frames read, {slot.torn_reads} reads found a buffer being rewritten")
        assert seen > 50
        # A frame whose pixels do not match its checksum is never handed out: the previous is.
        previous = slot.read(None)
        image = np.full((h, w, 3), 7, np.uint8)
        slot.write(image, previous.index + 1, time.monotonic(), 0.0, 0.0)
        slot._images[int(slot._latest)][0, 0] = 8  # a tear: one pixel from another frame
        assert slot.read(previous) is previous
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(10)
        slot.close()
    assert slot.name not in os.listdir("/dev/shm")


@pytest.mark.timeout(60)
def test_connect_without_a_gl_backend_fails_clearly(cfg: Config, monkeypatch: pytest.MonkeyPatch):
    world = SimWorld(cfg)
    cam = SimCamera(world, cfg.camera("front"))
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")  # inherited by the render process only
    try:
        with pytest.raises(RenderProcessError, match="MUJOCO_GL='no-such-backend'"):
            cam.connect(timeout=30)
        assert cam.read() is None and cam.render_pid is None
    finally:
        world.close()
    assert not segments()
