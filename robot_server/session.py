"""The practice schedule: forward and backward phases, arm-only homing, manual-reset interventions.

Pure bookkeeping with no I/O, so the rules of MEDALPP.md ("Switching, resets and interventions")
are testable on their own: alternate every `phase_steps`; at a switch to forward, a requested
manual reset is performed and counted as an intervention; every `home_every` steps the arm alone
goes home (checked at phase switches, so no segment is cut in the middle).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from robot_server.json_body import JsonBody
from spec.direction import Direction

PolicySource = Literal["learned", "random", "hold"]


class SessionParams(JsonBody):
    """What an operator (or `robot-server run --policy`) starts a session with."""

    policy: PolicySource = Field("learned", description="learned: the pushed policies (random until one arrives)")
    phase_steps: int | None = Field(None, ge=1, le=100_000, description="default: session.phase_steps")
    home_every: int | None = Field(None, ge=0, le=1_000_000, description="default: session.home_every")
    max_steps: int | None = Field(None, ge=1, le=100_000_000, description="stop after this many steps")
    start_direction: Direction = "forward"
    alternate: bool = Field(True, description="false: stay in start_direction")
    deterministic: bool = Field(False, description="act with the policy mean instead of sampling")
    reset_at_start: bool = Field(False, description="reset the scene before the first phase (sim)")
    home_at_start: bool = Field(True, description="send the arm home before the first phase")


class InterventionKind(StrEnum):
    OPERATOR = "operator"  # the operator says they stepped in (POST /interventions)
    TAKEOVER = "takeover"  # a teleop device overrode the policy
    MANUAL_RESET = "manual_reset"  # a person put the scene back at a switch to forward


@dataclass
class Intervention:
    kind: InterventionKind
    reason: str
    step: int | None  # session step (None outside a session)
    direction: str | None
    session: str | None
    wall_time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass
class Switch:
    """What happens between two phases."""

    direction: Direction
    manual_reset: Intervention | None  # the reset to perform first, counted as an intervention
    go_home: bool


class PracticeSchedule:
    def __init__(self, params: SessionParams, phase_steps: int, home_every: int) -> None:
        self.params = params
        self.id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.phase_steps = params.phase_steps or phase_steps
        self.home_every = home_every if params.home_every is None else params.home_every
        self.direction: Direction = params.start_direction
        self.phase = 0
        self.phase_step = 0
        self.total_steps = 0
        self.steps_since_home = 0
        self.homings = 0
        self.reset_requested: str | None = None
        self.interventions: list[Intervention] = []
        self.started_at = time.time()

    @property
    def done(self) -> bool:
        return self.params.max_steps is not None and self.total_steps >= self.params.max_steps

    @property
    def phase_over(self) -> bool:
        return self.phase_step >= self.phase_steps

    def count_step(self) -> None:
        self.phase_step += 1
        self.total_steps += 1
        self.steps_since_home += 1

    def request_reset(self, reason: str) -> None:
        self.reset_requested = reason or "operator requested a reset"

    def switch(self) -> Switch:
        """Move to the next phase and say what must happen first."""
        if self.params.alternate:
            self.direction = "backward" if self.direction == "forward" else "forward"
        self.phase += 1
        self.phase_step = 0
        manual = None
        if self.direction == "forward" and self.reset_requested is not None:
            manual = self.record_intervention(InterventionKind.MANUAL_RESET, self.reset_requested)
            self.reset_requested = None
        home = manual is not None or (self.home_every > 0 and self.steps_since_home >= self.home_every)
        if home:
            self.steps_since_home = 0
            self.homings += 1
        return Switch(direction=self.direction, manual_reset=manual, go_home=home)

    def record_intervention(self, kind: InterventionKind, reason: str) -> Intervention:
        iv = Intervention(kind=kind, reason=reason, step=self.total_steps, direction=self.direction, session=self.id)
        self.interventions.append(iv)
        return iv

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for iv in self.interventions:
            by_kind[iv.kind.value] = by_kind.get(iv.kind.value, 0) + 1
        return {
            "id": self.id,
            "params": self.params.model_dump(),
            "direction": self.direction,
            "phase": self.phase,
            "phase_step": self.phase_step,
            "phase_steps": self.phase_steps,
            "total_steps": self.total_steps,
            "steps_since_home": self.steps_since_home,
            "home_every": self.home_every,
            "homings": self.homings,
            "interventions": len(self.interventions),
            "interventions_by_kind": by_kind,
            "reset_requested": self.reset_requested,
            "started_at": self.started_at,
        }
