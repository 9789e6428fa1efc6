"""Run `robot-server run` as a real subprocess for API and browser tests.

The daemon gets its own config (configs/sim.yaml with a private store, checkpoint dir, free
port and token), is waited for on /health, and is always killed afterwards: SIGTERM first (a
clean shutdown closes the store), then SIGKILL of its whole process group.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
SIM_CONFIG = REPO / "spec" / "configs" / "sim.yaml"
TOKEN = "test-token-0123456789"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a robot-server/learner child: none of this shell's ROBOT__ overrides
    (the test's config file says everything), offscreen rendering, unbuffered logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBOT__")}
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class DaemonProc:
    url: str
    port: int
    token: str
    workdir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen
    headers: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # extra `robot-server run` options, given again at a restart

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def store_path(self) -> Path:
        return self.workdir / "store.zarr"

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client for the daemon; `token=""` sends no Authorization header."""
        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_daemon(
    workdir: Path,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
    args: tuple[str, ...] = (),
) -> DaemonProc:
    """Start the sim daemon in `workdir` (with extra `robot-server run` options `args`) and return
    once /health answers 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tree = yaml.safe_load(SIM_CONFIG.read_text())
    tree = _merge(
        tree,
        {
            "store": {"path": str(workdir / "store.zarr")},
            "server": {"token": TOKEN, "checkpoint_dir": str(workdir / "policies"), "port": port},
            "control": {"status_line": False},
        },
    )
    tree = _merge(tree, overrides or {})
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    log_path = workdir / "daemon.log"

    d = DaemonProc(
        url=f"http://127.0.0.1:{port}",
        port=port,
        token=TOKEN,
        workdir=workdir,
        config_path=config_path,
        log_path=log_path,
        proc=_spawn(config_path, port, log_path, env, "wb", args),
        args=tuple(args),
    )
    try:
        _wait_healthy(d, timeout)
    except BaseException:
        stop_daemon(d)
        raise
    return d


def _spawn(config_path: Path, port: int, log_path: Path, env: Mapping[str, str] | None, mode: str,
           args: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "robot_server.cli", "run", "--config", str(config_path), "--port", str(port), *args]
    with open(log_path, mode) as log:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown can kill everything it spawned
        )


def restart_daemon(
    d: DaemonProc, env: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT_S
) -> DaemonProc:
    """Run `robot-server run` again with d's config, port and log (after it stopped or was killed),
    as a process supervisor would; returns once /health answers 200."""
    new = replace(d, proc=_spawn(d.config_path, d.port, d.log_path, env, "ab", d.args))
    try:
        _wait_healthy(new, timeout)
    except BaseException:
        stop_daemon(new)
        raise
    return new


def _wait_healthy(d: DaemonProc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not d.alive():
            raise RuntimeError(f"robot-server exited with {d.proc.returncode} before it was healthy:\n{d.log_tail()}")
        try:
            r = httpx.get(d.url + "/health", timeout=2.0)
            if r.status_code == 200 and r.json().get("ok"):
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"robot-server not healthy after {timeout:.0f} s ({last}):\n{d.log_tail()}")


def stop_daemon(d: DaemonProc, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, wait, then SIGKILL what is left of its process group; returns the daemon's exit code."""
    if d.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            d.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            d.proc.wait(timeout)
    # Anything it spawned (or the daemon itself, if it ignored SIGTERM) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(d.proc.pid, signal.SIGKILL)
    try:
        d.proc.wait(5.0)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(5.0)
    return d.proc.returncode


@contextlib.contextmanager
def running_daemon(workdir: Path, **kwargs: Any) -> Iterator[DaemonProc]:
    d = start_daemon(workdir, **kwargs)
    try:
        yield d
    finally:
        stop_daemon(d)


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def settled_position(client: httpx.Client, timeout: float = 5.0, tol_m: float = 5e-4) -> list[float]:
    """The arm's end-effector position once two reads 0.2 s apart agree within `tol_m`."""
    deadline = time.monotonic() + timeout
    last = client.get("/status").json()["arm"]["position"]
    while True:
        time.sleep(0.2)
        pos = client.get("/status").json()["arm"]["position"]
        if max(abs(a - b) for a, b in zip(pos, last, strict=True)) < tol_m:
            return pos
        if time.monotonic() > deadline:
            raise TimeoutError(f"the arm did not settle within {timeout} s (last {last}, now {pos})")
        last = pos
