"""`robot-server run --config configs/franka.yaml` drives franka-sim through the same daemon loop.

The real franky code path (FrankyArm, recovery) under the real tick, store writer and session;
the cameras are the sim ones, mirroring the franky arm's joints (franka-sim has no cameras).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from replay.store import ReplayReader
from tests.daemon_proc import child_environment
from tests.franka_sim import ROOT, FrankaSimServer, missing_reason

pytestmark = pytest.mark.franka_sim


@pytest.fixture(scope="module")
def server():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with FrankaSimServer() as s:
        yield s


def test_daemon_drives_franka_sim_and_records(server, tmp_path: Path):
    tree = yaml.safe_load((ROOT / "spec" / "configs" / "franka.yaml").read_text())
    tree["store"]["path"] = str(tmp_path / "franka.zarr")
    tree["server"]["checkpoint_dir"] = str(tmp_path / "policies")
    tree["control"]["status_line"] = False
    config = tmp_path / "franka.yaml"
    config.write_text(yaml.safe_dump(tree))
    env = child_environment()
    r = subprocess.run(
        [sys.executable, "-m", "robot_server.cli", "run", "--config", str(config), "--max-steps", "40",
         "--policy", "random", "--no-api"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert "40 steps stored" in r.stderr

    reader = ReplayReader(tmp_path / "franka.zarr")
    assert reader.meta["extra"]["arm_backend"] == "franky"
    (ep,) = reader.episodes()
    assert ep.kind == "practice" and ep.length == 40
    data = reader.read(ep.id)
    assert data["obs/wrist"].shape == (40, 64, 64, 3) and data["obs/front"].shape == (40, 64, 64, 3)
    assert np.all(np.diff(data["timestamp"]) > 0)
    # The session started at home; random actions then moved the franka-sim arm inside the box.
    proprio = data["obs/proprio"][:, :3]  # normalised to [-1, 1] by the box
    home = np.array([0.307, 0.0, 0.70])  # franka-sim's flange at the ready pose (configs/franka.yaml)
    low, high = np.array(tree["workspace"]["low"]), np.array(tree["workspace"]["high"])
    np.testing.assert_allclose(proprio[0], 2 * (home - low) / (high - low) - 1, atol=0.1)
    assert np.ptp(proprio, axis=0).max() > 0.05
    assert np.all(np.abs(proprio) <= 1.0 + 0.05)
    # The mirrored sim cameras show the arm moving.
    wrist = data["obs/wrist"].astype(np.int16)
    assert np.abs(wrist[-1] - wrist[0]).mean() > 1.0
