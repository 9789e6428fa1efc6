"""What every mode of the supervisor acts through (ModeContext) and returns each tick (Decision)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from arm.base import Arm, ArmMode, ArmState
from camera.base import Camera
from robot_server.events import Event, EventLog
from robot_server.help import HelpRequests, HelpSource
from robot_server.policy_slots import PolicySlots
from robot_server.recorder import Recorder
from robot_server.session import Intervention
from robot_server.teleop.arbiter import TeleopArbiter
from spec.config import Config
from spec.step import ActionSpace

HOMING_TIMEOUT_S = 60.0


class CommandError(Exception):
    """An operator command that does not fit the current state (HTTP 409)."""


class Task(Protocol):
    """The sim task (None on the robot, where no success test exists)."""

    def reset_scene(self, direction: str, rng: np.random.Generator) -> None: ...

    def success(self, direction: str) -> bool: ...

    def object_in_workspace(self) -> bool: ...


class Expert(Protocol):
    def act(self, direction: str) -> np.ndarray: ...


@dataclass
class Decision:
    action: np.ndarray | None  # None = hold position
    record: bool = False
    policy_version: int = -1
    intervention: bool = False
    source: str = "hold"


@dataclass
class Counters:
    """Operator-facing counts since the daemon started (/status, the page, /metrics)."""

    takeovers: int = 0
    manual_resets: int = 0
    operator_interventions: int = 0
    demos_recorded: int = 0  # last to change when a demo ends: other threads poll it, then read last_demo
    demos_discarded: int = 0
    estops: int = 0
    policy_errors: int = 0
    stale_camera_resets: int = 0  # cameras reset after frames stayed stale for session.stale_pause_s

    def as_dict(self) -> dict[str, int]:
        out = dict(self.__dict__)
        out["interventions"] = self.takeovers + self.manual_resets + self.operator_interventions
        return out


class Homing:
    """Sends the arm home and says when it is there; asks for help if it never arrives."""

    def __init__(self, arm: Arm, help: HelpRequests) -> None:
        self.arm = arm
        self.help = help
        self._since: float | None = None

    def start(self) -> None:
        self.arm.go_home()
        self._since = time.monotonic()

    def done(self, state: ArmState) -> bool:
        if state.mode == ArmMode.HOMING:
            if self._since is not None and time.monotonic() - self._since > HOMING_TIMEOUT_S:
                self.help.ask(HelpSource.HOMING, "the arm did not reach home")
            return False
        if state.mode != ArmMode.READY:
            return False
        self.help.resolve(HelpSource.HOMING)
        return True


@dataclass
class ModeContext:
    """The devices and bookkeeping a mode (practice, demo) acts through, shared by all modes."""

    cfg: Config
    arm: Arm
    recorder: Recorder | None
    policies: PolicySlots
    space: ActionSpace
    teleop: TeleopArbiter
    events: EventLog
    help: HelpRequests
    homing: Homing
    task: Task | None
    expert: Expert | None
    rng: np.random.Generator
    cameras: Mapping[str, Camera] = field(default_factory=dict)  # only to reset stuck ones
    counters: Counters = field(default_factory=Counters)

    def hold_action(self, state: ArmState) -> np.ndarray:
        """Stay where you are, keeping the gripper as it is."""
        a = np.zeros(self.space.dim, dtype=np.float32)
        a[-1] = 1.0 if state.gripper_closed else -1.0
        return a

    def intervention(self, iv: Intervention) -> dict[str, Any]:
        """Count and record an intervention: with the open segment (if any, at its step) and in the
        store's event log (always)."""
        record = iv.as_dict()
        if self.recorder is not None:
            self.recorder.event({"type": "intervention", **record})
        self.events.add(Event.INTERVENTION, **record)
        return record
