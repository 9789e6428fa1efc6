"""A running practice session: the schedule's phases as recorded segments, the policy (or an
operator's takeover) acting, manual resets at the switch to forward, pause and resume.

A stale frame holds the arm for its tick and keeps the segment open (robot_server.stale); frames
stale for `session.stale_pause_s` pause the session, end the segment and reset the cameras, and
the session resumes by itself at the first fresh frame. Likewise a full store disk
(robot_server.store_space) pauses the session and ends the segment: the arm holds rather than
practising unrecorded, and the session resumes by itself once the store has room again."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from arm.base import ArmMode, ArmState
from robot_server.events import Event
from robot_server.help import HelpSource
from robot_server.modes import Stage
from robot_server.observation import Observation, Stale
from robot_server.progress import ProgressWatch
from robot_server.session import InterventionKind, PracticeSchedule, SessionParams
from robot_server.stale import StaleFrames
from robot_server.store_space import StoreFull
from robot_server.teleop.arbiter import Takeover
from robot_server.tick import CommandError, Decision, ModeContext
from spec.direction import DIRECTIONS, Direction

log = logging.getLogger(__name__)


class Practice:
    def __init__(self, ctx: ModeContext, params: SessionParams) -> None:
        self.ctx = ctx
        session = ctx.cfg.session
        self.schedule = PracticeSchedule(params, session.phase_steps, session.home_every)
        self.stage = Stage.ACTING
        self.progress = ProgressWatch(ctx.help, session.help_after_steps,
                                      None if ctx.task is None else ctx.task.success)
        self.frames = StaleFrames(ctx, self.schedule.id)
        self._paused_for_frames = False  # paused by a long stale spell, not by the operator
        self._paused_for_store = False  # paused because the store's disk is full
        self._segment_open = False
        self._pending_end: str | None = None

    @property
    def params(self) -> SessionParams:
        return self.schedule.params

    def begin(self) -> None:
        ctx, params = self.ctx, self.params
        if params.reset_at_start and ctx.task is not None:
            ctx.task.reset_scene(params.start_direction, ctx.rng)
        if params.reset_at_start or params.home_at_start:
            self._start_homing()
        ctx.events.add(Event.SESSION_STARTED, id=self.schedule.id, policy=params.policy)

    # ------------------------------------------------------------------ operator commands
    def pause(self) -> None:
        if self.stage == Stage.PAUSED and (self._paused_for_frames or self._paused_for_store):
            # The operator takes over a pause for the cameras or the disk: no resuming by itself.
            self._paused_for_frames = self._paused_for_store = False
            self.ctx.events.add(Event.SESSION_PAUSED, session=self.schedule.id, by="operator")
            return
        if self.stage == Stage.PAUSED:
            raise CommandError("the session is already paused")
        self.close_segment("paused")
        self.stage = Stage.PAUSED
        self.ctx.events.add(Event.SESSION_PAUSED, session=self.schedule.id, by="operator")

    def resume(self) -> None:
        if self.stage == Stage.AWAITING_RESET:
            self.confirm_reset()
            return
        if self.stage != Stage.PAUSED:
            raise CommandError("the session is not paused")
        full = self._store_full()
        if full is not None:
            raise CommandError(full.message)
        self._paused_for_store = False
        # Resumed during a stale spell: stale ticks hold the arm; the spell's help request still follows.
        self._paused_for_frames = False
        self.stage = Stage.ACTING
        self.ctx.events.add(Event.SESSION_RESUMED, session=self.schedule.id, by="operator")

    def request_reset(self, reason: str) -> None:
        self.schedule.request_reset(reason)
        self.ctx.events.add(Event.RESET_REQUESTED, reason=reason, session=self.schedule.id)

    def confirm_reset(self) -> None:
        """The operator has put the scene back (hardware); the next forward phase may start."""
        if self.stage != Stage.AWAITING_RESET:
            raise CommandError("no manual reset is pending")
        self.ctx.help.resolve(HelpSource.MANUAL_RESET)
        self.stage = Stage.ACTING
        self.ctx.events.add(Event.RESET_DONE, session=self.schedule.id)
        self._helped()

    def confirm_success(self, direction: Direction) -> None:
        """The operator saw `direction`'s task done (the robot's only success signal)."""
        self.progress.progress(direction)
        self.ctx.events.add(Event.SUCCESS_CONFIRMED, direction=direction, session=self.schedule.id,
                            step=self.schedule.total_steps)

    def record_intervention(self, reason: str) -> dict[str, Any]:
        return self.ctx.intervention(self.schedule.record_intervention(InterventionKind.OPERATOR, reason))

    def after_estop(self) -> None:
        """Back from an emergency stop: paused, so the operator decides when motion resumes."""
        self._paused_for_frames = self._paused_for_store = False
        self.stage = Stage.PAUSED

    def end(self, reason: str) -> dict[str, Any]:
        self.close_segment(reason)
        for source in (HelpSource.MANUAL_RESET, HelpSource.OBJECT, HelpSource.CAMERAS):  # they end with it
            self.ctx.help.resolve(source)
        self.progress.close()
        summary = self.summary()
        summary["end_reason"] = reason
        self.ctx.events.add(Event.SESSION_ENDED, reason=reason, steps=self.schedule.total_steps)
        return summary

    def summary(self) -> dict[str, Any]:
        return {**self.schedule.summary(), **self.frames.summary(), "paused_for_frames": self._paused_for_frames,
                "paused_for_store": self._paused_for_store}

    # ------------------------------------------------------------------ the tick
    def tick(self, state: ArmState, obs: Observation | None, stale: Stale | None) -> Decision:
        sched = self.schedule
        if self.stage == Stage.HOMING:
            if not self.ctx.homing.done(state):
                return Decision(None, source="homing")
            self.stage = Stage.ACTING
        if self._paused_for_frames:
            if stale is not None:
                self.frames.late(stale)  # counts, and asks for help if the reset did not bring frames back
                return Decision(None, source="stale_frames")
            self._resume_after_frames()
        if self._hold_for_store():
            return Decision(None, source="store_full")
        if self.stage != Stage.ACTING:
            return Decision(None)
        if state.mode != ArmMode.READY:
            self.close_segment(f"arm {state.mode.value}")
            return Decision(None)
        if obs is None:
            assert stale is not None
            # Hold for this tick, store nothing, keep the segment open: the next fresh frame goes on.
            if self.frames.late(stale):
                self._pause_for_frames(stale)
            return Decision(None, source="stale_frames")
        self.frames.fresh()
        if not self._segment_open:
            self._open_segment()
        decision = self._action(state, obs)
        decision.record = True
        self.progress.step(sched.direction)
        sched.count_step()
        if sched.done:
            self._pending_end = "max_steps reached"
        return decision

    def after_record(self) -> str | None:
        """Phase switches once the tick's step is recorded; the reason if the session must end."""
        if self._pending_end:
            reason, self._pending_end = self._pending_end, None
            return reason
        sched = self.schedule
        if not sched.phase_over:
            return None
        ctx = self.ctx
        self.close_segment("phase end")
        sw = sched.switch()
        if sw.manual_reset:
            ctx.counters.manual_resets += 1
            ctx.intervention(sw.manual_reset)
        if sw.go_home:
            self._start_homing()
        if sw.manual_reset:
            if ctx.task is not None:
                # In sim the "human" puts the scene back at once.
                ctx.task.reset_scene("forward", ctx.rng)
                self._helped()
            else:
                self.stage = Stage.AWAITING_RESET
                ctx.help.ask(HelpSource.MANUAL_RESET, "reset the scene for the forward task, then press resume")
        return None

    def _action(self, state: ArmState, obs: Observation) -> Decision:
        ctx, sched = self.ctx, self.schedule
        tele, change = ctx.teleop.over_policy()
        if change == Takeover.STARTED:
            assert tele is not None
            ctx.counters.takeovers += 1
            ctx.intervention(sched.record_intervention(InterventionKind.TAKEOVER, f"{tele.name} took over"))
        elif change == Takeover.ENDED:
            ctx.events.add(Event.TAKEOVER_RELEASED)
        if tele is not None:
            return Decision(tele.action(), intervention=True, source=f"teleop:{tele.name}")
        policy = self.params.policy
        if policy == "hold":
            return Decision(ctx.hold_action(state), source="hold")
        if policy == "learned":
            active = ctx.policies.active(sched.direction)
            if active is not None:
                try:
                    action = active.runner.act(obs.data, deterministic=self.params.deterministic)
                    return Decision(np.asarray(action), policy_version=active.version, source="policy")
                except Exception as exc:  # a failing policy must not stop the robot's loop
                    ctx.counters.policy_errors += 1
                    log.warning("policy %s v%d failed: %s", sched.direction, active.version, exc)
                    return Decision(ctx.hold_action(state), source="policy_error")
        # Seed phase (MEDALPP.md): uniform random actions, never the untrained policy.
        return Decision(ctx.rng.uniform(-1.0, 1.0, ctx.space.dim).astype(np.float32), source="random")

    def _pause_for_frames(self, stale: Stale) -> None:
        spell_s = self.frames.spell_s
        self.close_segment(f"frames stale for {spell_s:.1f} s")
        self.stage = Stage.PAUSED
        self._paused_for_frames = True
        self.ctx.events.add(Event.SESSION_PAUSED, session=self.schedule.id, by="cameras",
                            reason=f"frames stale for {spell_s:.1f} s: {stale.reason}")
        self.frames.reset(stale)

    def _resume_after_frames(self) -> None:
        self.frames.fresh()
        self._paused_for_frames = False
        self.stage = Stage.ACTING
        self.ctx.events.add(Event.SESSION_RESUMED, session=self.schedule.id, by="cameras",
                            reason="fresh frames are back")

    def _store_full(self) -> StoreFull | None:
        return None if self.ctx.recorder is None else self.ctx.recorder.full

    def _hold_for_store(self) -> bool:
        """Pause while the store's disk is full (the arm holds), resume once it has room again."""
        full = self._store_full()
        if self._paused_for_store:
            if full is not None:
                return True
            self._paused_for_store = False
            self.stage = Stage.ACTING
            lost = self.ctx.recorder.stats.steps_lost if self.ctx.recorder is not None else 0
            self.ctx.events.add(Event.SESSION_RESUMED, session=self.schedule.id, by="store",
                                reason="the store has room again", steps_lost=lost)
            return False
        if full is None or self.stage != Stage.ACTING:
            return False
        self.close_segment("store full")
        self.stage = Stage.PAUSED
        self._paused_for_store = True
        self.ctx.events.add(Event.SESSION_PAUSED, session=self.schedule.id, by="store", reason=full.message,
                            path=full.path, free_mb=full.free_mb)
        return True

    def _helped(self) -> None:
        """A person put the scene right: whatever was stuck has been dealt with."""
        for d in DIRECTIONS:
            self.progress.progress(d)

    # ------------------------------------------------------------------ segments
    def _start_homing(self) -> None:
        self.ctx.homing.start()
        self.stage = Stage.HOMING

    def _open_segment(self) -> None:
        sched, recorder = self.schedule, self.ctx.recorder
        assert recorder is not None
        recorder.begin(
            "practice",
            sched.direction,
            {
                "session": sched.id,
                "phase": sched.phase,
                "phase_step_start": sched.phase_step,
                "policy_source": sched.params.policy,
                "robot": self.ctx.cfg.robot,
            },
        )
        self._segment_open = True

    def close_segment(self, reason: str) -> None:
        if self._segment_open and self.ctx.recorder is not None:
            self.ctx.recorder.end(success=None, end_reason=reason)
        self._segment_open = False
