"""The arm interface every backend implements (franky on hardware or franka-sim, MuJoCo `sim`).

Only the control thread calls these methods. `read()` and `send_target()` must return within a
few milliseconds; motions (a target, going home, the gripper) run asynchronously.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spec.clock import now
from spec.step import ArmMode, ArmState, ArmTarget

__all__ = ["Arm", "ArmMode", "ArmState", "ArmStats", "ArmTarget", "GripperNotAnswering"]


class GripperNotAnswering(TimeoutError):
    """A gripper that did not answer a read or a command (it may again later)."""


@dataclass
class ArmStats:
    targets: int = 0
    reflexes: int = 0
    recoveries: int = 0
    failed_recoveries: int = 0
    homings: int = 0
    gripper_answered_at: float | None = None  # spec.clock.now() of the gripper's last answer
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "targets": self.targets,
            "reflexes": self.reflexes,
            "recoveries": self.recoveries,
            "failed_recoveries": self.failed_recoveries,
            "homings": self.homings,
            "gripper_age_s": None if self.gripper_answered_at is None else round(now() - self.gripper_answered_at, 3),
            "last_error": self.last_error,
        }


class Arm(abc.ABC):
    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> ArmState:
        """Current state; fast and non-blocking. Also advances any recovery state machine."""

    @abc.abstractmethod
    def send_target(self, target: ArmTarget) -> None:
        """Start tracking `target`; returns at once. Ignored unless the mode is READY."""

    @abc.abstractmethod
    def go_home(self) -> None:
        """Start moving to the home joint pose; `read().mode` is HOMING until it arrives."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Halt all motion now and enter STOPPED (emergency stop)."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Leave STOPPED or PAUSED (operator decision) and accept targets again."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def stats(self) -> ArmStats: ...

    def help_request(self) -> str | None:
        """Why the arm needs the operator (e.g. paused after repeated reflexes), or None."""
        return None

    def decorate_gripper(self, wrap: Callable[[Any], Any]) -> bool:
        """Talk to the gripper through `wrap(gripper)` from now on, and again after every connect
        (e.g. a fault-rehearsal decorator); False if this arm has no gripper of its own. The gripper
        keeps its backend's interface (sim.arm.SimGripper, franky.Gripper): `wrap` must too."""
        return False
