"""A demonstration being recorded: by teleop (SpaceMouse or keyboard) or, in sim, by the scripted
expert, which starts from a freshly reset scene and ends by itself once the task is done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from arm.base import ArmMode, ArmState
from robot_server.modes import DemoSource, Stage
from robot_server.observation import Observation
from robot_server.tick import Decision, ModeContext
from spec.direction import Direction

DEMO_EXTRA_STEPS = 10  # keep recording a moment after success so the goal frames are plentiful


@dataclass
class Demo:
    ctx: ModeContext
    direction: Direction
    source: DemoSource
    max_steps: int
    steps: int = 0
    stage: Stage = Stage.RECORDING
    succeeded_at: int | None = None

    def begin(self) -> None:
        ctx = self.ctx
        if self.source == DemoSource.EXPERT:
            assert ctx.task is not None
            ctx.task.reset_scene(self.direction, ctx.rng)
            ctx.homing.start()
            self.stage = Stage.HOMING
        else:
            self._begin_recording()

    def tick(self, state: ArmState, obs: Observation | None) -> Decision:
        ctx = self.ctx
        if self.stage == Stage.HOMING:
            if not ctx.homing.done(state):
                return Decision(None, source="homing")
            self._begin_recording()
        if state.mode != ArmMode.READY or obs is None:
            return Decision(None)  # hold; the demo goes on when the arm and cameras are back
        if self.source == DemoSource.EXPERT:
            assert ctx.expert is not None
            action, src = ctx.expert.act(self.direction), "expert"
        else:
            tele = ctx.teleop.active()
            action = tele.action() if tele is not None else ctx.hold_action(state)
            src = f"teleop:{tele.name}" if tele is not None else "teleop:idle"
        self.steps += 1
        return Decision(np.asarray(action), record=True, source=src)

    def finished(self) -> bool | None:
        """After a recorded step: None to go on, else the demo is over and this is its success."""
        task = self.ctx.task
        if self.source == DemoSource.EXPERT and task is not None:
            if self.succeeded_at is None and task.success(self.direction):
                self.succeeded_at = self.steps
            if self.succeeded_at is not None and self.steps >= self.succeeded_at + DEMO_EXTRA_STEPS:
                return task.success(self.direction)
        if self.steps >= self.max_steps:
            return task.success(self.direction) if (task and self.source == DemoSource.EXPERT) else True
        return None

    def close(self, success: bool) -> None:
        if self.ctx.recorder is not None:
            self.ctx.recorder.end(success=success, end_reason="finished")

    def discard(self) -> None:
        if self.ctx.recorder is not None:
            self.ctx.recorder.discard()

    def abort(self, reason: str) -> None:
        if self.ctx.recorder is not None:
            self.ctx.recorder.end(success=False, end_reason=reason)

    def status(self) -> dict[str, Any]:
        return {"direction": self.direction, "source": self.source.value, "steps": self.steps,
                "stage": self.stage.value}

    def _begin_recording(self) -> None:
        recorder = self.ctx.recorder
        assert recorder is not None
        self.stage = Stage.RECORDING
        recorder.begin("demo", self.direction, {"source": self.source.value, "robot": self.ctx.cfg.robot})
