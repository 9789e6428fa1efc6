"""The /calibration routes against a small stand-in daemon (FastAPI TestClient); the same routes run
against a real daemon process in test_calibration_daemon.py."""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from arm.base import ArmMode, ArmState
from camera.base import Camera, CameraStats, Frame
from robot_server.api.app import STATIC, create_app
from spec.clock import now
from spec.config import load_config
from tests.daemon_proc import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "calib-test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeCamera(Camera):
    def __init__(self, name: str, w: int, h: int) -> None:
        self.name = name
        self.frame_age = 0.0
        self.image = np.zeros((h, w, 3), np.uint8)
        self.image[:, : w // 2] = (200, 30, 30)

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...  # a picture in memory has nothing to restart

    def read(self) -> Frame | None:
        return Frame(image=self.image, timestamp=now() - self.frame_age, index=7)

    @property
    def stats(self) -> CameraStats:
        return CameraStats()

    def intrinsics(self) -> dict[str, Any]:  # like a driver that can tell its intrinsics
        h, w = self.image.shape[:2]
        return {"width": w, "height": h, "fx": 80.0, "fy": 80.0, "ppx": w / 2, "ppy": h / 2, "coeffs": [0] * 5}


@dataclass
class FakeLoop:
    snapshot: dict[str, Any] = field(default_factory=dict)
    last_state: ArmState | None = None
    running: bool = True

    def move_to(self, position: list[float], joints: list[float] | None = None) -> None:
        q = np.asarray(joints if joints is not None else [0.0, -0.1, 0.0, -2.5, 0.0, 2.45, 0.785])
        self.last_state = ArmState(
            position=np.asarray(position, float), quaternion=np.array([0.0, 1.0, 0.0, 0.0]), yaw=0.0,
            gripper_width=0.08, joints=q, external_force=np.zeros(6), mode=ArmMode.READY, timestamp=now(),
        )
        self.snapshot = {"tick": {"ticks": 1}, "arm": {"mode": "ready", "position": list(position)}}


class FakeDaemon:
    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self.cfg = load_config(config_path or ROOT / "spec" / "configs" / "sim.yaml", env={})
        self.loop = FakeLoop()
        self.loop.move_to([0.45, 0.0, 0.2])
        self.cameras = {c.name: FakeCamera(c.name, c.width, c.height) for c in self.cfg.cameras}

    def status(self) -> dict[str, Any]:
        return dict(self.loop.snapshot)


@pytest.fixture
def setup(tmp_path: Path):
    text = (ROOT / "spec" / "configs" / "sim.yaml").read_text()
    text = text.replace("token: sim-token-please-change", f"token: {TOKEN}  # keep this secret")
    text = text.replace("path: data/sim.zarr", f"path: {tmp_path / 'store.zarr'}")
    cfg_path = tmp_path / "robot.yaml"
    cfg_path.write_text(text)
    daemon = FakeDaemon(cfg_path)
    with TestClient(create_app(daemon)) as client:
        yield client, daemon, cfg_path


def test_writes_need_the_token(setup) -> None:
    client, _, _ = setup
    assert client.post("/calibration/workspace/points").status_code == 401
    assert client.post("/calibration/home/save", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
    assert client.put("/calibration/crop/wrist", json={"x": 0, "y": 0, "w": 8, "h": 8}).status_code == 401
    assert client.get("/calibration/workspace").status_code == 200  # reads are open by default


def test_workspace_points_box_and_save(setup) -> None:
    client, daemon, cfg_path = setup
    before = cfg_path.read_text()
    r = client.post("/calibration/workspace/points", headers=AUTH)
    assert r.status_code == 200 and r.json()["point"]["position"] == [0.45, 0.0, 0.2]
    # One point proposes nothing, and saving it is refused naming the field: a conflict with the
    # points marked so far, not a bad request.
    assert client.get("/calibration/workspace").json()["problem"].startswith("points:")
    r = client.post("/calibration/workspace/save", headers=AUTH, json={"margin_m": 0.0})
    assert r.status_code == 409 and r.json()["detail"].startswith("points: need at least 2 distinct points")
    assert cfg_path.read_text() == before

    daemon.loop.move_to([0.60, 0.15, 0.22])  # only 2 cm higher: too thin a box along z
    client.post("/calibration/workspace/points", headers=AUTH)
    r = client.post("/calibration/workspace/save", headers=AUTH, json={"margin_m": 0.0})
    assert r.status_code == 409 and "2.0 cm along z" in r.json()["detail"]
    ws = client.get("/calibration/workspace", params={"margin": 0.02}).json()
    assert ws["box"] == {"low": [0.43, -0.02, 0.18], "high": [0.62, 0.17, 0.24], "size": [0.19, 0.19, 0.06]}
    assert client.get("/calibration/workspace", params={"margin": -1}).status_code == 422

    r = client.post("/calibration/workspace/save", headers=AUTH, json={"margin_m": 0.02})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "next daemon start" in body["note"] and body["box"]["low"] == [0.43, -0.02, 0.18]
    saved = load_config(cfg_path, env={})
    assert saved.workspace.low == [0.43, -0.02, 0.18] and saved.workspace.high == [0.62, 0.17, 0.24]
    assert "# keep this secret" in cfg_path.read_text()
    assert Path(body["backup"]).read_text() == before
    assert daemon.cfg.workspace.low == [0.35, -0.25, 0.02]  # the running daemon keeps its box

    ov = client.get("/calibration").json()
    assert ov["workspace_saved"] == {"low": [0.43, -0.02, 0.18], "high": [0.62, 0.17, 0.24]}
    assert ov["workspace"]["low"] == [0.35, -0.25, 0.02]
    assert len(ov["points"]) == 2
    assert client.delete("/calibration/workspace/points", headers=AUTH).json() == {"cleared": 2}
    assert client.get("/calibration/workspace").json()["points"] == []


def test_home_save(setup) -> None:
    client, daemon, cfg_path = setup
    q = [0.1, -0.2, 0.05, -2.4, 0.0, 2.3, 0.7]
    daemon.loop.move_to([0.45, 0.0, 0.2], q)
    r = client.post("/calibration/home/save", headers=AUTH)
    assert r.status_code == 200 and r.json()["warning"] is None
    assert load_config(cfg_path, env={}).arm.home_joints == q
    daemon.loop.move_to([0.2, 0.0, 0.5], q)  # outside the box in effect
    assert "outside the workspace box" in client.post("/calibration/home/save", headers=AUTH).json()["warning"]
    daemon.loop.last_state = None
    assert client.post("/calibration/home/save", headers=AUTH).status_code == 409


def test_crop_save_and_refusals(setup) -> None:
    client, _, cfg_path = setup
    r = client.put("/calibration/crop/wrist", headers=AUTH, json={"x": 4, "y": 4, "w": 88, "h": 88})
    assert r.status_code == 200, r.text
    assert r.json()["warning"] is None and "next daemon start" in r.json()["note"]
    assert load_config(cfg_path, env={}).camera("wrist").crop.model_dump() == {"x": 4, "y": 4, "w": 88, "h": 88}
    assert "crop: {x: 4, y: 4, w: 88, h: 88}" in cfg_path.read_text()

    before = cfg_path.read_text()
    r = client.put("/calibration/crop/wrist", headers=AUTH, json={"x": 10, "y": 0, "w": 90, "h": 90})
    assert r.status_code == 409  # valid numbers, but not for this camera's configured frame
    assert r.json()["detail"] == "cameras.wrist.crop.w: x + w = 10 + 90 = 100 is beyond the camera's full width 96"
    r = client.put("/calibration/crop/wrist", headers=AUTH, json={"x": -3, "y": 0, "w": 9, "h": 9})
    assert r.status_code == 422 and r.json()["detail"].startswith("x:")
    assert client.put("/calibration/crop/side", headers=AUTH, json={"x": 0, "y": 0, "w": 9, "h": 9}).status_code == 404
    assert cfg_path.read_text() == before
    r = client.put("/calibration/crop/front", headers=AUTH, json={"x": 0, "y": 0, "w": 128, "h": 96})
    assert r.status_code == 200 and "stretched" in r.json()["warning"]
    cams = {c["name"]: c for c in client.get("/calibration").json()["cameras"]}
    assert cams["front"]["crop_saved"] == {"x": 0, "y": 0, "w": 128, "h": 96}
    assert cams["front"]["crop"] == {"x": 16, "y": 0, "w": 96, "h": 96}  # in effect until restart


def test_handeye_samples_saved_with_pose_and_intrinsics(setup, tmp_path: Path) -> None:
    client, daemon, _ = setup
    r = client.post("/calibration/handeye/samples", headers=AUTH, json={"camera": "front"})
    assert r.status_code == 200, r.text
    body = r.json()
    d = tmp_path / "handeye" / "front"
    assert body["directory"] == str(d) and body["count"] == 1
    meta = json.loads((d / "0000.json").read_text())
    assert meta["position"] == [0.45, 0.0, 0.2] and meta["camera"] == "front"
    assert np.allclose(np.abs(meta["quaternion"]), [0, 1, 0, 0])
    assert len(meta["joints"]) == 7 and meta["frame_index"] == 7
    assert json.loads((d / "intrinsics.json").read_text())["cx"] == 64.0
    import cv2

    img = cv2.imread(str(d / "0000.png"))
    assert img.shape == (96, 128, 3) and tuple(img[0, 0]) == (30, 30, 200)  # RGB saved as a true-colour PNG
    assert client.post("/calibration/handeye/samples", headers=AUTH, json={"camera": "front"}).json()["count"] == 2
    assert client.get("/calibration/handeye/samples", params={"camera": "front"}).json()["count"] == 2
    daemon.cameras["front"].frame_age = 5.0
    r = client.post("/calibration/handeye/samples", headers=AUTH, json={"camera": "front"})
    assert r.status_code == 503 and "no fresh frame" in r.json()["detail"]
    assert client.post("/calibration/handeye/samples", headers=AUTH, json={"camera": "side"}).status_code == 404


def test_handeye_samples_of_a_daemon_whose_store_is_on_s3_go_next_to_its_checkpoints(tmp_path: Path) -> None:
    daemon = FakeDaemon(None)
    daemon.cfg.store.path = "s3://fleet/robot-a"  # no local directory to put them beside
    daemon.cfg.server.checkpoint_dir = tmp_path / "data" / "policies"
    daemon.cfg.server.token = TOKEN
    with TestClient(create_app(daemon)) as client:
        r = client.post("/calibration/handeye/samples", headers=AUTH, json={"camera": "front"})
    assert r.status_code == 200, r.text
    assert r.json()["directory"] == str(tmp_path / "data" / "handeye" / "front")
    assert (tmp_path / "data" / "handeye" / "front" / "0000.json").is_file()


def test_without_a_config_file_nothing_is_saved(tmp_path: Path) -> None:
    daemon = FakeDaemon(None)
    daemon.cfg.server.token = TOKEN
    with TestClient(create_app(daemon)) as client:
        r = client.put("/calibration/crop/wrist", headers=AUTH, json={"x": 0, "y": 0, "w": 8, "h": 8})
        assert r.status_code == 409 and "without a config file" in r.json()["detail"]


def test_calibration_page_is_served_and_offline(setup) -> None:
    client, _, _ = setup
    page = client.get("/static/calibration.html")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    js = client.get("/static/calibration.js")
    assert js.status_code == 200
    assert '<script src="/static/calibration.js">' in page.text and "/static/style.css" in page.text
    for text in (page.text, js.text):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), "no external URLs offline"
    # Every route the page calls exists in the API.
    paths = set(client.get("/openapi.json").json()["paths"])
    for called in re.findall(r'"(/calibration[a-z/]*)', js.text):
        assert called.rstrip("/") in paths or any(p.startswith(called) for p in paths), called
    assert (STATIC / "calibration.html").is_file()


def test_overview_lists_cameras_and_settings(setup) -> None:
    client, _, cfg_path = setup
    ov = client.get("/calibration").json()
    assert ov["config_path"] == str(cfg_path)
    assert [c["name"] for c in ov["cameras"]] == ["wrist", "front"]
    wrist = ov["cameras"][0]
    assert (wrist["width"], wrist["height"], wrist["output"]) == (96, 96, {"width": 64, "height": 64})
    assert ov["home_joints_saved"] == yaml.safe_load(cfg_path.read_text())["arm"]["home_joints"]


# --- the page in a browser ---------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000


@pytest.mark.browser
@pytest.mark.timeout(120)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh --test)")
def test_page_drags_a_crop_at_the_output_aspect_and_saves_it(setup) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    _, daemon, cfg_path = setup
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(daemon), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="calibration-page-server", daemon=True)
    thread.start()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, timeout=WAIT_MS,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--disable-dev-shm-usage"],
                viewport={"width": 1200, "height": 1400},
            )
            try:
                ctx.set_default_timeout(WAIT_MS)
                pg = ctx.pages[0] if ctx.pages else ctx.new_page()
                pg.on("pageerror", lambda exc: errors.append(str(exc)))
                pg.goto(f"http://127.0.0.1:{port}/static/calibration.html", wait_until="domcontentloaded")
                pg.fill("#token", TOKEN)
                pg.click("#save-token")
                pg.wait_for_function("typeof editors !== 'undefined' && editors.front && editors.front.image !== null")

                # Drag a tall rectangle on the front view (128x96 -> 64x64): it comes out square.
                box = pg.locator("#crop-canvas-front").bounding_box()
                assert box is not None
                pg.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.1 * box["height"])
                pg.mouse.down()
                pg.mouse.move(box["x"] + 0.45 * box["width"], box["y"] + 0.9 * box["height"], steps=5)
                pg.mouse.up()
                rect = pg.evaluate("editors.front.rect")
                assert rect["w"] == rect["h"] and rect["w"] > 50, rect
                assert rect["x"] + rect["w"] <= 128 and rect["y"] + rect["h"] <= 96
                assert pg.text_content("#crop-rect-front") == f"x {rect['x']}, y {rect['y']}, w {rect['w']}, h {rect['h']}"
                pg.click("#crop-save-front")
                pg.wait_for_function("document.getElementById('message').textContent.includes('next daemon start')")
                assert load_config(cfg_path, env={}).camera("front").crop.model_dump() == rect

                # Mark a point from the page; it is listed.
                pg.click("#btn-mark")
                pg.wait_for_function("document.querySelectorAll('#points li').length === 1")
                assert "0.450" in (pg.text_content("#points") or "")
                # A refusal shows the server's reason.
                pg.click("#btn-save-ws")
                pg.wait_for_selector("#message.error")
                pg.wait_for_function("document.getElementById('message').textContent.includes('2 distinct points')")
            finally:
                ctx.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert not errors, f"JavaScript errors on the page: {errors}"
