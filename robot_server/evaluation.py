"""An eval session (EARL's deployed-policy evaluation, DESIGN.md "Training harness and evaluation"):
the forward policy's mean action from the initial state distribution for K episodes of at most
`horizon` steps, each recorded as an episode of kind "eval" whose success is the verdict.

Each episode starts from a reset scene: in sim the task resets it and judges success (solved at
any step within the horizon; the episode ends at the first success); on the robot the operator
resets the scene and confirms, and gives the verdict once the horizon is reached. The episode
keeps the policy version it was run with (a push mid-episode takes effect at the next episode)
and the goal classifier's score, which is null: checkpoints carry no classifier yet.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
from pydantic import Field

from arm.base import ArmMode, ArmState
from robot_server.events import Event
from robot_server.help import HelpSource
from robot_server.json_body import JsonBody
from robot_server.modes import Stage
from robot_server.observation import Observation, Stale
from robot_server.policy_slots import ActivePolicy
from robot_server.session import Intervention, InterventionKind
from robot_server.stale import StaleFrames
from robot_server.teleop.arbiter import Takeover
from robot_server.tick import CommandError, Decision, ModeContext

log = logging.getLogger(__name__)


class EvalParams(JsonBody):
    """What an operator starts an eval session with (defaults: session.eval_episodes/eval_horizon)."""

    episodes: int | None = Field(None, ge=1, le=1000, description="K: episodes to run")
    horizon: int | None = Field(None, ge=1, le=100_000, description="steps per episode at most")


class Evaluation:
    def __init__(self, ctx: ModeContext, params: EvalParams) -> None:
        if ctx.recorder is None:
            raise CommandError("no store is open")
        if ctx.policies.active("forward") is None:
            raise CommandError("no forward policy to evaluate: push one first (PUT /policies/forward)")
        self.ctx = ctx
        self.id = time.strftime("eval-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.episodes = params.episodes or ctx.cfg.session.eval_episodes
        self.horizon = params.horizon or ctx.cfg.session.eval_horizon
        self.results: list[dict[str, Any]] = []  # one per finished episode
        self.stage = Stage.HOMING
        self.steps = 0  # of the current episode
        self._policy: ActivePolicy | None = None  # pinned for the current episode
        self._solved = False
        self.frames = StaleFrames(ctx, self.id)

    @property
    def episode(self) -> int:
        """Index of the current episode."""
        return len(self.results)

    def begin(self) -> None:
        self.ctx.events.add(Event.EVAL_STARTED, id=self.id, episodes=self.episodes, horizon=self.horizon)
        self._prepare()

    # ------------------------------------------------------------------ operator commands
    def confirm_reset(self) -> None:
        if self.stage != Stage.AWAITING_RESET:
            raise CommandError("no scene reset is pending")
        self.ctx.help.resolve(HelpSource.MANUAL_RESET)
        self.ctx.events.add(Event.RESET_DONE, session=self.id)
        self._start_episode()

    def verdict(self, success: bool) -> dict[str, Any] | None:
        """The operator's verdict on the episode just run; the eval's summary if it was the last."""
        if self.stage != Stage.AWAITING_VERDICT:
            why = "the sim task judges each episode" if self.ctx.task is not None else "no episode awaits a verdict"
            raise CommandError(f"{why} (stage: {self.stage.value})")
        self.ctx.help.resolve(HelpSource.EVAL_VERDICT)
        return self._close_episode(success, judge="operator")

    def end(self, reason: str) -> dict[str, Any]:
        """Stop now; an episode without a verdict is dropped (it never counts as a failure)."""
        recorder = self.ctx.recorder
        if self.stage in (Stage.ACTING, Stage.AWAITING_VERDICT) and recorder is not None:
            recorder.discard()
        for source in (HelpSource.MANUAL_RESET, HelpSource.EVAL_VERDICT):
            self.ctx.help.resolve(source)
        summary = {**self.status(), "end_reason": reason}
        self.ctx.events.add(Event.EVAL_ENDED, id=self.id, reason=reason, successes=summary["successes"],
                            episodes_done=len(self.results))
        return summary

    # ------------------------------------------------------------------ the tick
    def tick(self, state: ArmState, obs: Observation | None, stale: Stale | None) -> Decision:
        ctx = self.ctx
        if self.stage == Stage.HOMING:
            if not ctx.homing.done(state):
                return Decision(None, source="homing")
            if ctx.task is not None:
                self._start_episode()
            else:
                self.stage = Stage.AWAITING_RESET
                ctx.help.ask(HelpSource.MANUAL_RESET, f"reset the scene for eval episode {self.episode + 1} "
                             f"of {self.episodes}, then confirm (POST /evals/current/reset-done)")
        if self.stage != Stage.ACTING or state.mode != ArmMode.READY:
            return Decision(None)  # hold; a paused arm only delays the episode
        if obs is None:
            assert stale is not None
            # Hold, store and judge nothing: a stale spell only delays the episode (robot_server.stale).
            if self.frames.late(stale):
                self.frames.reset(stale)
            return Decision(None, source="stale_frames")
        self.frames.fresh()
        decision = self._action(state, obs)
        decision.record = True
        self.steps += 1
        # Judged on the state this step observes (as demos are).
        if ctx.task is not None and ctx.task.success("forward"):
            self._solved = True
        return decision

    def after_record(self) -> dict[str, Any] | None:
        """After a recorded step: the episode's end when it has one; the summary once all are done."""
        if self.stage != Stage.ACTING:
            return None
        if self._solved:
            return self._close_episode(True, judge="task")
        if self.steps < self.horizon:
            return None
        if self.ctx.task is not None:
            return self._close_episode(False, judge="task")
        self.stage = Stage.AWAITING_VERDICT
        self.ctx.help.ask(HelpSource.EVAL_VERDICT, f"eval episode {self.episode + 1}: was the task done? "
                          "(POST /evals/current/verdict)")
        return None

    def _action(self, state: ArmState, obs: Observation) -> Decision:
        ctx = self.ctx
        tele, change = ctx.teleop.over_policy()
        if change == Takeover.STARTED:
            assert tele is not None
            ctx.counters.takeovers += 1
            ctx.intervention(Intervention(InterventionKind.TAKEOVER, f"{tele.name} took over during an eval",
                                          self.steps, "forward", self.id))
        if tele is not None:  # safety first; the flagged steps show the episode was helped
            return Decision(tele.action(), intervention=True, source=f"teleop:{tele.name}")
        policy = self._policy
        assert policy is not None
        try:
            action = policy.runner.act(obs.data, deterministic=True)  # the mean action
            return Decision(np.asarray(action), policy_version=policy.version, source="eval_policy")
        except Exception as exc:  # a failing policy must not stop the robot's loop
            ctx.counters.policy_errors += 1
            log.warning("eval: forward policy v%d failed: %s", policy.version, exc)
            return Decision(ctx.hold_action(state), policy_version=policy.version, source="policy_error")

    # ------------------------------------------------------------------ episodes
    def _prepare(self) -> None:
        """Back to the initial state distribution: the scene (sim: now; robot: by the operator), the arm home."""
        ctx = self.ctx
        if ctx.task is not None:
            ctx.task.reset_scene("forward", ctx.rng)
        ctx.homing.start()
        self.stage = Stage.HOMING

    def _start_episode(self) -> None:
        ctx = self.ctx
        recorder = ctx.recorder
        assert recorder is not None
        self._policy = ctx.policies.active("forward")
        assert self._policy is not None  # checked at start; slots are never emptied
        self.steps = 0
        self._solved = False
        self.stage = Stage.ACTING
        recorder.begin("eval", "forward", {
            "session": self.id,
            "episode_index": self.episode,
            "policy_version": self._policy.version,
            "horizon": self.horizon,
            "robot": ctx.cfg.robot,
        })

    def _close_episode(self, success: bool, judge: str) -> dict[str, Any] | None:
        ctx = self.ctx
        assert ctx.recorder is not None and self._policy is not None
        result = {"episode": self.episode, "policy_version": self._policy.version, "success": success,
                  "steps": self.steps, "judged_by": judge, "goal_score": None}
        ctx.recorder.end(success=success, end_reason="eval verdict", judged_by=judge, goal_score=None)
        self.results.append(result)
        ctx.events.add(Event.EVAL_EPISODE, id=self.id, **result)
        if len(self.results) >= self.episodes:
            self.stage = Stage.IDLE
            return self.end("all episodes done")
        self._prepare()
        return None

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "episode": self.episode,
            "steps": self.steps,
            "stage": self.stage.value,
            "policy_version": None if self._policy is None else self._policy.version,
            "successes": sum(1 for r in self.results if r["success"]),
            "results": list(self.results),
            **self.frames.summary(),
        }
