"""The daemon's brain, called once per tick by the control loop: who acts, and what is recorded.

Modes: idle (hold; teleop jogs the arm), practice (the forward/backward schedule), demo (teleop
or, in sim, the scripted expert records a demonstration) and estop. Operator commands arrive as
calls made on the control thread (ControlLoop.submit), so no state here needs a lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from arm.base import Arm, ArmMode, ArmState
from robot_server.observation import Observation
from robot_server.policy_slots import PolicySlots
from robot_server.recorder import Recorder
from robot_server.session import PracticeSchedule, SessionParams
from spec.clock import now
from spec.config import Config
from spec.direction import Direction
from spec.step import ActionSpace

log = logging.getLogger(__name__)

HOMING_TIMEOUT_S = 60.0
DEMO_EXTRA_STEPS = 10  # keep recording a moment after success so the goal frames are plentiful


class CommandError(Exception):
    """An operator command that does not fit the current state (HTTP 409)."""


class Teleop(Protocol):
    name: str

    def is_active(self) -> bool: ...

    def action(self) -> np.ndarray: ...

    def poll_events(self) -> list[Any]: ...

    def sync_gripper(self, closed: bool) -> None: ...


class Task(Protocol):
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
class DemoState:
    direction: Direction
    source: Literal["teleop", "expert"]
    max_steps: int
    steps: int = 0
    stage: Literal["preparing", "recording"] = "preparing"
    succeeded_at: int | None = None
    started_at: float = field(default_factory=time.time)


@dataclass
class Counters:
    interventions: int = 0
    takeovers: int = 0
    manual_resets: int = 0
    operator_interventions: int = 0
    demos_recorded: int = 0
    demos_discarded: int = 0
    estops: int = 0
    policy_errors: int = 0
    sessions: int = 0


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
    ) -> None:
        self.cfg = cfg
        self.arm = arm
        self.recorder = recorder
        self.policies = policies
        self.space = action_space
        self.teleops = teleops or []
        self.task = task
        self.expert = expert
        self.rng = np.random.default_rng(cfg.session.seed)
        self.mode: Literal["idle", "practice", "demo", "estop"] = "idle"
        # practice sub-state: acting | homing | awaiting_reset | paused | done
        self.stage = "idle"
        self.schedule: PracticeSchedule | None = None
        self.demo: DemoState | None = None
        self.counters = Counters()
        self.help_requests: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # recent, for the operator's log
        self.finished_sessions = 0
        self._homing_since: float | None = None
        self._segment_open = False
        self._segment_pause_reason: str | None = None
        self._takeover = False
        self._takeover_last_active = 0.0
        self._gripper_closed = False
        self._pre_estop: tuple[str, str] | None = None
        self._pending_end: str | None = None
        self._paused_from = "acting"
        self.last_session: dict[str, Any] | None = None
        self.last_demo: dict[str, Any] | None = None
        # What the SpaceMouse's demo button records (the page can change it).
        self.teleop_demo_direction: Direction = "forward"
        self.teleop_demo_max_steps = 600

    # ------------------------------------------------------------------ operator commands
    def start_session(self, params: SessionParams) -> dict[str, Any]:
        if self.mode == "estop":
            raise CommandError("emergency stop is active: release it first")
        if self.mode != "idle":
            raise CommandError(f"cannot start a session while {self.mode} is running")
        if params.policy == "learned" and self.recorder is None:
            raise CommandError("no store is open")
        self.schedule = PracticeSchedule(params, self.cfg.session.phase_steps, self.cfg.session.home_every)
        self.mode = "practice"
        self.counters.sessions += 1
        if params.reset_at_start and self.task is not None:
            self.task.reset_scene(params.start_direction, self.rng)
        if params.reset_at_start or params.home_at_start:
            self._start_homing()
        else:
            self._set_stage("acting")
        self._event("session_started", id=self.schedule.id, policy=params.policy)
        return self.schedule.summary()

    def pause_session(self) -> None:
        if self.mode != "practice" or self.schedule is None:
            raise CommandError("no session is running")
        if self.stage == "paused":
            raise CommandError("the session is already paused")
        self._close_segment(reason="paused")
        self._paused_from = self.stage
        self._set_stage("paused")
        self._event("session_paused")

    def resume_session(self) -> None:
        if self.mode != "practice" or self.schedule is None:
            raise CommandError("no session is running")
        if self.stage == "awaiting_reset":
            self.confirm_reset()
            return
        if self.stage != "paused":
            raise CommandError("the session is not paused")
        self._set_stage("acting")
        self._event("session_resumed")

    def stop_session(self) -> dict[str, Any]:
        if self.mode != "practice" or self.schedule is None:
            raise CommandError("no session is running")
        return self._end_session("stopped by operator")

    def request_reset(self, reason: str) -> None:
        if self.mode != "practice" or self.schedule is None:
            raise CommandError("no session is running")
        self.schedule.request_reset(reason)
        self._event("reset_requested", reason=reason)

    def confirm_reset(self) -> None:
        """The operator has put the scene back (hardware); the next forward phase may start."""
        if self.stage != "awaiting_reset":
            raise CommandError("no manual reset is pending")
        self.help_requests.pop("manual_reset", None)
        self._set_stage("acting")
        self._event("reset_done")

    def record_intervention(self, reason: str) -> dict[str, Any]:
        self.counters.interventions += 1
        self.counters.operator_interventions += 1
        if self.schedule is not None and self.mode == "practice":
            iv = self.schedule.record_intervention("operator", reason).as_dict()
        else:
            iv = {"kind": "operator", "reason": reason, "step": None, "wall_time": time.time()}
        self._store_event({"type": "intervention", **iv})
        self._event("intervention", reason=reason)
        return iv

    def start_demo(self, direction: Direction, source: Literal["teleop", "expert"], max_steps: int) -> None:
        if self.mode == "estop":
            raise CommandError("emergency stop is active: release it first")
        if self.mode != "idle":
            raise CommandError(f"cannot record a demo while {self.mode} is running")
        if self.recorder is None:
            raise CommandError("no store is open")
        if source == "expert" and (self.expert is None or self.task is None):
            raise CommandError("the scripted expert exists only in the sim world")
        self.demo = DemoState(direction=direction, source=source, max_steps=max_steps)
        self.mode = "demo"
        if source == "expert":
            assert self.task is not None
            self.task.reset_scene(direction, self.rng)
            self._start_homing()
        else:
            self._begin_demo_recording()
        self._event("demo_started", direction=direction, source=source)

    def finish_demo(self, success: bool) -> dict[str, Any]:
        if self.mode != "demo" or self.demo is None:
            raise CommandError("no demo is being recorded")
        steps = self.demo.steps
        if self.recorder is not None:
            self.recorder.end(success=success, end_reason="finished")
        out = {"direction": self.demo.direction, "steps": steps, "success": success}
        self._event("demo_finished", **out)
        self.last_demo = out
        self.counters.demos_recorded += 1  # last: other threads poll this counter, then read last_demo
        self._to_idle()
        return out

    def discard_demo(self) -> dict[str, Any]:
        if self.mode != "demo" or self.demo is None:
            raise CommandError("no demo is being recorded")
        if self.recorder is not None:
            self.recorder.discard()
        self.counters.demos_discarded += 1
        out = {"direction": self.demo.direction, "steps": self.demo.steps, "discarded": True}
        self._event("demo_discarded", **out)
        self._to_idle()
        return out

    def estop(self, reason: str = "operator") -> None:
        self.arm.stop()
        if self.mode != "estop":
            self._pre_estop = (self.mode, self.stage)
            self.counters.estops += 1
        if self.mode == "demo" and self.recorder is not None:
            self.recorder.end(success=False, end_reason="estop")
            self.demo = None
        else:
            self._close_segment(reason="estop")
        self.mode = "estop"
        self.stage = "estop"
        self._event("estop", reason=reason)

    def release_estop(self) -> None:
        if self.mode != "estop":
            raise CommandError("emergency stop is not active")
        self.arm.resume()
        mode, _stage = self._pre_estop or ("idle", "idle")
        self._pre_estop = None
        if mode == "practice" and self.schedule is not None:
            # Come back paused: the operator decides when motion resumes.
            self.mode = "practice"
            self._paused_from = "acting"
            self._set_stage("paused")
        else:
            self._to_idle()
        self._event("estop_released")

    def go_home(self) -> None:
        if self.mode != "idle":
            raise CommandError("the arm can be sent home only when idle")
        self.arm.go_home()

    def resume_arm(self) -> None:
        self.arm.resume()
        self.help_requests.pop("arm", None)
        self._event("arm_resumed")

    # ------------------------------------------------------------------ the tick
    def tick(self, state: ArmState, obs: Observation | None, stale: str | None) -> Decision:
        self._check_help(state)
        self._teleop_buttons()
        self._sync_idle_teleops(state)
        if self.mode == "estop":
            return Decision(None)
        if self.mode == "idle":
            return self._idle_tick(state)
        if self.mode == "demo":
            return self._demo_tick(state, obs, stale)
        return self._practice_tick(state, obs, stale)

    def _idle_tick(self, state: ArmState) -> Decision:
        tele = self._active_teleop()
        if tele is not None and state.mode == ArmMode.READY:
            return Decision(tele.action(), source=f"jog:{tele.name}")
        return Decision(None)

    def _practice_tick(self, state: ArmState, obs: Observation | None, stale: str | None) -> Decision:
        sched = self.schedule
        assert sched is not None
        if self.stage == "homing":
            if not self._homing_done(state):
                return Decision(None, source="homing")
            self._set_stage("acting")
        if self.stage in ("paused", "awaiting_reset"):
            return Decision(None)
        # acting
        if state.mode != ArmMode.READY:
            self._close_segment(reason=f"arm {state.mode.value}")
            return Decision(None)
        if obs is None:
            self._close_segment(reason=f"stale frames: {stale}")
            return Decision(None)
        if not self._segment_open:
            self._open_segment()
        decision = self._practice_action(state, obs)
        decision.record = True
        sched.count_step()
        if sched.done:
            self._pending_end = "max_steps reached"
        return decision

    def after_record(self) -> None:
        """Called by the loop once the tick's step is recorded: phase switches and session end."""
        if self.mode == "demo" and self.demo is not None:
            self._demo_after_record()
            return
        sched = self.schedule
        if self.mode != "practice" or sched is None:
            return
        if self._pending_end:
            reason, self._pending_end = self._pending_end, None
            self._end_session(reason)
            return
        if sched.phase_over:
            self._close_segment(reason="phase end")
            sw = sched.switch()
            if sw.manual_reset:
                self.counters.interventions += 1
                self.counters.manual_resets += 1
                self._event("manual_reset", direction=sw.direction)
            if sw.go_home:
                self._start_homing()
            if sw.manual_reset:
                if self.task is not None:
                    # In sim the "human" puts the scene back at once.
                    self.task.reset_scene("forward", self.rng)
                else:
                    self._set_stage("awaiting_reset")
                    self.help_requests["manual_reset"] = {
                        "reason": "reset the scene for the forward task, then press resume",
                        "since": time.time(),
                    }

    def _practice_action(self, state: ArmState, obs: Observation) -> Decision:
        sched = self.schedule
        assert sched is not None
        tele = self._active_teleop()
        if tele is not None:
            if not self._takeover:
                self._takeover = True
                self.counters.interventions += 1
                self.counters.takeovers += 1
                iv = sched.record_intervention("takeover", f"{tele.name} took over")
                self._store_event({"type": "intervention", **iv.as_dict()})
                self._event("takeover", teleop=tele.name)
            return Decision(tele.action(), intervention=True, source=f"teleop:{tele.name}")
        if self._takeover:
            self._takeover = False
            self._event("takeover_released")
        policy = sched.params.policy
        if policy == "hold":
            return Decision(self.hold_action(state), source="hold")
        if policy == "learned":
            active = self.policies.active(sched.direction)
            if active is not None:
                try:
                    action = active.runner.act(obs.data, deterministic=sched.params.deterministic)
                    return Decision(np.asarray(action), policy_version=active.version, source="policy")
                except Exception as exc:  # a failing policy must not stop the robot's loop
                    self.counters.policy_errors += 1
                    log.warning("policy %s v%d failed: %s", sched.direction, active.version, exc)
                    return Decision(self.hold_action(state), source="policy_error")
        # Seed phase (MEDALPP.md): uniform random actions, never the untrained policy.
        return Decision(self.rng.uniform(-1.0, 1.0, self.space.dim).astype(np.float32), source="random")

    def _demo_tick(self, state: ArmState, obs: Observation | None, stale: str | None) -> Decision:
        demo = self.demo
        assert demo is not None
        if demo.stage == "preparing":
            if not self._homing_done(state):
                return Decision(None, source="homing")
            self._begin_demo_recording()
        if state.mode != ArmMode.READY or obs is None:
            return Decision(None)  # hold; the demo goes on when the arm and cameras are back
        if demo.source == "expert":
            assert self.expert is not None
            action, src = self.expert.act(demo.direction), "expert"
        else:
            tele = self._active_teleop()
            action = tele.action() if tele is not None else self.hold_action(state)
            src = f"teleop:{tele.name}" if tele is not None else "teleop:idle"
        demo.steps += 1
        return Decision(np.asarray(action), record=True, source=src)

    def _demo_after_record(self) -> None:
        demo = self.demo
        assert demo is not None
        if demo.source == "expert" and self.task is not None:
            if demo.succeeded_at is None and self.task.success(demo.direction):
                demo.succeeded_at = demo.steps
            if demo.succeeded_at is not None and demo.steps >= demo.succeeded_at + DEMO_EXTRA_STEPS:
                self.finish_demo(success=self.task.success(demo.direction))
                return
        if demo.steps >= demo.max_steps:
            ok = self.task.success(demo.direction) if (self.task and demo.source == "expert") else True
            self.finish_demo(success=ok)

    # ------------------------------------------------------------------ helpers
    def step_record(self, obs: Observation, decision: Decision, executed: np.ndarray) -> None:
        if self.recorder is None:
            return
        step = dict(obs.data)
        step["action"] = executed.astype(np.float32)
        step["timestamp"] = now()
        step["policy_version"] = np.int32(decision.policy_version)
        step["intervention"] = bool(decision.intervention)
        self.recorder.step(step)

    def _begin_demo_recording(self) -> None:
        demo = self.demo
        assert demo is not None and self.recorder is not None
        demo.stage = "recording"
        self.recorder.begin("demo", demo.direction, {"source": demo.source, "robot": self.cfg.robot})

    def _open_segment(self) -> None:
        sched = self.schedule
        assert sched is not None and self.recorder is not None
        self.recorder.begin(
            sched.params.kind,
            sched.direction,
            {
                "session": sched.id,
                "phase": sched.phase,
                "phase_step_start": sched.phase_step,
                "policy_source": sched.params.policy,
                "robot": self.cfg.robot,
            },
        )
        self._segment_open = True

    def _close_segment(self, reason: str) -> None:
        if self._segment_open and self.recorder is not None:
            self.recorder.end(success=None, end_reason=reason)
        self._segment_open = False

    def _store_event(self, event: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder.event(event)

    def _end_session(self, reason: str) -> dict[str, Any]:
        assert self.schedule is not None
        self._close_segment(reason=reason)
        summary = self.schedule.summary()
        summary["end_reason"] = reason
        self.last_session = summary
        self.finished_sessions += 1
        self._event("session_ended", reason=reason, steps=self.schedule.total_steps)
        self.schedule = None
        self._to_idle()
        return summary

    def _to_idle(self) -> None:
        self.mode = "idle"
        self.stage = "idle"
        self.demo = None
        self._takeover = False
        self.help_requests.pop("manual_reset", None)

    def _start_homing(self) -> None:
        self.arm.go_home()
        self._homing_since = time.monotonic()
        if self.mode == "practice":
            self._set_stage("homing")
        elif self.demo is not None:
            self.demo.stage = "preparing"

    def _homing_done(self, state: ArmState) -> bool:
        if state.mode == ArmMode.HOMING:
            if self._homing_since is not None and time.monotonic() - self._homing_since > HOMING_TIMEOUT_S:
                self.help_requests["homing"] = {"reason": "the arm did not reach home", "since": time.time()}
            return False
        if state.mode != ArmMode.READY:
            return False
        self.help_requests.pop("homing", None)
        return True

    def _set_stage(self, stage: str) -> None:
        self.stage = stage

    def _teleop_buttons(self) -> None:
        """The demo button (SpaceMouse right button): start a teleop demo when idle, finish it when recording."""
        for t in self.teleops:
            try:
                events = t.poll_events()
            except Exception:
                continue
            for ev in events:
                if ev.kind != "demo_toggle":
                    continue
                try:
                    if self.mode == "idle":
                        self.start_demo(self.teleop_demo_direction, "teleop", self.teleop_demo_max_steps)
                    elif self.mode == "demo" and self.demo is not None and self.demo.source == "teleop":
                        self.finish_demo(success=True)
                except CommandError as exc:
                    self._event("teleop_button_ignored", reason=str(exc))

    def _sync_idle_teleops(self, state: ArmState) -> None:
        """An idle teleop follows the arm's gripper, so a takeover, a jog or a toggle starts from
        what the arm really holds (not from the state the teleop last commanded)."""
        for t in self.teleops:
            try:
                if not t.is_active():
                    t.sync_gripper(state.gripper_closed)
            except Exception:
                continue

    def _active_teleop(self) -> Teleop | None:
        for t in self.teleops:
            try:
                if t.is_active():
                    return t
            except Exception:  # a broken input device must not stop the loop
                continue
        return None

    def hold_action(self, state: ArmState) -> np.ndarray:
        a = np.zeros(self.space.dim, dtype=np.float32)
        a[-1] = 1.0 if state.gripper_closed else -1.0
        return a

    def _check_help(self, state: ArmState) -> None:
        why = self.arm.help_request()
        if why:
            if "arm" not in self.help_requests:
                self._event("help_requested", source="arm", reason=why)
            self.help_requests["arm"] = {"reason": why, "since": self.help_requests.get("arm", {}).get("since", time.time())}
        else:
            self.help_requests.pop("arm", None)
        if self.task is not None and self.mode == "practice":
            if not self.task.object_in_workspace():
                if "object" not in self.help_requests:
                    self._event("help_requested", source="task", reason="object left the workspace")
                    if self.schedule is not None and self.schedule.reset_requested is None:
                        self.schedule.request_reset("object left the workspace (robot asked for help)")
                self.help_requests["object"] = {
                    "reason": "the object left the workspace: a reset is scheduled for the next forward phase",
                    "since": time.time(),
                }
            else:
                self.help_requests.pop("object", None)

    def _event(self, kind: str, **data: Any) -> None:
        self.events.append({"t": time.time(), "event": kind, **data})
        del self.events[:-200]

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "stage": self.stage,
            "session": None if self.schedule is None else self.schedule.summary(),
            "demo": None
            if self.demo is None
            else {
                "direction": self.demo.direction,
                "source": self.demo.source,
                "steps": self.demo.steps,
                "stage": self.demo.stage,
            },
            "takeover": self._takeover,
            "counters": dict(self.counters.__dict__),
            "help_requests": [{"source": k, **v} for k, v in self.help_requests.items()],
            "recent_events": self.events[-20:],
        }
