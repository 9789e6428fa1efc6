"""A fleet on an object store: two sim daemons write s3://fleet/robot-a and robot-b on moto's server
(a real HTTP server in a subprocess), one learner tails both and pushes both their policies. robot-b's
daemon is killed -9 mid-run and restarted: nothing it reported committed is lost, nothing is corrupt,
the learner keeps training on robot-a meanwhile and robot-b gets policies again after its restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from replay.store import ReplayReader
from tests.daemon_proc import REPO, child_environment, restart_daemon, start_daemon, stop_daemon, wait_for
from tests.random_demos import write_random_demos
from tests.s3_server import s3_server
from tests.test_process_faults import OVERRIDES, START_S

BUCKET = "fleet"
# Every commit is a PUT per array plus the record, and moto's server on a loaded 2-core box answers
# a few dozen requests a second (bench/s3_store.py): 80-step phases committed every 40 steps keep two
# robots' writes well below that, so the learner's reads are not queued behind them.
CHUNK_STEPS = 40
SESSION = OVERRIDES["session"] | {"phase_steps": 80}
pytestmark = pytest.mark.timeout(600)


def _active(d) -> dict[str, int | None]:
    with d.client(timeout=5.0) as api:
        body = api.get("/policies").json()
    return {k: None if body[k] is None else int(body[k]["version"]) for k in ("forward", "backward")}


def _practise(d) -> None:
    with d.client(timeout=5.0) as api:
        if not api.get("/status").json().get("session"):
            assert api.post("/sessions", json={"policy": "learned"}).status_code == 201


def _committed(d, open_only: bool = False) -> dict[str, int]:
    """Steps the daemon says are committed, per episode id (GET /episodes reads its own store);
    `open_only`: only the episodes still open."""
    with d.client(timeout=5.0) as api:
        r = api.get("/episodes", params={"include_open": True})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["episodes"] if isinstance(body, dict) else body
    return {e["id"]: int(e["length"]) for e in rows if not (open_only and e.get("closed"))}


def test_two_robots_on_s3_one_learner_one_daemon_killed_and_restarted(tmp_path: Path, monkeypatch) -> None:
    with s3_server(tmp_path / "moto.log") as s3:
        s3.create_bucket(BUCKET)
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        urls = {name: f"s3://{BUCKET}/{name}" for name in ("robot-a", "robot-b")}
        daemons: dict = {}
        try:
            for url in urls.values():
                write_random_demos(url)  # successful demos, so the classifiers have positives

            def start(name: str):
                store = {"path": urls[name], "endpoint_url": s3.endpoint_url, "lock_lease_s": 6.0,
                         "chunk_steps": CHUNK_STEPS}
                return start_daemon(tmp_path / name, overrides=OVERRIDES | {"store": store, "session": SESSION},
                                    env=s3.env(), timeout=START_S)

            with ThreadPoolExecutor(2) as pool:  # both start at once: a sim daemon takes a minute here
                futures = {name: pool.submit(start, name) for name in urls}
                for name, f in futures.items():
                    daemons[name] = f.result()
            for d in daemons.values():
                _practise(d)
            cfg = yaml.safe_load(daemons["robot-a"].config_path.read_text())
            cfg["learner"]["run_dir"] = str(tmp_path / "learner")
            cfg["learner"]["robots"] = [
                {"name": name, "store": {"path": urls[name], "endpoint_url": s3.endpoint_url},
                 "server_url": d.url, "token": d.token}
                for name, d in daemons.items()
            ]
            learner_cfg = tmp_path / "learner.yaml"
            learner_cfg.write_text(yaml.safe_dump(cfg))
            log = tmp_path / "learner.log"
            with open(log, "wb") as out:
                learner = subprocess.Popen(
                    [sys.executable, "-m", "learner.cli", "run", "--config", str(learner_cfg), "--quiet"],
                    cwd=REPO, env=child_environment({**s3.env(), "OMP_NUM_THREADS": "1"}),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            try:
                tail = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731
                for d in daemons.values():
                    wait_for(lambda d=d: _active(d)["forward"] is not None, 180, 0.5,
                             what="a first policy on each robot")  # (the learner log: see below on failure)
                # kill -9 robot-b mid-run, after noting what it reported committed.
                b = daemons["robot-b"]
                before = _committed(b)
                open_at_kill = {k: n for k, n in _committed(b, open_only=True).items() if n > 0}
                assert sum(before.values()) > 0
                os.killpg(b.proc.pid, signal.SIGKILL)
                b.proc.wait(10)
                a_version = _active(daemons["robot-a"])["forward"]
                # robot-a keeps getting newer policies while robot-b is down.
                wait_for(lambda: (_active(daemons["robot-a"])["forward"] or -1) > a_version, 120, 0.5,
                         what="robot-a policies while robot-b is down")
                daemons["robot-b"] = b = restart_daemon(b, env=s3.env(), timeout=START_S)
                _practise(b)
                wait_for(lambda: _active(b)["forward"] is not None, 120, 0.5, what="a policy on restarted robot-b")
                assert learner.poll() is None, tail()
            finally:
                if learner.poll() is None:
                    learner.send_signal(signal.SIGTERM)
                    try:
                        learner.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(learner.pid, signal.SIGKILL)
                        learner.wait(10)
            text = log.read_text(errors="replace")
            for name in urls:
                assert f"robot {name}" not in text or "left out" not in text, text[-3000:]
        finally:
            for d in daemons.values():
                stop_daemon(d)
        # Every step robot-b reported committed before the kill is there, whole.
        rb = ReplayReader(urls["robot-b"])
        after = {e.id: e for e in rb.episodes(include_open=True)}
        for ep_id, n in before.items():
            if n == 0:  # opened, no step committed yet: the writer's repair rightly removes it
                continue
            assert ep_id in after and after[ep_id].length >= n, (ep_id, n, after.get(ep_id))
        # An episode open with committed steps at the kill is closed by the repair as writer_crashed
        # (one opened with none yet is removed instead).
        if open_at_kill:
            assert any(after[k].attrs.get("end_reason") == "writer_crashed" for k in open_at_kill if k in after)
        for r in (rb, ReplayReader(urls["robot-a"])):
            for info in r.episodes():
                data = r.read(info.id, ["timestamp", "action"])
                assert len(data["timestamp"]) == info.length
                assert np.all(np.diff(data["timestamp"]) > 0), f"{r.path} {info.id}: timestamps out of order"
                assert np.all(data["timestamp"] > 0), f"{r.path} {info.id}: a step never written (zeros)"
        # The learner trained on both robots' steps: its saved state lists what it ingested per robot.
        import json

        states = sorted((tmp_path / "learner" / "state").glob("*/counters.json"))
        assert states, text[-3000:]
        ingested = json.loads(states[-1].read_text())["ingested"]
        assert set(ingested) == set(urls) and all(ingested[n] for n in urls), ingested
