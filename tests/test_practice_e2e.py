"""End to end: demos, the daemon practising, the learner training and pushing, a learner restart.

Daemon and learner are separate processes, as on the robot: the learner only reads the store and
talks to the daemon over HTTP. Tiny networks, 64x64 views, CPU.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from replay.store import ReplayReader
from tests.daemon_proc import REPO, SIM_CONFIG, _merge, child_environment, start_daemon, stop_daemon, wait_for

pytestmark = pytest.mark.slow

OVERRIDES = {
    "session": {"phase_steps": 40, "home_every": 0},
    "learner": {
        "mode": "pixels",
        "setting": "sim",
        "network": {"preset": "tiny"},
        "seed_steps": 40,
        "batch_size": 32,
        "demo_rows": 8,
        "bc_batch_size": 8,
        "clf_batch_size": 32,
        "capacity": 5000,
        "push_every": 5,
        "save_every": 10,
        "clf_forward_every": 20,
        "clf_backward_every": 10,
        "poll_s": 0.5,
    },
}


def _write_config(workdir: Path) -> Path:
    tree = _merge(yaml.safe_load(SIM_CONFIG.read_text()), OVERRIDES)
    tree = _merge(tree, {"store": {"path": str(workdir / "store.zarr")},
                         "server": {"checkpoint_dir": str(workdir / "policies")},
                         "learner": {"run_dir": str(workdir / "learner")}})
    path = workdir / "demo-config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _start_learner(config: Path, url: str, token: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [_bin("learner"), "run", "--config", str(config), "--server", url, "--token", token, "--quiet"],
            cwd=REPO, env=child_environment(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _active(client: httpx.Client, direction: str) -> int | None:
    p = client.get("/policies").json().get(direction)
    return None if p is None else int(p["version"])


def _saved_updates(run_dir: Path) -> dict[str, int]:
    state = run_dir / "state"
    latest = (state / "LATEST").read_text().strip()
    counters = json.loads((state / latest / "counters.json").read_text())
    return {d: int(a["updates"]) for d, a in counters["agents"].items()}


def test_demos_practice_push_swap_and_learner_resume(tmp_path):
    config = _write_config(tmp_path)
    env = child_environment()
    for direction in ("forward", "backward"):
        r = subprocess.run([_bin("robot-server"), "demos", "--config", str(config), "--direction", direction,
                            "--count", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "2 successful" in r.stdout
    demos = [e for e in ReplayReader(tmp_path / "store.zarr").episodes() if e.kind == "demo"]
    assert sorted((e.direction, e.success) for e in demos) == [("backward", True)] * 2 + [("forward", True)] * 2

    daemon = start_daemon(tmp_path, overrides={**OVERRIDES, "learner": {**OVERRIDES["learner"],
                                                                        "run_dir": str(tmp_path / "learner")}})
    learner = None
    log = tmp_path / "learner.log"
    try:
        with daemon.client() as api:
            assert api.post("/sessions", json={"policy": "learned"}).status_code == 201
            learner = _start_learner(daemon.config_path, daemon.url, daemon.token, log)

            # The learner trains after the seed phase and pushes; the daemon validates and swaps.
            try:
                first = wait_for(lambda: _active(api, "forward"), 240, 0.5, what="a pushed forward policy")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\nlearner log:\n{log.read_text()[-4000:]}") from None
            assert learner.poll() is None, log.read_text()[-3000:]

            # Later stored steps carry the new version.
            def acted_with_it():
                reader = ReplayReader(daemon.store_path)
                for e in reader.episodes():
                    if e.kind == "practice" and e.direction == "forward":
                        v = reader.read(e.id, keys=["policy_version"])["policy_version"]
                        if np.any(v >= first):
                            return True
                return False

            wait_for(acted_with_it, 120, 1.0, what=f"stored forward steps acted by v{first}")

            # A restarted learner resumes its counters instead of starting over.
            assert _stop(learner) == 0, log.read_text()[-3000:]
            saved = _saved_updates(tmp_path / "learner")
            assert saved["forward"] > 0
            before = _active(api, "forward")
            learner = _start_learner(daemon.config_path, daemon.url, daemon.token, log)
            wait_for(lambda: "resumed from" in log.read_text(), 120, 0.5, what="the learner resuming")
            m = re.search(r"resumed from .*?: updates (\{[^}]*\})", log.read_text())
            assert m is not None
            resumed = ast.literal_eval(m.group(1))  # the dict the learner logged
            assert resumed == saved
            later = wait_for(lambda: (v := _active(api, "forward")) is not None and v > before and v, 240, 0.5,
                             what="a newer forward policy after the restart")
            assert later > before
            st = api.get("/status").json()
            assert st["policies"]["swaps"] >= 2
            assert st["tick"]["ticks"] > 0
            api.post("/sessions/current/stop")
    finally:
        if learner is not None:
            _stop(learner)
        code = stop_daemon(daemon)
    assert code == 0, daemon.log_tail()
