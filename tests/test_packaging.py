"""The built wheel works outside the checkout: `pip install .` into a clean venv, then
`robot-server run --max-steps 20 --policy random` from an empty directory on the packaged sim config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from replay.store import ReplayReader

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wheel_runs_the_packaged_sim_config_from_an_empty_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("franka_practice-*.whl")

    # A clean venv with the wheel alone; its dependencies come from this venv's site-packages via a
    # .pth line (a directory added that way does not run its own .pth files, so the checkout's
    # editable install stays invisible).
    venv = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("ROBOT__")}
    env["MUJOCO_GL"] = env.get("MUJOCO_GL", "egl")
    where = subprocess.check_output(
        [py, "-c", "import robot_server, spec; print(spec.__file__)"], cwd=empty, env=env, text=True
    )
    assert Path(where.strip()).is_relative_to(venv), f"imported from {where}, not from the installed wheel"

    out = subprocess.run(
        [
            venv / "bin" / "robot-server",
            "run",
            "--max-steps",
            "20",
            "--policy",
            "random",
            "--port",
            str(_free_port()),
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    store = empty / "data" / "sim.zarr"
    steps = sum(info.length for info in ReplayReader(store).episodes())
    assert steps >= 20
