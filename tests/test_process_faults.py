"""Process faults between the daemon and the learner (issue 12, item 2).

A real sim daemon practises while a real learner (state mode, tiny networks) trains from the store
and pushes to it through a local TCP proxy, which lets the test see a push in flight and cut the
network. The learner is SIGKILLed ten times (mid-push, mid-save, at random), the daemon is killed
and restarted while the learner pushes, and the network is cut for a while. Throughout, the daemon
must keep ticking and answering, its policy versions must never go backwards, the store must stay
whole, and the learner must resume from its own training state and get its pushes through again.

The save test at the top is fast: it checks that a training-state save interrupted at any instant
leaves a state that loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from learner.state import latest, load_state
from policies.checkpoint import PolicyCheckpoint
from replay.store import ReplayReader
from tests.daemon_proc import (
    REPO,
    DaemonProc,
    child_environment,
    restart_daemon,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.random_demos import write_random_demos
from tests.tcp_proxy import PausableProxy

SAVE_LOOP = """
import os, sys, torch
os.nice(10)  # the test process checks the copies meanwhile: it goes first on a busy machine
from pathlib import Path
from learner.state import save_state
torch.manual_seed(0)
net = torch.nn.Linear(64, 64)
opt = torch.optim.Adam(net.parameters())
net(torch.ones(1, 64)).sum().backward()
opt.step()
for n in range(1, 10**9):
    with torch.no_grad():
        net.weight.fill_(n)
    save_state(Path(sys.argv[1]), {"net": net}, {}, {"net": opt}, {"n": n})
    if n == 1:
        print("saving", flush=True)
"""


def _unfinished_save(root: Path) -> bool:
    """A save was cut short: its temp dir is there, or a finished one LATEST does not name yet."""
    named = (root / "LATEST").read_text().strip() if (root / "LATEST").is_file() else ""
    return any(p.name.endswith(".tmp") or (p.name.isdigit() and p.name > named) for p in root.iterdir())


def _wait_stopped(pid: int) -> None:
    """Until the kernel has stopped the process (a signal is delivered asynchronously)."""
    stat = Path(f"/proc/{pid}/stat")
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 5, 0.001, what="SIGSTOP")


def test_a_save_cut_short_at_any_instant_leaves_a_state_that_loads(tmp_path):
    # A child saves its training state in a loop. At random instants it is frozen (SIGSTOP) and the
    # state directory is copied: exactly what a kill -9 at that instant would leave on disk (the
    # kernel completes a write in progress either way). Each copy must load, with no older counter
    # than the previous one. A last real SIGKILL ends it.
    root = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(root)], stdout=subprocess.PIPE, env=env)
    rng = random.Random(3)
    net, cut_short, last = torch.nn.Linear(64, 64), 0, 0
    try:
        assert proc.stdout.readline() == b"saving\n"
        for i in range(12):
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGSTOP)
            try:
                _wait_stopped(proc.pid)
                snap = tmp_path / f"snap{i}"
                shutil.copytree(root, snap)
            finally:
                proc.send_signal(signal.SIGCONT)
            cut_short += _unfinished_save(snap)
            directory = latest(snap)
            assert directory is not None, sorted(p.name for p in snap.iterdir())
            opt = torch.optim.Adam(net.parameters())
            n = load_state(directory, {"net": net}, {}, {"net": opt}, torch.device("cpu"))["n"]
            assert net.weight.eq(n).all() and n >= last
            last = n
    finally:
        proc.kill()
        proc.wait(10)
    assert cut_short >= 3  # most instants are inside a save: the check saw saves cut short
    assert load_state(latest(root), {"net": net}, {}, {"net": torch.optim.Adam(net.parameters())},
                      torch.device("cpu"))["n"] >= last


# --- the daemon, the learner and the network between them ---

OVERRIDES = {
    "session": {"phase_steps": 40, "home_every": 0},
    "server": {"body_timeout_s": 2.0},
    "learner": {
        "mode": "state",
        "setting": "sim",
        "network": {"preset": "tiny"},
        "device": "cpu",
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
        "push_timeout_s": 3.0,
        "push_retry_max_s": 2.0,
    },
}


START_S = 300.0  # a daemon starts in seconds, but a shared 2-core box can take minutes


class Rig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        write_random_demos(workdir / "store.zarr")
        self.run_dir = workdir / "learner"
        self.daemon: DaemonProc = start_daemon(workdir, overrides=OVERRIDES | {
            "learner": OVERRIDES["learner"] | {"run_dir": str(self.run_dir)}}, timeout=START_S)
        self.proxy = PausableProxy(self.daemon.port)
        self.learner: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def api(self) -> httpx.Client:
        return self.daemon.client(timeout=5.0)

    def practise(self) -> None:
        with self.api() as api:
            if not api.get("/status").json().get("session"):
                assert api.post("/sessions", json={"policy": "learned"}).status_code == 201

    def forward_above(self, version: int | None) -> bool:
        return (self.active()["forward"] or -1) > (version or -1)

    def active(self) -> dict[str, int | None]:
        with self.api() as api:
            body = api.get("/policies").json()
        return {d: None if body[d] is None else int(body[d]["version"]) for d in ("forward", "backward")}

    def start_learner(self) -> Path:
        log = self.workdir / f"learner-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.learner = subprocess.Popen(
                [sys.executable, "-m", "learner.cli", "run", "--config", str(self.daemon.config_path),
                 "--server", self.proxy.url, "--token", self.daemon.token, "--quiet"],
                cwd=REPO, env=child_environment({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return log

    def kill_learner(self) -> None:
        assert self.learner is not None and self.learner.poll() is None, self.log_tail()
        os.killpg(self.learner.pid, signal.SIGKILL)
        self.learner.wait(10)

    def log_tail(self) -> str:
        return self.logs[-1].read_text(errors="replace")[-3000:] if self.logs else "(no learner)"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    def saved_updates(self) -> dict[str, int] | None:
        directory = latest(self.state_dir)
        if directory is None:
            return None
        counters = json.loads((directory / "counters.json").read_text())
        return {d: int(a["updates"]) for d, a in counters["agents"].items()}

    def close(self) -> None:
        if self.learner is not None and self.learner.poll() is None:
            os.killpg(self.learner.pid, signal.SIGKILL)
            self.learner.wait(10)
        stop_daemon(self.daemon)
        self.proxy.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("faults"))
    try:
        r.practise()
        yield r
    finally:
        r.close()


class Monitor:
    """Polls the daemon's /status every 0.2 s in a thread: ticks, active versions, the learner's report."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.samples: list[tuple[float, int, int, int, dict | None]] = []  # (t, ticks, fwd, bwd, learner)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self.rig.api() as api:
            while not self._stop.wait(0.2):
                try:
                    st = api.get("/status").json()
                except (httpx.HTTPError, ValueError) as exc:
                    self.errors.append(repr(exc))
                    continue
                p = st["policies"]
                self.samples.append((time.monotonic(), st["tick"]["ticks"], (p["forward"] or {}).get("version", -1),
                                     (p["backward"] or {}).get("version", -1), st["learner"]))

    def check(self) -> None:
        assert self.errors == [] and len(self.samples) > 10
        t, ticks, fwd, bwd = (np.array([s[i] for s in self.samples], float) for i in range(4))
        # The daemon never stopped ticking: the tick count never stood still for 1.5 s.
        changes = t[np.flatnonzero(np.diff(ticks) > 0) + 1]
        assert np.max(np.diff(np.concatenate([[t[0]], changes, [t[-1]]]))) < 1.5
        assert np.all(np.diff(fwd) >= 0) and np.all(np.diff(bwd) >= 0)  # versions never went backwards


def _resumed_updates(log: Path) -> dict[str, int]:
    m = re.search(r"resumed from .*?: updates \{'forward': (\d+), 'backward': (\d+)\}", log.read_text())
    assert m is not None
    return {"forward": int(m.group(1)), "backward": int(m.group(2))}


def _check_store(store: Path) -> None:
    """No gap, no corrupt episode: practice episodes are numbered without holes, every array of
    every step reads back, steps follow each other at the control rate within and across
    episodes, and the policy versions acting in each direction only ever rise."""
    reader = ReplayReader(store)
    practice = [e for e in reader.episodes(include_open=True) if e.kind == "practice"]
    ids = [int(e.id) for e in practice]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    last_t = None
    versions: dict[str, list[np.ndarray]] = {"forward": [], "backward": []}
    for e in practice:
        data = reader.read(e.id)
        n = len(data["timestamp"])  # the open episode may have grown since it was listed
        assert all(len(v) == n for v in data.values()) and n >= e.length and (n > 0 or not e.closed)
        if n == 0:
            continue
        ts = np.concatenate([[last_t], data["timestamp"]]) if last_t is not None else data["timestamp"]
        assert np.all(np.diff(ts) > 0) and np.max(np.diff(ts)) < 3.0, e.id
        last_t = data["timestamp"][-1]
        versions[e.direction].append(data["policy_version"][data["policy_version"] >= 0])
    for d, v in versions.items():
        assert np.all(np.diff(np.concatenate(v)) >= 0), d


@pytest.mark.slow
@pytest.mark.timeout(1800)  # eleven learner starts: each imports torch, ~5 s alone, far more on a shared box
def test_learner_killed_ten_times_the_daemon_practises_on_and_the_learner_resumes(rig: Rig):
    rng = random.Random(12)
    kills = {"push": 0, "save": 0}
    with Monitor(rig) as mon:
        rig.start_learner()
        wait_for(lambda: rig.active()["forward"] is not None and rig.saved_updates(), 300, 0.5,
                 what=f"a pushed policy and a saved state\n{rig.log_tail()}")
        for i, moment in enumerate(["push", "save", "random"] * 3 + ["push"]):
            if moment == "push":
                rig.proxy.push_started.clear()
                wait_for(rig.proxy.push_started.is_set, 120, 0.001, what=f"a push\n{rig.log_tail()}")
            elif moment == "save":
                # Saves are short: catch one as its temp directory appears, or give up and kill anyway.
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: _unfinished_save(rig.state_dir), 20, 0.001)
            else:
                time.sleep(rng.uniform(0.2, 3.0))
            mid_push = rig.proxy.in_flight > 0
            rig.kill_learner()
            kills["push"] += mid_push
            kills["save"] += _unfinished_save(rig.state_dir)
            saved = rig.saved_updates()

            # While no learner runs, the daemon keeps the last good policy (once a push the proxy had
            # passed on before the kill is through), and shows the learner's silence.
            time.sleep(2.0)
            down = rig.active()
            time.sleep(1.5)
            assert rig.active() == down
            with rig.api() as api:
                assert api.get("/status").json()["learner"]["age_s"] >= 1.5

            log = rig.start_learner()
            wait_for(lambda log=log: "resumed from" in log.read_text(), 120, 0.2, what=f"resume #{i}\n{rig.log_tail()}")
            assert _resumed_updates(log) == saved  # the state on disk at the kill loaded, not a fresh start
        # The tenth learner takes over: versions go on rising (not from zero), and it reports its backlog.
        before = rig.active()
        wait_for(lambda: rig.forward_above(before["forward"]), 180, 0.5,
                 what=f"a newer policy from the last learner\n{rig.log_tail()}")
        wait_for(lambda: (mon.samples[-1][4] or {}).get("age_s", 99) < 10, 30, 0.5, what="a fresh learner report")
        report = mon.samples[-1][4]
        assert set(report["behind_steps"]) == {"forward", "backward"} and report["capacity"] == 5000
        assert all(v >= 0 for v in report["dropped"].values())
    mon.check()
    assert kills["push"] >= 3, kills
    assert kills["save"] >= 1, kills
    _check_store(rig.daemon.store_path)


@pytest.mark.slow
def test_daemon_killed_mid_push_comes_back_with_its_policies_and_pushes_go_through(rig: Rig):
    if rig.learner is None or rig.learner.poll() is not None:
        rig.start_learner()
    wait_for(lambda: rig.active()["forward"] is not None, 300, 0.5, what=f"a pushed policy\n{rig.log_tail()}")
    rig.proxy.push_started.clear()
    wait_for(rig.proxy.push_started.is_set, 120, 0.001, what=f"a push\n{rig.log_tail()}")
    os.killpg(rig.daemon.proc.pid, signal.SIGKILL)
    rig.daemon.proc.wait(10)
    stored = {d: rig.workdir / "policies" / f"{d}.safetensors" for d in ("forward", "backward")}
    persisted = {d: PolicyCheckpoint.from_bytes(p.read_bytes()).version if p.is_file() else None
                 for d, p in stored.items()}
    log = rig.logs[-1]
    failures = log.read_text().count("will retry")
    time.sleep(4)  # the learner's pushes fail meanwhile, and it retries
    assert rig.learner.poll() is None, rig.log_tail()
    assert log.read_text().count("will retry") > failures

    rig.daemon = restart_daemon(rig.daemon, timeout=START_S)
    assert rig.active() == persisted  # the restarted daemon acts with the last policies it accepted
    rig.practise()
    wait_for(lambda: rig.forward_above(persisted["forward"]), 120, 0.5,
             what=f"a push accepted by the restarted daemon\n{rig.log_tail()}")
    assert rig.learner.poll() is None


@pytest.mark.slow
def test_network_cut_both_sides_carry_on_and_pushes_resume(rig: Rig):
    if rig.learner is None or rig.learner.poll() is not None:
        rig.start_learner()
    rig.practise()
    log = rig.logs[-1]
    before = rig.active()
    wait_for(lambda: rig.forward_above(before["forward"]) and rig.saved_updates(), 300, 0.5,
             what=f"a push and a saved state\n{rig.log_tail()}")
    with Monitor(rig) as mon:
        saved0, failures = rig.saved_updates(), log.read_text().count("will retry")
        rig.proxy.cut()
        time.sleep(2.0)  # a push the proxy passed on just before the cut completes on the daemon
        v0 = rig.active()
        time.sleep(8.0)  # a 10 s cut is as good as a minute: every wait of a push times out after 3 s
        assert rig.active() == v0  # nothing got through; the daemon acts with what it had
        saved1 = rig.saved_updates()
        assert sum(saved1.values()) > sum(saved0.values())  # the learner kept training
        assert log.read_text().count("will retry") > failures
        rig.proxy.restore()
        wait_for(lambda: rig.forward_above(v0["forward"]), 60, 0.5,
                 what=f"a push after the cut\n{rig.log_tail()}")
    mon.check()
    assert rig.learner.poll() is None

    # A push cut off mid-upload does not hold the daemon: after server.body_timeout_s it answers 408;
    # one whose sender vanishes is noted in a line, not a server error's traceback.
    head = (b"PUT /policies/forward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + rig.daemon.token.encode()
            + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 100)
    with socket.create_connection(("127.0.0.1", rig.daemon.port), timeout=10) as s:
        s.sendall(head)
        t0 = time.monotonic()
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 8, answer[:200]
    with socket.create_connection(("127.0.0.1", rig.daemon.port), timeout=10) as s:
        s.sendall(head)
        time.sleep(0.5)
    wait_for(lambda: "upload broken off after 100 bytes" in rig.daemon.log_tail(400), 10, 0.2, what="the note")
    assert "Traceback" not in rig.daemon.log_path.read_text(errors="replace")
