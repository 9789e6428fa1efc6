"""The daemon's per-tick coordinator: which mode runs, what operator commands do to it.

Modes (robot_server.modes): idle (hold; teleop jogs the arm), practice (robot_server.practice),
demo (robot_server.demonstration), eval (robot_server.evaluation) and estop. Which input drives the
arm is the teleop arbiter's call (robot_server.teleop.arbiter); help requests and the event log
live in robot_server.help and robot_server.events. Operator commands arrive as calls made on the
control thread (ControlLoop.submit), so no state here needs a lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from arm.base import Arm, ArmMode, ArmState
from camera.base import Camera
from robot_server.demonstration import Demo
from robot_server.device_watch import DeviceWatch
from robot_server.evaluation import EvalParams, Evaluation
from robot_server.events import Event, EventLog
from robot_server.faults import FaultLog
from robot_server.help import HelpRequests, HelpSource
from robot_server.modes import DemoSource, Mode, Stage
from robot_server.observation import Observation, Stale
from robot_server.policy_slots import PolicySlots
from robot_server.practice import Practice
from robot_server.recorder import Recorder
from robot_server.session import Intervention, InterventionKind, PracticeSchedule, SessionParams
from robot_server.teleop import Teleop
from robot_server.teleop.arbiter import TeleopArbiter
from robot_server.tick import CommandError, Counters, Decision, Expert, Homing, ModeContext, Task
from spec.clock import now
from spec.config import Config
from spec.direction import Direction
from spec.step import ActionSpace

# What the SpaceMouse's demo button records.
TELEOP_DEMO_DIRECTION: Direction = "forward"
TELEOP_DEMO_MAX_STEPS = 600


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        arm: Arm,
        recorder: Recorder | None,
        policies: PolicySlots,
        action_space: ActionSpace,
        teleops: list[Teleop] | None = None,
        task: Task | None = None,
        expert: Expert | None = None,
        cameras: Mapping[str, Camera] | None = None,
        faults: FaultLog | None = None,
    ) -> None:
        events = EventLog(store=None if recorder is None else recorder.log_event)
        help_requests = HelpRequests(events)
        self.ctx = ModeContext(
            cfg=cfg,
            arm=arm,
            recorder=recorder,
            policies=policies,
            space=action_space,
            teleop=TeleopArbiter(teleops),
            events=events,
            help=help_requests,
            homing=Homing(arm, help_requests),
            task=task,
            expert=expert,
            rng=np.random.default_rng(cfg.session.seed),
            cameras=cameras or {},
        )
        self.faults = faults or FaultLog()
        self.watch = DeviceWatch(self.ctx, self.faults)
        self.mode = Mode.IDLE
        self.practice: Practice | None = None
        self.demo: Demo | None = None
        self.evaluation: Evaluation | None = None
        self._estopped_from = Mode.IDLE
        self.finished_sessions = 0
        self.last_session: dict[str, Any] | None = None
        self.last_demo: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.finished_evals = 0

    @property
    def counters(self) -> Counters:
        return self.ctx.counters

    @property
    def rng(self) -> np.random.Generator:
        return self.ctx.rng

    @property
    def schedule(self) -> PracticeSchedule | None:
        return None if self.practice is None else self.practice.schedule

    @property
    def stage(self) -> Stage:
        if self.mode == Mode.ESTOP:
            return Stage.ESTOP
        if self.mode == Mode.PRACTICE and self.practice is not None:
            return self.practice.stage
        if self.mode == Mode.DEMO and self.demo is not None:
            return self.demo.stage
        if self.mode == Mode.EVAL and self.evaluation is not None:
            return self.evaluation.stage
        return Stage.IDLE

    # ------------------------------------------------------------------ operator commands
    def start_session(self, params: SessionParams) -> dict[str, Any]:
        self._require_idle("start a session")
        if params.policy == "learned" and self.ctx.recorder is None:
            raise CommandError("no store is open")
        self.practice = Practice(self.ctx, params)
        self.mode = Mode.PRACTICE
        self.practice.begin()
        return self.practice.summary()

    def pause_session(self) -> None:
        self._practice().pause()

    def resume_session(self) -> None:
        self._practice().resume()

    def stop_session(self) -> dict[str, Any]:
        self._practice()
        return self._end_session("stopped by operator")

    def request_reset(self, reason: str) -> None:
        self._practice().request_reset(reason)

    def confirm_reset(self) -> None:
        """The operator has put the scene back (hardware); the next forward phase (or eval episode) may start."""
        if self.mode == Mode.EVAL and self.evaluation is not None:
            self.evaluation.confirm_reset()
        elif self.mode == Mode.PRACTICE and self.practice is not None:
            self.practice.confirm_reset()
        else:
            raise CommandError("no manual reset is pending")

    def start_eval(self, params: EvalParams) -> dict[str, Any]:
        self._require_idle("start an eval session")
        self.evaluation = Evaluation(self.ctx, params)  # refuses without a store or a forward policy
        self.mode = Mode.EVAL
        self.evaluation.begin()
        return self.evaluation.status()

    def eval_verdict(self, success: bool) -> dict[str, Any]:
        evaluation = self._evaluation()
        done = evaluation.verdict(success)
        if done is not None:
            return self._end_eval(done)
        return evaluation.status()

    def stop_eval(self) -> dict[str, Any]:
        return self._end_eval(self._evaluation().end("stopped by operator"))

    def confirm_success(self, direction: Direction | None = None) -> dict[str, Any]:
        """The operator saw the task done (default: in the current direction)."""
        practice = self._practice()
        direction = direction or practice.schedule.direction
        practice.confirm_success(direction)
        return {"direction": direction, "step": practice.schedule.total_steps}

    def record_intervention(self, reason: str) -> dict[str, Any]:
        self.counters.operator_interventions += 1
        if self.practice is not None and self.mode == Mode.PRACTICE:
            return self.practice.record_intervention(reason)
        return self.ctx.intervention(Intervention(InterventionKind.OPERATOR, reason, None, None, None))

    def start_demo(self, direction: Direction, source: DemoSource | str, max_steps: int) -> None:
        source = DemoSource(source)
        self._require_idle("record a demo")
        if self.ctx.recorder is None:
            raise CommandError("no store is open")
        if source == DemoSource.EXPERT and (self.ctx.expert is None or self.ctx.task is None):
            raise CommandError("the scripted expert exists only in the sim world")
        self.demo = Demo(self.ctx, direction, source, max_steps)
        self.mode = Mode.DEMO
        self.demo.begin()
        self.ctx.events.add(Event.DEMO_STARTED, direction=direction, source=source.value)

    def finish_demo(self, success: bool) -> dict[str, Any]:
        """Close the demo now, or (success claimed, goal not yet held long enough) after the hold."""
        demo = self._demo()
        verdict = demo.request_finish(success)
        if verdict is not None:
            return self._close_demo(verdict)
        self.ctx.events.add(Event.DEMO_HOLDING_GOAL, direction=demo.direction, steps=demo.steps,
                            hold_steps_left=demo.hold_steps_left)
        return {"direction": demo.direction, "steps": demo.steps, "success": True, "closed": False,
                "hold_steps_left": demo.hold_steps_left}

    def discard_demo(self) -> dict[str, Any]:
        demo = self._demo()
        demo.discard()
        self.counters.demos_discarded += 1
        out = {"direction": demo.direction, "steps": demo.steps, "discarded": True}
        self.ctx.events.add(Event.DEMO_DISCARDED, **out)
        self._to_idle()
        return out

    def estop(self, reason: str = "operator") -> None:
        self.ctx.arm.stop()
        if self.mode != Mode.ESTOP:
            self._estopped_from = self.mode
            self.counters.estops += 1
        if self.mode == Mode.DEMO and self.demo is not None:
            self.demo.abort("estop")
            self.demo = None
        elif self.mode == Mode.EVAL and self.evaluation is not None:
            self._end_eval(self.evaluation.end("estop"))  # a disturbed episode must not count
        elif self.practice is not None:
            self.practice.close_segment("estop")
        self.mode = Mode.ESTOP
        self.ctx.events.add(Event.ESTOP, reason=reason)

    def release_estop(self) -> None:
        if self.mode != Mode.ESTOP:
            raise CommandError("emergency stop is not active")
        self.ctx.arm.resume()
        if self._estopped_from == Mode.PRACTICE and self.practice is not None:
            self.mode = Mode.PRACTICE
            self.practice.after_estop()
        else:
            self._to_idle()
        self._estopped_from = Mode.IDLE
        self.ctx.events.add(Event.ESTOP_RELEASED)

    def go_home(self) -> None:
        if self.mode != Mode.IDLE:
            raise CommandError("the arm can be sent home only when idle")
        self.ctx.arm.go_home()

    def resume_arm(self) -> None:
        self.ctx.arm.resume()
        self.ctx.help.resolve(HelpSource.ARM)
        self.ctx.events.add(Event.ARM_RESUMED)

    # ------------------------------------------------------------------ the tick
    def tick(self, state: ArmState, obs: Observation | None, stale: Stale | None) -> Decision:
        self._check_help()
        lost = self.watch.tick(state, stale)
        if lost is not None and self.mode == Mode.DEMO and self.demo is not None and self.demo.source == DemoSource.TELEOP:
            self._end_demo_for_lost_teleop(lost)
        self._demo_button()
        self.ctx.teleop.sync_idle(state.gripper_closed)
        if self.mode == Mode.PRACTICE and self.practice is not None:
            return self.practice.tick(state, obs, stale)
        if self.mode == Mode.DEMO and self.demo is not None:
            return self.demo.tick(state, obs, stale)
        if self.mode == Mode.EVAL and self.evaluation is not None:
            return self.evaluation.tick(state, obs, stale)
        if self.mode == Mode.IDLE:
            tele = self.ctx.teleop.active()
            if tele is not None and state.mode == ArmMode.READY:
                return Decision(tele.action(), source=f"jog:{tele.name}")
        return Decision(None)

    def after_record(self) -> None:
        """Called by the loop once the tick's step is recorded: phase switches and endings."""
        if self.mode == Mode.DEMO and self.demo is not None:
            success = self.demo.outcome()
            if success is not None:
                self._close_demo(success)
        elif self.mode == Mode.PRACTICE and self.practice is not None:
            end = self.practice.after_record()
            if end is not None:
                self._end_session(end)
        elif self.mode == Mode.EVAL and self.evaluation is not None:
            done = self.evaluation.after_record()
            if done is not None:
                self._end_eval(done)

    def step_record(self, obs: Observation, decision: Decision, executed: np.ndarray) -> None:
        recorder = self.ctx.recorder
        if recorder is None:
            return
        step = dict(obs.data)
        step["action"] = executed.astype(np.float32)
        step["timestamp"] = now()
        step["policy_version"] = np.int32(decision.policy_version)
        step["intervention"] = bool(decision.intervention)
        recorder.step(step)

    def hold_action(self, state: ArmState) -> np.ndarray:
        return self.ctx.hold_action(state)

    # ------------------------------------------------------------------ helpers
    def _close_demo(self, success: bool) -> dict[str, Any]:
        demo = self._demo()
        demo.close(success)
        out = {"direction": demo.direction, "steps": demo.steps, "success": success}
        self.ctx.events.add(Event.DEMO_FINISHED, **out)
        self.last_demo = out
        self.counters.demos_recorded += 1  # after last_demo: other threads poll this counter, then read it
        self._to_idle()
        return {**out, "closed": True}

    def _end_demo_for_lost_teleop(self, why: str) -> None:
        """A teleop device was lost mid-demo: the demo ends now, stored as failed (its last steps
        are an arm held still, not the expert's motion), and the operator is asked to reconnect."""
        demo = self._demo()
        reason = f"teleop device lost: {why}"
        demo.abort(reason)
        out = {"direction": demo.direction, "steps": demo.steps, "success": False, "end_reason": reason}
        self.ctx.events.add(Event.DEMO_FINISHED, **out)
        self.last_demo = out
        self.counters.demos_recorded += 1  # after last_demo: other threads poll this counter, then read it
        self._to_idle()
        self.ctx.help.ask(HelpSource.TELEOP, f"{why}: the demo was ended (stored as failed); reconnect the "
                          "device and record it again")

    def _require_idle(self, what: str) -> None:
        if self.mode == Mode.ESTOP:
            raise CommandError("emergency stop is active: release it first")
        if self.mode != Mode.IDLE:
            raise CommandError(f"cannot {what} while {self.mode.value} is running")
        full = None if self.ctx.recorder is None else self.ctx.recorder.full
        if full is not None:  # every mode records: none may start unrecorded
            raise CommandError(f"cannot {what}: {full.message}")

    def _practice(self) -> Practice:
        if self.mode != Mode.PRACTICE or self.practice is None:
            raise CommandError("no session is running")
        return self.practice

    def _evaluation(self) -> Evaluation:
        if self.mode != Mode.EVAL or self.evaluation is None:
            raise CommandError("no eval session is running")
        return self.evaluation

    def _end_eval(self, summary: dict[str, Any]) -> dict[str, Any]:
        self.last_eval = summary
        self.finished_evals += 1  # after last_eval: other threads poll this, then read it
        self.evaluation = None
        self._to_idle()
        return summary

    def _demo(self) -> Demo:
        if self.mode != Mode.DEMO or self.demo is None:
            raise CommandError("no demo is being recorded")
        return self.demo

    def _end_session(self, reason: str) -> dict[str, Any]:
        assert self.practice is not None
        summary = self.practice.end(reason)
        self.last_session = summary
        self.finished_sessions += 1
        self.practice = None
        self._to_idle()
        return summary

    def _to_idle(self) -> None:
        self.mode = Mode.IDLE
        self.demo = None
        self.ctx.teleop.end_takeover()
        for source in (HelpSource.MANUAL_RESET, HelpSource.CAMERAS):  # a session's requests end with it
            self.ctx.help.resolve(source)

    def _demo_button(self) -> None:
        """The demo button: start a teleop demo when idle, finish it when recording one."""
        for _ in range(self.ctx.teleop.demo_toggles()):
            try:
                if self.mode == Mode.IDLE:
                    self.start_demo(TELEOP_DEMO_DIRECTION, DemoSource.TELEOP, TELEOP_DEMO_MAX_STEPS)
                elif self.mode == Mode.DEMO and self.demo is not None and self.demo.source == DemoSource.TELEOP:
                    self.finish_demo(success=True)
            except CommandError as exc:
                self.ctx.events.add(Event.TELEOP_BUTTON_IGNORED, reason=str(exc))

    def _check_help(self) -> None:
        ctx = self.ctx
        why = ctx.arm.help_request()
        if why:
            ctx.help.ask(HelpSource.ARM, why)
        else:
            ctx.help.resolve(HelpSource.ARM)
        full = None if ctx.recorder is None else ctx.recorder.full
        if full is not None:
            ctx.help.ask(HelpSource.STORE, full.message)
        else:
            ctx.help.resolve(HelpSource.STORE)
        if ctx.task is None or self.mode != Mode.PRACTICE:
            return
        if ctx.task.object_in_workspace():
            ctx.help.resolve(HelpSource.OBJECT)
            return
        reason = "the object left the workspace: a reset is scheduled for the next forward phase"
        if ctx.help.ask(HelpSource.OBJECT, reason):
            sched = self.schedule
            if sched is not None and sched.reset_requested is None:
                sched.request_reset("object left the workspace (robot asked for help)")

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "stage": self.stage.value,
            "session": None if self.practice is None else self.practice.summary(),
            "demo": None if self.demo is None else self.demo.status(),
            "eval": None if self.evaluation is None else self.evaluation.status(),
            "takeover": self.ctx.teleop.taking_over,
            "counters": self.counters.as_dict(),
            "faults": self.faults.counts(),
            "help_requests": self.ctx.help.as_list(),
            "recent_events": self.ctx.events.recent(20),
        }
