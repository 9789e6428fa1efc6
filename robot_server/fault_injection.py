"""Rehearse device faults: `robot-server run --inject KIND@START[/EVERY]`.

Each kind is a decorator around a device interface, put in place once when the daemon builds its
devices, so nothing in the loop knows about injection; the daemon notices each fault through its
own paths (robot_server.device_watch) and GET /faults shows when.

    camera_stop        the first camera delivers no new frame for CAMERA_STOP_S, or until the
                       daemon resets it (which practice does after session.stale_pause_s)
    reflex             the arm's controller stops on a reflex and the arm's recovery state
                       machine (arm.recovery) takes it from there. sim: the sim controller stops,
                       as libfranka's does on a collision. franky on franka-sim: this process is
                       paused (SIGSTOP) for REFLEX_PAUSE_S, libfranka misses its 1 kHz cycles and
                       franka-sim aborts the motion with communication_constraints_violation, a
                       real reflex (a starved robot PC makes the same). franka-sim raises it only
                       when started with --enforce-comm-constraints; without, GET /faults shows
                       the reflex injected and never detected
    gripper_stuck      the gripper answers neither reads nor commands for GRIPPER_STUCK_S (franky:
                       on the gripper thread, reads block for libfranka's UDP timeout and then
                       fail, commands are held until the gripper answers again)
    spacemouse_unplug  the SpaceMouse (or, without one, the first teleop device) cannot be read
                       for UNPLUG_S: it reports a fault and drives nothing
    takeover           an operator takes the arm over for TAKEOVER_S, moving it sideways by
                       about TAKEOVER_OFFSET_M (alternately left and right), then lets go

Only with `arm.backend: sim`, or `franky` with `arm.host` on loopback (franka-sim; a real Franka is
never on loopback): on a real robot a rehearsed reflex would run real recovery moves and a stuck
gripper would be indistinguishable from a broken one, so the CLI refuses it.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arm.base import GripperNotAnswering
from camera.base import Camera, CameraStats, Frame
from robot_server.devices import Devices
from robot_server.faults import FaultKind, FaultLog
from robot_server.teleop import Teleop
from robot_server.teleop.mapping import TeleopEvent, motion_action
from spec.config import Config, is_loopback
from spec.step import ActionSpace

log = logging.getLogger(__name__)

CAMERA_STOP_S = 5.0
GRIPPER_STUCK_S = 3.0
UNPLUG_S = 3.0
TAKEOVER_S = 1.5
TAKEOVER_OFFSET_M = 0.06
REFLEX_PAUSE_S = 0.3  # franky: far more than the 20 lost 1 kHz cycles that make franka-sim's reflex
FRANKY_READ_TIMEOUT_S = 1.0  # libfranka's UDP receive timeout (franka::Network's default)

_SPEC = re.compile(r"^(?P<kind>[a-z_]+)@(?P<start>[0-9.]+)(?:/(?P<every>[0-9.]+))?$")


class InjectSpecError(ValueError):
    """A --inject value that does not parse; the message names it."""


@dataclass(frozen=True)
class InjectSpec:
    kind: FaultKind
    start_s: float  # after the control loop starts
    every_s: float | None = None  # then again every this many seconds

    @classmethod
    def parse(cls, text: str) -> InjectSpec:
        m = _SPEC.match(text.strip())
        kinds = ", ".join(k.value for k in FaultKind)
        if m is None:
            raise InjectSpecError(f"--inject {text!r}: expected KIND@START or KIND@START/EVERY (seconds), "
                                  f"KIND one of {kinds}")
        try:
            kind = FaultKind(m["kind"])
        except ValueError:
            raise InjectSpecError(f"--inject {text!r}: unknown fault kind {m['kind']!r} (one of {kinds})") from None
        try:
            start = float(m["start"])
            every = None if m["every"] is None else float(m["every"])
        except ValueError:
            raise InjectSpecError(f"--inject {text!r}: START and EVERY must be numbers of seconds") from None
        if every is not None and every <= 0:
            raise InjectSpecError(f"--inject {text!r}: EVERY must be above 0 seconds, got {m['every']}")
        return cls(kind, start, every)


def check_allowed(cfg: Config) -> None:
    """Injection rehearses faults on the sim arm or on franka-sim only (see the module docstring)."""
    arm = cfg.arm
    if arm.backend == "sim" or (arm.backend == "franky" and is_loopback(arm.host)):
        return
    raise InjectSpecError(
        f"--inject needs arm.backend: sim, or franky on franka-sim (arm.host on loopback); this config has "
        f"arm.backend: {arm.backend!r} with arm.host: {arm.host!r}: faults are rehearsed in a simulator, "
        "never injected into a real robot"
    )


# --------------------------------------------------------------------------------- decorators
class StoppingCamera(Camera):
    """A camera that can stop delivering frames: `read()` keeps returning the last frame (which
    ages, so the daemon sees it stale) until `resume_at` passes or the daemon resets the camera."""

    def __init__(self, inner: Camera) -> None:
        self.inner = inner
        self.name = inner.name
        self._frozen: Frame | None = None
        self._until = 0.0

    def stop_for(self, seconds: float) -> None:
        self._frozen = self.inner.read()
        self._until = time.monotonic() + seconds

    @property
    def stopped(self) -> bool:
        return time.monotonic() < self._until

    def connect(self) -> None:
        self.inner.connect()

    def read(self) -> Frame | None:
        return self._frozen if self.stopped else self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self._until = 0.0  # the restart brings the stopped device back
        self.inner.reset()

    @property
    def stats(self) -> CameraStats:
        return self.inner.stats

    def __getattr__(self, name: str) -> Any:  # device extras (e.g. a sim camera's render_pid)
        return getattr(self.inner, name)


class HangingGripper:
    """A gripper (sim.arm.SimGripper's interface) that can stop answering reads and commands."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._until = 0.0

    def hang_for(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def _check(self) -> None:
        if time.monotonic() < self._until:
            raise GripperNotAnswering("the gripper did not answer")

    def width(self) -> float:
        self._check()
        return self.inner.width()

    def command(self, closed: bool) -> bool:
        self._check()
        return self.inner.command(closed)


class HangingFrankyGripper:
    """A franky Gripper (as arm.gripper.GripperWorker uses it, on its own thread) that can stop
    answering the way libfranka sees a silent gripper: a `width` read blocks for libfranka's UDP
    timeout (FRANKY_READ_TIMEOUT_S), then fails; a command returns a future that is not done until
    the gripper answers again, when the command goes out (at the next read, or wait on it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._until = 0.0
        self._held: list[_HeldCommand] = []

    def hang_for(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def silent_for(self) -> float:
        return max(0.0, self._until - time.monotonic())

    @property
    def width(self) -> float:
        silent = self.silent_for()
        if silent > 0.0:
            time.sleep(min(silent, FRANKY_READ_TIMEOUT_S))
            if self.silent_for() > 0.0:
                raise GripperNotAnswering(f"libfranka: UDP receive: Timeout ({FRANKY_READ_TIMEOUT_S:g} s)")
        held, self._held = self._held, []
        for command in held:
            command.send()
        return self.inner.width

    @property
    def max_width(self) -> float:
        return self.inner.max_width

    def grasp_async(self, *args: Any, **kwargs: Any) -> Any:
        return self._command(lambda: self.inner.grasp_async(*args, **kwargs))

    def open_async(self, *args: Any, **kwargs: Any) -> Any:
        return self._command(lambda: self.inner.open_async(*args, **kwargs))

    def move_async(self, *args: Any, **kwargs: Any) -> Any:
        return self._command(lambda: self.inner.move_async(*args, **kwargs))

    def _command(self, issue: Callable[[], Any]) -> Any:
        if self.silent_for() <= 0.0:
            return issue()
        self._held.append(_HeldCommand(issue, self))
        return self._held[-1]

    def __getattr__(self, name: str) -> Any:  # the rest of franky's Gripper
        return getattr(self.inner, name)


class _HeldCommand:
    """The future (franky's `wait(timeout)`, `get()`) of a command given to a silent gripper: sent
    once the gripper answers again, then it is that command's own future."""

    def __init__(self, issue: Callable[[], Any], gripper: HangingFrankyGripper) -> None:
        self._issue = issue
        self._gripper = gripper
        self._future: Any = None

    def send(self) -> Any:
        if self._future is None:
            self._future = self._issue()
        return self._future

    def _sent(self, timeout: float | None) -> Any:
        if self._future is None:
            silent = self._gripper.silent_for()
            if timeout is not None and timeout < silent:
                time.sleep(max(0.0, timeout))
                return None
            time.sleep(silent)
        return self.send()

    def wait(self, timeout: float) -> bool:
        future = self._sent(timeout)
        return future is not None and bool(future.wait(timeout))

    def get(self) -> Any:
        return self._sent(None).get()


class UnpluggableTeleop:
    """A teleop device that can be unplugged: meanwhile it reports a fault and drives nothing."""

    def __init__(self, inner: Teleop) -> None:
        self.inner = inner
        self.name = inner.name
        self._until = 0.0

    def unplug_for(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    @property
    def unplugged(self) -> bool:
        return time.monotonic() < self._until

    def action(self) -> np.ndarray:
        return self.inner.action()

    def is_active(self) -> bool:
        return not self.unplugged and self.inner.is_active()

    def poll_events(self) -> list[TeleopEvent]:
        events = self.inner.poll_events()
        return [] if self.unplugged else events

    def sync_gripper(self, closed: bool) -> None:
        self.inner.sync_gripper(closed)

    def status(self) -> dict[str, object]:
        return {**self.inner.status(), "unplugged": self.unplugged}

    def fault(self) -> str | None:
        if self.unplugged:
            return f"{self.name}: read failed (device unplugged)"
        return self.inner.fault()

    def __getattr__(self, name: str) -> Any:  # device extras (a SpaceMouseReader's start/close/state)
        return getattr(self.inner, name)


class InjectedOperator:
    """An operator at a teleop device who takes over now and then, moving the arm sideways."""

    name = "operator"

    def __init__(self, space: ActionSpace) -> None:
        self.space = space
        self._until = 0.0
        self._motion = np.zeros(4)
        self._closed = False
        self._sign = 1.0

    def take_over_for(self, seconds: float) -> None:
        steps = max(1.0, seconds * 10.0)  # ticks at the daemon's usual 10 Hz
        speed = min(1.0, TAKEOVER_OFFSET_M / steps / self.space.cfg.max_translation_m)
        self._motion = np.array([0.0, self._sign * speed, 0.0, 0.0])
        self._sign = -self._sign  # the next takeover moves it back
        self._until = time.monotonic() + seconds

    def action(self) -> np.ndarray:
        return motion_action(self._motion, self._closed, self.space)

    def is_active(self) -> bool:
        return time.monotonic() < self._until

    def poll_events(self) -> list[TeleopEvent]:
        return []

    def sync_gripper(self, closed: bool) -> None:
        self._closed = bool(closed)

    def status(self) -> dict[str, object]:
        return {"active": self.is_active()}

    def fault(self) -> str | None:
        return None


# --------------------------------------------------------------------------------- the injector
class FaultInjector:
    """Puts the decorators in place (`wrap`), then fires each spec on its own thread (`start`)."""

    def __init__(self, specs: Sequence[InjectSpec], faults: FaultLog, space: ActionSpace,
                 arm_backend: str = "sim") -> None:
        self.specs = list(specs)
        self.faults = faults
        self.space = space
        self.arm_backend = arm_backend  # cfg.arm.backend: how a reflex is made, which gripper is wrapped
        self._fire: dict[FaultKind, tuple[str, Callable[[], None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def wrap(self, devices: Devices, teleops: list[Any]) -> list[Any]:
        """Decorate what the specs need; returns the teleop list to use (maybe with an operator)."""
        kinds = {s.kind for s in self.specs}
        if FaultKind.CAMERA_STOP in kinds:
            if not devices.cameras:
                raise InjectSpecError("--inject camera_stop: this config has no camera")
            name = next(iter(devices.cameras))
            cam = devices.cameras[name] = StoppingCamera(devices.cameras[name])
            self._fire[FaultKind.CAMERA_STOP] = (f"camera {name} stops for up to {CAMERA_STOP_S:g} s",
                                                 lambda: cam.stop_for(CAMERA_STOP_S))
        if FaultKind.REFLEX in kinds:
            self._fire[FaultKind.REFLEX] = self._reflex(devices)
        if FaultKind.GRIPPER_STUCK in kinds:
            hanging = HangingFrankyGripper if self.arm_backend == "franky" else HangingGripper
            grippers: list[HangingGripper | HangingFrankyGripper] = []

            def wrap(inner: Any) -> Any:  # at once on the sim, at each connect on franky
                grippers.append(hanging(inner))
                return grippers[-1]

            if not devices.arm.decorate_gripper(wrap):
                raise InjectSpecError("--inject gripper_stuck: this arm has no gripper")

            def hang() -> None:
                for gripper in grippers:
                    gripper.hang_for(GRIPPER_STUCK_S)

            self._fire[FaultKind.GRIPPER_STUCK] = (f"the gripper stops answering for {GRIPPER_STUCK_S:g} s", hang)
        teleops = list(teleops)
        if FaultKind.SPACEMOUSE_UNPLUG in kinds:
            if not teleops:
                raise InjectSpecError("--inject spacemouse_unplug: no teleop device")
            i = next((k for k, t in enumerate(teleops) if t.name == "spacemouse"), 0)
            device = teleops[i] = UnpluggableTeleop(teleops[i])
            self._fire[FaultKind.SPACEMOUSE_UNPLUG] = (f"{device.name} unplugged for {UNPLUG_S:g} s",
                                                       lambda: device.unplug_for(UNPLUG_S))
        if FaultKind.TAKEOVER in kinds:
            operator = InjectedOperator(self.space)
            teleops.insert(0, operator)  # first: an operator's hand wins over every other input
            self._fire[FaultKind.TAKEOVER] = (f"an operator takes over for {TAKEOVER_S:g} s",
                                              lambda: operator.take_over_for(TAKEOVER_S))
        return teleops

    def _reflex(self, devices: Devices) -> tuple[str, Callable[[], None]]:
        if self.arm_backend == "franky":
            return (f"this process pauses for {REFLEX_PAUSE_S:g} s: franka-sim stops the motion on a "
                    "communication reflex", lambda: pause_this_process(REFLEX_PAUSE_S))
        world = devices.world
        if world is None:
            raise InjectSpecError("--inject reflex: needs the sim world")
        return "the sim controller stops on a reflex", lambda: world.reflex("injected reflex")

    def start(self) -> None:
        if not self.specs:
            return
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def inject(self, kind: FaultKind) -> None:
        """Inject one fault of `kind` now (its decorator must be in place: a spec of that kind)."""
        if kind not in self._fire:
            raise KeyError(f"no {kind.value} decorator in place: start the daemon with --inject {kind.value}@...")
        detail, fire = self._fire[kind]
        # Recorded first: the daemon may notice the fault before this thread runs again.
        self.faults.injected(kind, detail)
        fire()
        self.fired += 1
        log.warning("injected fault %s: %s", kind.value, detail)

    def _run(self) -> None:
        t0 = time.monotonic()
        due = [(t0 + s.start_s, i, s) for i, s in enumerate(self.specs)]
        heapq.heapify(due)
        while due and not self._stop.is_set():
            at, i, spec = due[0]
            if self._stop.wait(max(0.0, at - time.monotonic())):
                return
            heapq.heappop(due)
            try:
                self.inject(spec.kind)
            except Exception:  # a failing injection must not end the rehearsal
                log.exception("injecting %s failed", spec.kind.value)
            if spec.every_s is not None:
                heapq.heappush(due, (at + spec.every_s, i, spec))


def pause_this_process(seconds: float) -> None:
    """Stop this whole process (SIGSTOP) for `seconds` from a helper process that then sends
    SIGCONT; returns when it runs again. This is how tests/franka_sim.py pauses a franky client to
    make franka-sim (with --enforce-comm-constraints) abort its motion: libfranka's thread misses
    its cycles, as on a starved robot PC."""
    if os.getpid() == 1:
        raise RuntimeError("this process is PID 1, which ignores SIGSTOP from inside its PID namespace (a "
                           "container without an init): run it with an init (compose `init: true`)")
    helper = subprocess.Popen(
        ["/bin/sh", "-c", 'kill -STOP "$1"; sleep "$2"; kill -CONT "$1"', "pause", str(os.getpid()), f"{seconds:g}"],
        stdin=subprocess.DEVNULL, start_new_session=True,  # its own session: never stopped with us
    )
    helper.wait(timeout=seconds + 30.0)
