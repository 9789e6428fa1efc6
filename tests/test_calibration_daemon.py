"""The calibration API against a real `robot-server run` process (sim): jog with the keyboard
teleop, mark points, save the box, the home pose and a crop into the daemon's own config file, save
a hand-eye sample; then a daemon built from the edited file records the new crop in the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from replay.reader import ReplayReader
from robot_server.cli import app as cli_app
from spec.config import load_config
from tests.daemon_proc import running_daemon, settled_position, wait_for

pytestmark = pytest.mark.timeout(180)


def _position(client) -> list[float] | None:
    arm = client.get("/status").json().get("arm") or {}
    return arm.get("position")


def _jog(client, axes: dict[str, float], distance: float, timeout: float = 20.0) -> list[float]:
    """Hold keyboard keys until the end-effector has moved `distance` from where it was."""
    start = np.asarray(wait_for(lambda: _position(client), 10.0, what="an arm position"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.post("/teleop/keyboard", json={**axes, "hold_s": 0.5})
        assert r.status_code == 200, r.text
        pos = np.asarray(_position(client))
        if np.linalg.norm(pos - start) >= distance:
            client.post("/teleop/keyboard", json={"hold_s": 0.05})  # all zero: stop
            return settled_position(client)  # mark where it stopped, not where it passed
        time.sleep(0.1)
    raise AssertionError(f"the arm did not move {distance} m by keyboard teleop from {start.tolist()}")


def test_calibration_against_a_running_daemon(tmp_path: Path) -> None:
    with running_daemon(tmp_path / "run") as d, d.client() as c, d.client(token="") as anon:
        cfg_path = d.config_path
        assert anon.get("/calibration").json()["config_path"] == str(cfg_path)
        original = load_config(cfg_path, env={})
        assert anon.post("/calibration/workspace/points").status_code == 401  # writes need the token

        # Workspace: mark where the arm is, jog diagonally, mark again, save with a margin.
        wait_for(lambda: _position(c), 10.0, what="an arm position")
        first = c.post("/calibration/workspace/points").json()["point"]["position"]
        _jog(c, {"x": 1.0, "y": 1.0, "z": -1.0}, 0.08)
        second = c.post("/calibration/workspace/points").json()["point"]["position"]
        assert all(abs(a - b) > 0.02 for a, b in zip(first, second, strict=True)), (first, second)
        r = c.post("/calibration/workspace/save", json={"margin_m": 0.01})
        assert r.status_code == 200, r.text
        assert "next daemon start" in r.json()["note"]
        box = r.json()["box"]
        saved = load_config(cfg_path, env={})
        assert saved.workspace.low == box["low"] and saved.workspace.high == box["high"]
        for axis in range(3):
            lo, hi = sorted((first[axis], second[axis]))
            assert saved.workspace.low[axis] == pytest.approx(lo - 0.01, abs=2e-4)
            assert saved.workspace.high[axis] == pytest.approx(hi + 0.01, abs=2e-4)
        assert Path(str(cfg_path) + ".bak").is_file()

        # Home: the current joints.
        joints = c.get("/calibration/arm").json()["joints"]
        assert c.post("/calibration/home/save").status_code == 200
        assert np.allclose(load_config(cfg_path, env={}).arm.home_joints, joints, atol=2e-3)

        # Crop: a bad one refused naming the value, a good one saved.
        r = c.put("/calibration/crop/wrist", json={"x": 20, "y": 0, "w": 80, "h": 80})
        assert r.status_code == 409 and r.json()["detail"].startswith("cameras.wrist.crop.w:")
        r = c.put("/calibration/crop/wrist", json={"x": 4, "y": 4, "w": 88, "h": 88})
        assert r.status_code == 200, r.text

        # Hand-eye sample: the full frame and the arm pose, next to the store.
        r = c.post("/calibration/handeye/samples", json={"camera": "wrist"})
        assert r.status_code == 200, r.text
        sample_dir = d.store_path.parent / "handeye" / "wrist"
        meta = json.loads((sample_dir / "0000.json").read_text())
        assert (sample_dir / "0000.png").is_file() and (meta["width"], meta["height"]) == (96, 96)
        assert np.allclose(meta["position"], _position(c), atol=0.01)
        assert json.loads((sample_dir / "intrinsics.json").read_text())["width"] == 96

        # The CLI against the same server, writing a copy of the config.
        copy = tmp_path / "cli.yaml"
        copy.write_text(cfg_path.read_text())
        runner = CliRunner()
        r = runner.invoke(cli_app, ["calibrate", "home", "--server", d.url, "--config", str(copy)])
        assert r.exit_code == 0, r.output
        assert np.allclose(load_config(copy, env={}).arm.home_joints, c.get("/calibration/arm").json()["joints"],
                           atol=2e-3)
        preview = tmp_path / "front.png"
        r = runner.invoke(cli_app, ["calibrate", "crop", "--config", str(copy), "--camera", "front",
                                    "--rect", "8,0,96,96", "--server", d.url, "--preview", str(preview)])
        assert r.exit_code == 0, r.output
        assert cv2.imread(str(preview)).shape[:2] == (96, 128 + 2 + 96)
        before = copy.read_text()
        # Interactive: Enter marks the arm's position from /status; one point cannot be saved; q quits.
        r = runner.invoke(cli_app, ["calibrate", "workspace", "--server", d.url, "--config", str(copy)],
                          input="\n\ns\nq\n")
        assert r.exit_code == 1, r.output
        assert "point 2: [" in r.output and "not saved: points: need at least 2 distinct points" in r.output
        assert copy.read_text() == before

        # The running daemon keeps its settings until restarted.
        ov = c.get("/calibration").json()
        assert ov["cameras"][0]["crop"] == {"x": 8, "y": 0, "w": 80, "h": 80}
        assert ov["cameras"][0]["crop_saved"] == {"x": 4, "y": 4, "w": 88, "h": 88}
        assert ov["workspace"] == original.workspace.model_dump()
    tree = yaml.safe_load(cfg_path.read_text())
    assert tree["server"]["token"] == d.token and tree["store"]["path"] == str(d.store_path)

    # A daemon built from the edited file records the crop in effect in the store's attributes,
    # with the change in the store's meta history.
    from robot_server.daemon import Daemon

    daemon = Daemon(load_config(cfg_path, env={}), config_path=cfg_path)
    try:
        meta = ReplayReader(d.store_path).meta
    finally:
        daemon.stop()
    wrist = next(cam for cam in meta["cameras"] if cam["name"] == "wrist")
    assert wrist["crop"] == {"x": 4, "y": 4, "w": 88, "h": 88}
    changes = meta["meta_history"][-1]["changes"]
    assert changes["cameras.wrist.crop"] == {"old": {"x": 8, "y": 0, "w": 80, "h": 80},
                                             "new": {"x": 4, "y": 4, "w": 88, "h": 88}}
