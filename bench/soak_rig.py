"""The processes bench/soak.py runs and breaks: the sim daemon (practising at once), the learner
talking to it through a TCP proxy that can cut the network, and the accounting of every daemon
instance's steps (how many it took, how many reached the store)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.soak_probe import CommittedSteps
from robot_server.demo import LEARNER_NICENESS, LEARNER_THREADS
from tests.daemon_proc import REPO, DaemonProc, child_environment, restart_daemon, start_daemon, stop_daemon
from tests.random_demos import write_random_demos
from tests.tcp_proxy import PausableProxy

DIRECTIONS = ("forward", "backward")
START_S = 300.0  # a daemon starts in seconds, but a shared 2-core box can take minutes


class InjectRejected(RuntimeError):
    """`robot-server run` does not know --inject (the device-fault injection option is not merged)."""


@dataclass
class Instance:
    """One run of the daemon process, from spawn to its end."""

    pid: int
    spawned: float  # monotonic, just before the spawn: its steps are stamped later
    ended: float | None = None
    end_signal: str | None = None
    produced: int | None = None  # steps it took: appended + queued at its last status read
    committed: int | None = None  # its steps found in the store after it ended
    lost: int | None = None


def learner_overrides(run_dir: Path, capacity: int) -> dict[str, Any]:
    """State mode with tiny networks (a CPU trains it beside the 10 Hz loop), pushing every few
    seconds so every fault meets a push soon; rings of `capacity` steps fill within the first minutes,
    so the learner's RSS after that is not buffer growth."""
    return {
        "learner": {
            "mode": "state", "setting": "sim", "network": {"preset": "tiny"}, "device": "cpu",
            "run_dir": str(run_dir), "seed_steps": 100, "batch_size": 64, "demo_rows": 8, "bc_batch_size": 8,
            "clf_batch_size": 32, "capacity": capacity, "push_every": 20, "save_every": 50,
            "clf_forward_every": 40, "clf_backward_every": 20, "poll_s": 1.0,
            "push_timeout_s": 3.0, "push_retry_max_s": 5.0,
        },
        "server": {"body_timeout_s": 5.0},
    }


class LogWatch:
    """Counts a pattern in a growing log file, reading only what was appended since the last look."""

    def __init__(self, path: Path, pattern: str) -> None:
        self.path, self.regex = path, re.compile(pattern)
        self.offset, self.count = 0, 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        cut = data.rfind(b"\n") + 1  # a half-written last line is read next time
        self.offset += cut
        self.count += len(self.regex.findall(data[:cut].decode(errors="replace")))
        return self.count


class Rig:
    def __init__(self, workdir: Path, inject: list[str], capacity: int, realtime_priority: int = 0) -> None:
        self.workdir = workdir
        self.run_dir = workdir / "learner"
        write_random_demos(workdir / "store.zarr")
        self.steps = CommittedSteps(workdir / "store.zarr")
        self.lock = threading.Lock()  # the sampler thread and the fault driver share the store counter
        self.instances: list[Instance] = []
        self.learner: subprocess.Popen | None = None
        self.learner_logs: list[Path] = []
        self.device_faults: dict[tuple[str, float], dict] = {}  # (kind, injected_at) -> newest record
        args = tuple(a for spec in inject for a in ("--inject", spec)) + ("--policy", "learned")
        spawned = time.monotonic()
        try:
            # In the config file, not the environment: children get none of this shell's ROBOT__ vars.
            overrides = learner_overrides(self.run_dir, capacity) | {"control": {"realtime_priority": realtime_priority}}
            self.daemon: DaemonProc = start_daemon(workdir, overrides=overrides, timeout=START_S, args=args)
        except RuntimeError as exc:
            if inject and "--inject" in str(exc):
                raise InjectRejected(str(exc)) from None
            raise
        self.instances.append(Instance(self.daemon.proc.pid, spawned))
        self.proxy = PausableProxy(self.daemon.port)

    # --- the daemon's API ---
    def api(self, timeout: float = 5.0) -> httpx.Client:
        return self.daemon.client(timeout=timeout)

    def status(self) -> dict | None:
        try:
            with self.api() as api:
                r = api.get("/status")
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def versions(self) -> dict[str, int] | None:
        """Active policy version per direction (-1: none), or None while the daemon does not answer."""
        try:
            with self.api() as api:
                body = api.get("/policies").json()
        except (httpx.HTTPError, ValueError):
            return None
        return {d: -1 if body.get(d) is None else int(body[d]["version"]) for d in DIRECTIONS}

    def read_device_faults(self) -> list[dict] | None:
        """GET /faults, merged into everything seen so far (a restarted daemon starts a new list)."""
        try:
            with self.api() as api:
                r = api.get("/faults")
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            raise RuntimeError(f"GET /faults answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        records = body.get("faults", body) if isinstance(body, dict) else body
        for rec in records:
            self.device_faults[(rec["kind"], float(rec["injected_at"]))] = rec
        return records

    # --- the learner ---
    def start_learner(self) -> Path:
        log = self.workdir / f"learner-{len(self.learner_logs)}.log"
        self.learner_logs.append(log)
        with open(log, "wb") as out:
            self.learner = subprocess.Popen(
                [sys.executable, "-m", "learner.cli", "run", "--config", str(self.daemon.config_path),
                 "--server", self.proxy.url, "--token", self.daemon.token, "--quiet"],
                cwd=REPO, env=child_environment(LEARNER_THREADS), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: os.nice(LEARNER_NICENESS),  # as `make demo` runs it beside the loop
            )
        return log

    def kill_learner(self) -> None:
        assert self.learner is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.learner.pid, signal.SIGKILL)
        self.learner.wait(10)

    # --- the daemon process ---
    def end_daemon(self, sig: signal.Signals) -> Instance:
        """Stop the daemon with SIGKILL (its whole process group, as a crash would) or SIGTERM (a clean
        stop), then count the steps it took against the steps of it the store holds."""
        inst = self.instances[-1]
        self.read_device_faults_quietly()  # its ledger goes with it
        st = self.status()  # read just before the signal: its counters are the steps taken
        t_read = time.monotonic()
        if sig == signal.SIGKILL:
            os.killpg(self.daemon.proc.pid, signal.SIGKILL)
            self.daemon.proc.wait(10)
        else:
            stop_daemon(self.daemon)
        inst.end_signal = sig.name
        inst.ended = time.monotonic()
        if st is not None and inst.ended - t_read < 1.0 or sig == signal.SIGTERM:
            # Steps the writer thread took plus its queue (which also holds segment boundaries, so this
            # errs high). A SIGKILL misses a tick between the read and the signal (errs low, <= 1
            # step); after a SIGTERM the store holds every step, including those after the read.
            store = (st or {}).get("store")
            if store is not None:
                inst.produced = int(store["steps_written"]) + int(store["backlog"])
        with self.lock:
            inst.committed = self.steps.between(inst.spawned)
        if inst.produced is not None:
            inst.lost = max(0, inst.produced - inst.committed)
        return inst

    def read_device_faults_quietly(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.read_device_faults()

    def restart_daemon(self) -> float:
        spawned = time.monotonic()
        self.daemon = restart_daemon(self.daemon, timeout=START_S)
        self.instances.append(Instance(self.daemon.proc.pid, spawned))
        return time.monotonic()

    def committed_total(self) -> int:
        with self.lock:
            return len(self.steps.timestamps())

    def close(self) -> None:
        if self.learner is not None and self.learner.poll() is None:
            self.kill_learner()
        if self.daemon.alive():
            self.end_daemon(signal.SIGTERM)
        self.proxy.close()
