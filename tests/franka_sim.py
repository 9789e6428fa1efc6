"""franka-sim for tests and benches: start the server from .venv-franka-sim, wait, always kill.

franka-sim (PyPI 1.1.7) is a MuJoCo server speaking the libfranka protocol on 127.0.0.1:1337
(gripper 1338). Its ports are fixed by the protocol and it takes one client at a time, so a file
lock serialises every user on this machine (parallel pytest runs, benches). It runs from its own
venv (it pins numpy 1.26 and mujoco < 3.3) made by scripts/setup_franka_sim.sh, with the offline
FR3 model that script builds (`FR3_MJCF`), and with every route to the network closed: its
default model would be fetched by `robot_descriptions` (a git clone), which hangs or fails here.

Also a small client program for the tests that must pause the client process (SIGSTOP) to
provoke a communication reflex: `python tests/franka_sim.py client SCENARIO` (see `client_main`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-franka-sim"
MODEL = VENV / "fr3_offline.xml"
HOST = "127.0.0.1"
PORT = 1337
GRIPPER_PORT = 1338
LOCK_PATH = Path(tempfile.gettempdir()) / "franka-sim-1337.lock"
READY_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 60.0  # below the tests' 120 s timeout: a clear error, not a kill

# Closed doors for anything that might try the network: proxies on the discard port refuse at
# once (no hang on a filtered route), git never prompts.
_OFFLINE_ENV = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "all_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/false",
    # One BLAS thread: the 1 kHz loop does 7x7 algebra; spinning BLAS workers would only eat the
    # second core of a 2-core CI box.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the process that started it dies.

    pytest-timeout's thread method ends pytest with os._exit, skipping fixture teardown; without
    this a server would outlive it and hold port 1337.
    """
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def missing_reason() -> str | None:
    """Why the franka-sim tests are skipped: only a missing venv (make test always creates it)."""
    if not (VENV / "bin" / "python").exists():
        return f"{VENV.name} is missing: run `bash scripts/setup_franka_sim.sh` (make test does)"
    return None


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class FrankaSimServer:
    """One franka-sim process. `start()` returns once `franka-sim-check` passed; `stop()` kills it."""

    def __init__(self, enforce_comm_constraints: bool = False, log_dir: Path | None = None) -> None:
        self.enforce_comm_constraints = enforce_comm_constraints
        self.log_path = Path(log_dir or tempfile.gettempdir()) / f"franka-sim-{os.getpid()}-{time.time_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock_file = None

    def start(self) -> FrankaSimServer:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        if not MODEL.is_file():  # a half-done setup is an error, not a reason to skip
            raise RuntimeError(f"the offline FR3 model {MODEL} is missing: run `bash scripts/setup_franka_sim.sh`")
        self._acquire_lock()
        try:
            for port in (PORT, GRIPPER_PORT):
                if port_in_use(port):
                    raise RuntimeError(
                        f"port {port} on {HOST} is already in use (a franka-sim not started by these "
                        "tests?): stop it and retry"
                    )
            enforce = "--enforce-comm-constraints" if self.enforce_comm_constraints else "--no-enforce-comm-constraints"
            cmd = [str(VENV / "bin" / "python"), "-m", "franka_sim.run_server", enforce, "--no-enforce-motion-limits"]
            env = {**os.environ, **_OFFLINE_ENV, "FR3_MJCF": str(MODEL)}
            for name in ("FRANKA_SIM_ENFORCE_COMM_CONSTRAINTS", "FRANKA_SIM_ENFORCE_MOTION_LIMITS"):
                env.pop(name, None)
            with open(self.log_path, "wb") as log_file:
                # A file, not a pipe: an unread pipe would block the server's 1 kHz threads.
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=env, cwd=str(VENV), start_new_session=True, preexec_fn=_die_with_parent,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _acquire_lock(self) -> None:
        self._lock_file = open(LOCK_PATH, "a+")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_file.close()
                    self._lock_file = None
                    raise TimeoutError(f"another franka-sim user held {LOCK_PATH} for {LOCK_TIMEOUT_S:g} s") from None
                time.sleep(0.2)

    def _wait_ready(self) -> None:
        check = VENV / "bin" / "franka-sim-check"
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"franka-sim exited with {self.proc.returncode} during start:\n{self.log_tail()}")
            probe = subprocess.run(
                [str(check), "--host", HOST, "--port", str(PORT), "--timeout", "5"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15,
            )
            if probe.returncode == 0:
                return
            last = (probe.stdout + probe.stderr).strip()
            time.sleep(0.2)
        raise TimeoutError(f"franka-sim not ready after {READY_TIMEOUT_S:g} s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # The ports are free once the process is gone; wait for that before the next server.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (port_in_use(PORT) or port_in_use(GRIPPER_PORT)):
            time.sleep(0.05)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def __enter__(self) -> FrankaSimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def franka_sim_server(enforce_comm_constraints: bool = False) -> Iterator[FrankaSimServer]:
    server = FrankaSimServer(enforce_comm_constraints)
    try:
        yield server.start()
    finally:
        server.stop()


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def franka_config(**arm_overrides: object):
    """configs/franka.yaml with `arm` fields overridden, e.g. recovery={"max_failures": 2}."""
    from spec.config import Config, load_config

    data = load_config(ROOT / "spec" / "configs" / "franka.yaml", env={}).model_dump()
    data["arm"] = _merge(data["arm"], arm_overrides)
    return Config.model_validate(data)


# -- the client process (for SIGSTOP tests) ---------------------------------------------------------


class ClientProcess:
    """`python tests/franka_sim.py client ...`, its JSON-lines stdout collected by a thread."""

    def __init__(self, seconds: float, max_failures: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "client", str(seconds), str(max_failures)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=str(ROOT), start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.events: list[dict] = []
        self._cursor = 0
        self._new = threading.Condition()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if text.startswith("{"):
                with self._new:
                    self.events.append(json.loads(text))
                    self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    def wait_event(self, *names: str, timeout: float) -> dict:
        """The next event named one of `names` after the last one returned (all stay in `events`)."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for i in range(self._cursor, len(self.events)):
                    event = self.events[i]
                    if event.get("event") == "error":
                        raise RuntimeError(f"client failed: {event}\n{self.stderr_tail()}")
                    if event.get("event") in names:
                        self._cursor = i + 1
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._new.wait(0.2)):
                    raise TimeoutError(
                        f"client sent no {names} event within {timeout:g} s (exit {self.proc.poll()}); "
                        f"events {[e.get('event') for e in self.events]}; stderr:\n{self.stderr_tail()}"
                    )
                self._new.wait(min(left, 0.5))

    def pause(self, seconds: float) -> None:
        """SIGSTOP the whole client (its libfranka thread too) for `seconds`, then SIGCONT."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr[-lines:])

    def close(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        return self.proc.returncode


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}, default=str), flush=True)


def client_main(argv: list[str]) -> int:
    """Drive a FrankyArm at 10 Hz for SECONDS and report what happens as JSON lines on stdout.

    `client SECONDS MAX_FAILURES`: go home, report `ready`, then stream a slow circle (a motion
    for a reflex to interrupt). Every mode change is reported; `recovered` when the arm is READY
    again after a reflex; `paused` (with help_request) when it pauses, after which it waits
    0.5 s and calls resume() like an operator; `done` at the end. The parent provokes the
    reflexes by pausing this process with SIGSTOP.
    """
    import logging

    import numpy as np

    from arm.base import ArmMode
    from arm.franky_driver import FrankyArm
    from spec.step import ActionSpace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    seconds, max_failures = float(argv[0]), int(argv[1])
    overrides = {"recovery": {"max_failures": max_failures, "window_s": 600.0, "retreat_m": 0.01}}
    cfg = franka_config(**overrides)
    arm = FrankyArm(cfg)
    arm.connect()
    try:
        space = ActionSpace(cfg.action, cfg.workspace)
        arm.go_home()
        deadline = time.monotonic() + 30.0
        while arm.read().mode is ArmMode.HOMING:
            if time.monotonic() > deadline:
                raise TimeoutError("go_home did not finish in 30 s")
            time.sleep(0.05)
        period, t0, k = 0.1, time.monotonic(), 0
        mode, was_recovering, paused_at = arm.read().mode, False, None
        _emit("ready", mode=mode)
        while time.monotonic() - t0 < seconds:
            state = arm.read()
            if state.mode is not mode:
                mode = state.mode
                _emit("mode", mode=mode, stats=arm.stats.as_dict())
                # PAUSED too: a fast recovery can go READY -> PAUSED -> READY between two reads.
                was_recovering = was_recovering or mode in (ArmMode.REFLEX, ArmMode.RECOVERING, ArmMode.PAUSED)
                if mode is ArmMode.READY and was_recovering:
                    was_recovering = False
                    _emit("recovered", stats=arm.stats.as_dict(), position=state.position.tolist())
                if mode is ArmMode.PAUSED:
                    paused_at = time.monotonic()
                    _emit("paused", help_request=arm.help_request(), stats=arm.stats.as_dict())
            if paused_at is not None and time.monotonic() - paused_at > 0.5:
                paused_at = None
                arm.resume()
                _emit("resume_called")
            if mode is ArmMode.READY:
                # A slow circle in y-z: keeps a motion streaming for the reflex to interrupt.
                dy = 0.004 * math.cos(0.5 * k)
                dz = 0.004 * math.sin(0.5 * k)
                arm.send_target(space.target(space.action_towards(np.array([0.0, dy, dz]), False), state))
            k += 1
            time.sleep(max(0.0, t0 + k * period - time.monotonic()))
        _emit("done", stats=arm.stats.as_dict(), mode=arm.read().mode, help_request=arm.help_request())
    except Exception as exc:
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        arm.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    raise SystemExit("usage: python tests/franka_sim.py client SECONDS MAX_FAILURES")
