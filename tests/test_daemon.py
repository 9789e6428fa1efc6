"""`robot-server run --config configs/sim.yaml --max-steps 100 --policy random`, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from replay.store import ReplayReader
from tests.daemon_proc import child_environment

ROOT = Path(__file__).resolve().parents[1]


def sim_config(tmp_path: Path) -> Path:
    tree = yaml.safe_load((ROOT / "spec" / "configs" / "sim.yaml").read_text())
    tree["store"]["path"] = str(tmp_path / "sim.zarr")
    tree["server"]["checkpoint_dir"] = str(tmp_path / "policies")
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_run_max_steps_random_leaves_a_complete_store(tmp_path):
    config = sim_config(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "robot_server.cli", "run", "--config", str(config), "--max-steps", "100",
         "--policy", "random", "--no-api"],
        cwd=ROOT, env=child_environment(), capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    reader = ReplayReader(tmp_path / "sim.zarr")
    (ep,) = reader.episodes()
    assert ep.closed and ep.length == 100 and ep.kind == "practice"
    data = reader.read(ep.id)
    for cam in ("wrist", "front"):
        assert data[f"obs/{cam}"].dtype == np.uint8
        assert data[f"obs/{cam}"].shape == (100, 64, 64, 3)
        assert data[f"obs/{cam}"].std() > 5, "real renders, not blank frames"
    assert data["action"].shape == (100, 4) and data["obs/proprio"].shape == (100, 4)
    assert np.all(np.diff(data["timestamp"]) > 0)
    assert np.all(data["policy_version"] == -1)  # uniform random, no learned policy
    # Random actions never take the arm out of the workspace box: targets are clipped to it, and
    # the measured position may overshoot by the tracking error only (a few mm).
    box = yaml.safe_load(config.read_text())["workspace"]
    low, high = np.array(box["low"]), np.array(box["high"])
    pos = low + (data["obs/proprio"][:, :3] + 1.0) / 2.0 * (high - low)
    assert np.all(pos >= low - 0.005) and np.all(pos <= high + 0.005), (pos.min(0), pos.max(0))
    meta = reader.meta
    assert meta["rate_hz"] == 10.0 and meta["schema_version"] >= 1
    assert [c["name"] for c in meta["cameras"]] == ["wrist", "front"]
    assert meta["cameras"][0]["crop"] == {"x": 8, "y": 0, "w": 80, "h": 80}
    assert meta["action_space"]["dim"] == 4


def test_sigterm_closes_the_store_cleanly(tmp_path):
    config = sim_config(tmp_path)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "robot_server.cli", "run", "--config", str(config), "--policy", "random",
             "--no-api"], cwd=ROOT, env=child_environment(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "control loop running" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(6.0)  # home, then some steps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    (ep,) = ReplayReader(tmp_path / "sim.zarr").episodes()
    assert ep.closed and ep.length > 0
    assert ep.attrs["end_reason"] in ("stopped by operator", "shutdown")


def test_bad_config_value_fails_at_start_naming_the_field(tmp_path):
    config = sim_config(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "robot_server.cli", "run", "--config", str(config), "--no-api"],
        cwd=ROOT, env=child_environment({"ROBOT__CONTROL__RATE_HZ": "-5"}), capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    assert "control.rate_hz" in r.stderr
    assert not (tmp_path / "sim.zarr").exists()


def _render_children(pid: int) -> list[int]:
    """The sim render processes among `pid`'s children."""
    out = []
    # Each thread lists the children it started: the render process comes from a camera thread.
    children = {c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()}
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"sim.render_process" in cmdline:
            out.append(int(child))
    return out


def test_daemon_survives_a_killed_render_process(tmp_path):
    """A crashed sim camera renderer is restarted: frames come back, counted as a camera reset,
    and the control loop never stops."""
    from tests.daemon_proc import running_daemon, wait_for

    with running_daemon(tmp_path / "d") as d, d.client() as api:
        (render_pid,) = _render_children(d.proc.pid)
        before = api.get("/status").json()
        os.kill(render_pid, signal.SIGKILL)

        def restarted() -> dict | None:
            st = api.get("/status").json()
            cams = st["cameras"]
            fresh = all(c["resets"] == 1 and c["age_s"] is not None and c["age_s"] < 0.5 for c in cams.values())
            return st if fresh else None

        st = wait_for(restarted, 40, interval=0.2, what="both sim cameras restarted with fresh frames")
        (new_pid,) = _render_children(d.proc.pid)
        assert new_pid != render_pid
        assert st["tick"]["ticks"] > before["tick"]["ticks"] and d.alive()
        assert "restarted" in st["cameras"]["wrist"]["last_error"]
        metrics = api.get("/metrics").text
        assert 'robot_camera_resets_total{camera="wrist"} 1.0' in metrics
