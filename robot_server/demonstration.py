"""A demonstration being recorded: by teleop (SpaceMouse or keyboard) or, in sim, by the scripted
expert, which starts from a freshly reset scene and ends by itself once the task is done.

A successful demo ends only after its goal has been held GOAL_HOLD_STEPS consecutive recorded
steps (spec.goal): the learner takes that many last frames as goal positives, so none of them may
show anything but the goal. In sim the task's success test counts the hold. On the robot, where no
success test exists, the operator's "success" starts a hold of GOAL_HOLD_STEPS steps with the arm
still. During a hold the arm is held (teleop) or the expert goes on (it holds still at the goal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arm.base import ArmMode, ArmState
from robot_server.modes import DemoSource, Stage
from robot_server.observation import Observation, Stale
from robot_server.stale import StaleFrames
from robot_server.tick import CommandError, Decision, ModeContext
from spec.direction import Direction
from spec.goal import GOAL_HOLD_STEPS


@dataclass
class Demo:
    ctx: ModeContext
    direction: Direction
    source: DemoSource
    max_steps: int
    steps: int = 0
    stage: Stage = Stage.RECORDING
    held: int = 0  # consecutive recorded steps at the goal (sim), or of the hold so far (robot)
    frames: StaleFrames = field(init=False)

    def __post_init__(self) -> None:
        self.frames = StaleFrames(self.ctx, None)

    def begin(self) -> None:
        ctx = self.ctx
        if self.source == DemoSource.EXPERT:
            assert ctx.task is not None
            ctx.task.reset_scene(self.direction, ctx.rng)
            ctx.homing.start()
            self.stage = Stage.HOMING
        else:
            self._begin_recording()

    @property
    def hold_steps_left(self) -> int:
        return max(0, GOAL_HOLD_STEPS - self.held)

    def tick(self, state: ArmState, obs: Observation | None, stale: Stale | None) -> Decision:
        ctx = self.ctx
        if self.stage == Stage.HOMING:
            if not ctx.homing.done(state):
                return Decision(None, source="homing")
            self._begin_recording()
        if state.mode != ArmMode.READY:
            return Decision(None)  # hold; the demo goes on when the arm is back
        if obs is None:
            assert stale is not None
            # Hold and store nothing; the demo goes on at the next fresh frame (robot_server.stale).
            if self.frames.late(stale):
                self.frames.reset(stale)
            return Decision(None, source="stale_frames")
        self.frames.fresh()
        if self.source == DemoSource.EXPERT:
            assert ctx.expert is not None
            action, src = ctx.expert.act(self.direction), "expert"
        elif self.stage == Stage.HOLDING_GOAL:
            action, src = ctx.hold_action(state), "teleop:holding_goal"
        else:
            tele = ctx.teleop.active()
            action = tele.action() if tele is not None else ctx.hold_action(state)
            src = f"teleop:{tele.name}" if tele is not None else "teleop:idle"
        self.steps += 1
        # Judged now, on the state this step's observation shows (not after the action moved it).
        if ctx.task is not None:
            self.held = self.held + 1 if ctx.task.success(self.direction) else 0
        elif self.stage == Stage.HOLDING_GOAL:
            self.held += 1
        return Decision(np.asarray(action), record=True, source=src)

    def request_finish(self, success: bool) -> bool | None:
        """The operator's verdict: the demo's success if it can close now, None if a hold comes first."""
        if not success:
            return False
        if self.stage == Stage.HOLDING_GOAL:
            raise CommandError(f"the demo is already finishing: {self.hold_steps_left} more steps holding the goal")
        if self.ctx.task is None:  # the robot: record the hold the operator vouches for
            self._start_hold(reset=True)
            return None
        if self.held >= GOAL_HOLD_STEPS:
            return True
        if self.held == 0:
            raise CommandError(
                "the sim task's success test says the goal is not reached: keep going, or finish with success=false"
            )
        self._start_hold(reset=False)
        return None

    def outcome(self) -> bool | None:
        """After a recorded step: None to go on, else the demo is over and this is its success."""
        if self.ctx.task is None:
            if self.stage == Stage.HOLDING_GOAL:
                return True if self.held >= GOAL_HOLD_STEPS else None
            if self.steps >= self.max_steps:  # out of time counts as the operator's "success", held
                self._start_hold(reset=True)
            return None
        finishing = self.stage == Stage.HOLDING_GOAL or self.source == DemoSource.EXPERT
        if finishing and self.held >= GOAL_HOLD_STEPS:
            return True
        if self.stage == Stage.HOLDING_GOAL and self.held == 0:
            return False  # the goal was lost while holding it
        if self.stage == Stage.RECORDING and self.steps >= self.max_steps:
            if self.held == 0:
                return False
            self._start_hold(reset=False)  # at the goal: finish the hold before closing
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
        out: dict[str, Any] = {"direction": self.direction, "source": self.source.value, "steps": self.steps,
                               "stage": self.stage.value, **self.frames.summary()}
        if self.stage == Stage.HOLDING_GOAL:
            out["hold_steps_left"] = self.hold_steps_left
        return out

    def _start_hold(self, reset: bool) -> None:
        self.stage = Stage.HOLDING_GOAL
        if reset:
            self.held = 0

    def _begin_recording(self) -> None:
        recorder = self.ctx.recorder
        assert recorder is not None
        self.stage = Stage.RECORDING
        recorder.begin("demo", self.direction, {"source": self.source.value, "robot": self.ctx.cfg.robot})
