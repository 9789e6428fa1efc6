"""Many viewers and telemetry clients share one encoding per frame / per status snapshot, so their
number does not multiply the event loop's work beside the control tick (bench/load.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np

from camera.base import Camera, CameraStats, Frame
from robot_server.api.frame_jpegs import FrameJpegs
from robot_server.api.routes.telemetry import TelemetryText
from spec.clock import now
from spec.config import load_config
from tests.daemon_proc import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


class StepCamera(Camera):
    """A camera whose newest frame changes only when the test says so."""

    def __init__(self, name: str, w: int, h: int) -> None:
        self.name = name
        self.index = 0
        self.reads = 0
        self.rng = np.random.default_rng(0)
        self.image = self.rng.integers(0, 256, (h, w, 3), np.uint8)

    def next_frame(self) -> None:
        self.index += 1
        self.image = self.rng.integers(0, 256, self.image.shape, np.uint8)

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...  # a picture in memory has nothing to restart

    def read(self) -> Frame | None:
        self.reads += 1
        return Frame(image=self.image, timestamp=now(), index=self.index)

    @property
    def stats(self) -> CameraStats:
        return CameraStats()


def _decoded_shape(data: bytes) -> tuple[int, ...]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img.shape


def test_twenty_viewers_of_a_frame_share_one_encode() -> None:
    cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml", env={}).camera("front")
    cam = StepCamera("front", cfg.width, cfg.height)
    jpegs = FrameJpegs()

    seen = [jpegs.latest(cam, cfg, "cropped") for _ in range(20)]
    assert jpegs.encodes == 1
    assert all(j is not None and j.data == seen[0].data and j.index == 0 for j in seen)
    assert _decoded_shape(seen[0].data) == (cfg.output.height, cfg.output.width, 3)

    cam.next_frame()  # a new frame is encoded once more, and viewers get the new picture
    after = [jpegs.latest(cam, cfg, "cropped") for _ in range(20)]
    assert jpegs.encodes == 2
    assert after[0].index == 1 and after[0].data != seen[0].data
    assert all(j.data == after[0].data for j in after)

    full = jpegs.latest(cam, cfg, "full")  # the other view is its own encoding, at full size
    assert jpegs.encodes == 3 and _decoded_shape(full.data) == (cfg.height, cfg.width, 3)


class SnapshotDaemon:
    """What telemetry reads of the daemon: the loop's published snapshot and the status around it."""

    def __init__(self) -> None:
        self.loop = SimpleNamespace(snapshot={"tick": {"ticks": 1}, "mode": "practice"})
        self.learner_report: dict[str, Any] | None = None
        self.status_calls = 0

    def publish(self, ticks: int) -> None:  # as the control thread does: a new dict each tick
        self.loop.snapshot = {"tick": {"ticks": ticks}, "mode": "practice"}

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return dict(self.loop.snapshot)


def test_telemetry_clients_share_one_message_per_snapshot() -> None:
    d = SnapshotDaemon()
    text = TelemetryText(d)
    first = {text.current() for _ in range(20)}
    assert len(first) == 1 and d.status_calls == 1
    assert json.loads(first.pop())["tick"] == {"ticks": 1}

    d.publish(2)
    assert json.loads(text.current())["tick"] == {"ticks": 2}
    assert d.status_calls == 2


def test_telemetry_of_a_stopped_loop_is_rebuilt_after_max_age(monkeypatch) -> None:
    d = SnapshotDaemon()
    text = TelemetryText(d)
    text.current()
    clock = [1e6]
    monkeypatch.setattr("robot_server.api.routes.telemetry.time.monotonic", lambda: clock[0])
    text.current()  # no new snapshot (a stopped loop publishes none), but the message is old
    assert d.status_calls == 2


class CameraDaemon:
    """What the camera routes read of the daemon: its config and cameras."""

    def __init__(self) -> None:
        self.cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml", env={})
        self.cameras = {c.name: StepCamera(c.name, c.width, c.height) for c in self.cfg.cameras}
        self.loop = SimpleNamespace(snapshot={})


def test_a_viewer_that_hangs_up_ends_its_stream() -> None:
    import uvicorn

    from robot_server.api.app import create_app

    daemon = CameraDaemon()
    cam = daemon.cameras["front"]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(daemon), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="stream-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client, \
                client.stream("GET", "/cameras/front/stream", params={"fps": 30}) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()  # kept: a dropped iterator closes the response (a hang-up)
            assert b"\xff\xd8" in next(chunks)
            wait_for(lambda: cam.reads > 5, 10, what="the stream polling the camera while the viewer watches")
        # The viewer has gone: the server notices and ends the stream, so the reads stop (a leaked
        # stream would go on reading 30 times a second).
        reads = [cam.reads]

        def quiet_for_a_second() -> bool:
            time.sleep(1.0)
            reads.append(cam.reads)
            return reads[-1] == reads[-2]

        wait_for(quiet_for_a_second, 10, what="the stream ending after its viewer left")
    finally:
        server.should_exit = True
        thread.join(10)
