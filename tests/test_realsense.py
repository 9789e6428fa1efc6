"""RealSenseCamera against pyrealsense2's own software device and playback, no camera needed.

Recordings are made at test time: a `rs.software_device` with a known serial streams frames with
a recognisable pattern into `rs.recorder` (.db3), which the driver then plays back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 needs Debian libusb-1.0-0 (scripts/setup.sh)")

from camera.realsense import (  # noqa: E402
    CameraNotFound,
    RealSenseCamera,
    RealSenseError,
    list_devices,
)
from spec.camera_config import CameraConfig  # noqa: E402

W, H, FPS = 64, 48, 30


def pattern(number: int, seed: int) -> np.ndarray:
    """Frame `number` of camera `seed`: R = frame number, G = column, B = row + seed."""
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = number % 256
    img[..., 1] = np.arange(W, dtype=np.uint8)[None, :]
    img[..., 2] = (np.arange(H)[:, None] + seed) % 256
    return img


def record(path: Path, serial: str, seed: int, frames: int = 30) -> Path:
    """Write a colour recording from a software device with serial `serial`."""
    sd = rs.software_device()
    sd.register_info(rs.camera_info.serial_number, serial)
    sd.register_info(rs.camera_info.name, "Synthetic D435")
    sensor = sd.add_sensor("RGB Camera")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = rs.stream.color, 0, 0
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = W, H, FPS, 3, rs.format.rgb8
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = W, H, W / 2, H / 2, W, W
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs.intrinsics = intr
    profile = sensor.add_video_stream(vs).as_video_stream_profile()
    recorder = rs.recorder(str(path), sd)
    sensor.open([profile])
    sensor.start(rs.syncer())
    # The pixel buffers must outlive on_video_frame, and each call needs a fresh frame object.
    images = [pattern(i, seed) for i in range(frames)]
    for i, img in enumerate(images):
        f = rs.software_video_frame()
        f.bpp, f.stride, f.pixels = 3, W * 3, img
        f.domain = rs.timestamp_domain.hardware_clock
        f.profile = profile
        f.timestamp = 5000.0 + i * 1000.0 / FPS  # ms
        f.frame_number = i
        sensor.on_video_frame(f)
    sensor.stop()
    sensor.close()
    recorder.pause()
    del recorder  # closes the file
    return path


def cfg_for(name: str, **kw: object) -> CameraConfig:
    return CameraConfig(name=name, backend="realsense", width=W, height=H, fps=FPS, **kw)


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def collect(cam: RealSenseCamera, until: Callable[[], bool], timeout: float = 10.0) -> list:
    """Every distinct frame `read()` returned while polling, until `until()` holds."""
    seen: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until():
        f = cam.read()
        if f is not None:
            seen[f.index] = f
        time.sleep(0.001)
    f = cam.read()
    if f is not None:
        seen[f.index] = f
    return [seen[k] for k in sorted(seen)]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rs")
    return {
        "a": record(d / "a.db3", "111122223333", seed=10),
        "b": record(d / "b.db3", "444455556666", seed=100),
    }


def test_playback_delivers_the_recorded_frames(recordings: dict[str, Path]) -> None:
    # Not real time: the playback waits for the capture thread, so no frame is dropped.
    cam = RealSenseCamera(cfg_for("front", playback=str(recordings["a"])), real_time=False, loop=False)
    try:
        cam.connect()
        frames = collect(cam, lambda: cam.stats.hw_frame_number == 29, timeout=10)
    finally:
        cam.close()
    assert cam.stats.frames == 30 and cam.stats.dropped == 0
    assert len(frames) >= 1
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        number = int(f.image[0, 0, 0])
        np.testing.assert_array_equal(f.image, pattern(number, seed=10))
        # hardware timestamps are the recorded ones, in ms
        assert f.hw_timestamp_ms == pytest.approx(5000.0 + number * 1000.0 / FPS, abs=1e-3)
    idx = [f.index for f in frames]
    hw = [f.hw_timestamp_ms for f in frames]
    host = [f.timestamp for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert all(b > a for a, b in zip(hw, hw[1:], strict=False))
    assert all(b >= a for a, b in zip(host, host[1:], strict=False))
    assert cam.stats.serial == "111122223333"
    assert cam.stats.frames == frames[-1].index + 1
    d = cam.stats.as_dict()
    assert d["state"] == "closed" and d["age_s"] is not None and d["age_s"] >= 0


def test_read_never_blocks_and_honours_max_age(recordings: dict[str, Path]) -> None:
    cam = RealSenseCamera(cfg_for("front", playback=str(recordings["a"])), real_time=False, loop=False)
    assert cam.read() is None  # before connect: nothing, at once
    try:
        cam.connect()
        assert cam.wait_for_frame(timeout=10) is not None
        t = time.perf_counter()
        for _ in range(1000):
            cam.read()
        assert time.perf_counter() - t < 1.0
        # The recording ends; once the newest frame is older than 50 ms, max_age_s rejects it.
        assert wait_until(lambda: (cam.age_s() or 0) > 0.05, timeout=5)
        assert cam.read(max_age_s=0.05) is None
        assert cam.read() is not None
    finally:
        cam.close()


def test_two_cameras_at_once(recordings: dict[str, Path]) -> None:
    cams = [
        RealSenseCamera(cfg_for("front", playback=str(recordings["a"])), real_time=True, loop=True),
        RealSenseCamera(cfg_for("wrist", playback=str(recordings["b"])), real_time=True, loop=True),
    ]
    try:
        for c in cams:
            c.connect()
        assert wait_until(lambda: all(c.stats.frames >= 10 for c in cams), timeout=10)
        fa, fb = cams[0].read(), cams[1].read()
    finally:
        for c in cams:
            c.close()
    assert fa is not None and fb is not None
    np.testing.assert_array_equal(fa.image, pattern(int(fa.image[0, 0, 0]), seed=10))
    np.testing.assert_array_equal(fb.image, pattern(int(fb.image[0, 0, 0]), seed=100))
    assert {c.stats.serial for c in cams} == {"111122223333", "444455556666"}
    assert all(c.stats.resets == 0 for c in cams)


def test_stalled_playback_is_reopened_and_counted(recordings: dict[str, Path]) -> None:
    cfg = cfg_for("front", playback=str(recordings["a"]), reset_after_s=0.3)
    cam = RealSenseCamera(cfg, real_time=False, loop=False)
    try:
        cam.connect()
        # 30 frames, then silence: after 0.3 s the thread reopens and the recording plays again.
        assert wait_until(lambda: cam.stats.resets >= 1 and cam.stats.frames > 30, timeout=10)
        frame = cam.read()
        errors = list(cam.stats.errors)
    finally:
        cam.close()
    assert frame is not None and frame.index >= 30  # the index keeps counting across the reopen
    assert any("no frame for" in e and "reopening" in e for e in errors), errors


def test_open_by_serial_streams_and_hardware_resets_on_stall(recordings: dict[str, Path]) -> None:
    # A recording loaded into a context is listed there as a device with its serial, so the
    # by-serial path (lookup, enable_device, stall -> hardware_reset -> reopen) runs for real.
    ctx = rs.context()
    playback = ctx.load_device(str(recordings["b"]))
    playback.set_real_time(False)
    assert [d.serial for d in list_devices(ctx)] == ["444455556666"]
    cam = RealSenseCamera(
        cfg_for("wrist", serial="444455556666", reset_after_s=0.3), context=ctx, real_time=False
    )
    try:
        cam.connect()
        assert wait_until(lambda: cam.stats.frames >= 20, timeout=10)
        np.testing.assert_array_equal(cam.read().image[..., 1:], pattern(0, seed=100)[..., 1:])
        # FIRST_FRAME_GRACE_S does not apply: frames arrived; the end of the recording is a stall.
        assert wait_until(lambda: cam.stats.resets >= 1 and cam.stats.frames > 30, timeout=10)
        errors = list(cam.stats.errors)
    finally:
        cam.close()
        ctx.unload_device(str(recordings["b"]))
    assert any("hardware reset" in e and "444455556666" in e for e in errors), errors


def test_reset_hardware_resets_and_reopens_at_once(recordings: dict[str, Path]) -> None:
    # What the daemon asks of a camera whose frames stayed stale: no waiting for reset_after_s.
    ctx = rs.context()
    playback = ctx.load_device(str(recordings["b"]))  # listed in `ctx` while this reference lives
    playback.set_real_time(False)
    cam = RealSenseCamera(cfg_for("wrist", serial="444455556666", reset_after_s=600), context=ctx, real_time=False)
    try:
        cam.connect()
        assert wait_until(lambda: cam.stats.frames >= 30, timeout=10)  # the whole recording, then silence
        assert cam.stats.resets == 0
        t0 = time.perf_counter()
        cam.reset()
        assert time.perf_counter() - t0 < 0.01, "reset() returns at once; the capture thread does the work"
        assert wait_until(lambda: cam.stats.resets == 1 and cam.stats.frames > 30, timeout=10)
        errors = list(cam.stats.errors)
    finally:
        cam.close()
        ctx.unload_device(str(recordings["b"]))
    assert any(e.startswith("reset requested (serial 444455556666): hardware reset") for e in errors), errors


def test_absent_serial_is_a_clear_error() -> None:
    cam = RealSenseCamera(cfg_for("front", serial="000011112222"), context=rs.context())
    with pytest.raises(
        CameraNotFound, match=r"'front'.*serial 000011112222 is not connected \(connected: none\)"
    ):
        cam.connect()
    assert cam.read() is None


def test_missing_recording_and_wrong_resolution_are_clear_errors(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.db3"
    with pytest.raises(RealSenseError, match="nope.db3.*does not exist"):
        RealSenseCamera(cfg_for("front", playback=str(missing))).connect()
    cfg = CameraConfig(
        name="front", backend="realsense", playback=str(recordings["a"]), width=640, height=480
    )
    with pytest.raises(RealSenseError, match=r"640x480 RGB8 @ 30 fps.*available: 64x48 rgb8 @ 30"):
        RealSenseCamera(cfg).connect()


def test_list_devices_without_a_camera() -> None:
    devices = list_devices(rs.context())
    assert isinstance(devices, list)
    intel_usb = any(p.read_text().strip() == "8086" for p in Path("/sys/bus/usb/devices").glob("*/idVendor"))
    if not intel_usb:  # CI: no camera, so nothing may be listed
        assert devices == []
    # With a camera plugged in, every entry must be well formed.
    assert all(d.serial and d.name and not d.playback for d in devices)
