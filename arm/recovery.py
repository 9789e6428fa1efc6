"""Unattended recovery from controller errors (reflexes), as an explicit state machine.

    RUNNING --reflex--> REFLEX --> RECOVERING --> VERIFY --+--> RETREAT --+--> HOME --+--> RUNNING
                                      ^              |     |              |           |
                                      +--- retry ----+     +--------------+-----------+
    any state --too many failures in the window, recovery failed, user stop--> PAUSED --resume()--> ...

A libfranka ``ControlException`` (a reflex; asynchronous ones surface on the next ``move()`` or
poll) is reported with `on_reflex()`. `step()` then calls the robot's automatic error recovery,
and checks the robot *mode* afterwards, because the error flags can clear while the mode stays
latched in Reflex: it polls the mode for up to `verify_s` and retries the recovery a bounded
number of times. Then it optionally moves up by `retreat_m` and/or goes home, and resumes. Every
reflex and recovery is counted in `ArmStats`. More than `max_failures` reflexes within
`window_s` seconds, a recovery that keeps failing, or an engaged user stop pause the arm until
the operator calls `resume()`; `help_reason` says why. Nothing here ever waits for console input.

Threading: `on_reflex()`, `resume()` and `cancel_motion()` only queue a request (any thread, no
blocking). All transitions happen in `step()`, called from one thread (the arm's helper thread;
the unit tests call it directly). A step makes at most one robot call (``recover()`` takes
~60 ms on franka-sim); it never sleeps: waits are deadlines checked on the next step.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from collections.abc import Callable
from typing import Protocol

from arm.base import ArmMode, ArmStats
from spec.config import RecoveryConfig

log = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 50  # ArmStats.errors is a bounded history, not a log
READY_MODES = frozenset({"Idle", "Move"})  # franky RobotMode names that accept motions
IN_PROGRESS_MODES = frozenset({"AutomaticErrorRecovery"})  # the robot is still working on it
USER_STOP_MODES = frozenset({"UserStopped"})  # the enabling/stop button: only a human can clear it


class RecoveryState(enum.StrEnum):
    RUNNING = "running"
    REFLEX = "reflex"
    RECOVERING = "recovering"
    VERIFY = "verify"
    RETREAT = "retreat"
    HOME = "home"
    PAUSED = "paused"


# What an arm reports as its mode while its recovery machine is past RUNNING (sim and franky alike).
RECOVERY_MODES = {
    RecoveryState.REFLEX: ArmMode.REFLEX,
    RecoveryState.RECOVERING: ArmMode.RECOVERING,
    RecoveryState.VERIFY: ArmMode.RECOVERING,
    RecoveryState.RETREAT: ArmMode.RECOVERING,
    RecoveryState.HOME: ArmMode.RECOVERING,
    RecoveryState.PAUSED: ArmMode.PAUSED,
}


class RecoverableRobot(Protocol):
    """What the state machine needs from a robot; `FrankyArm` adapts franky to it."""

    def recover(self) -> bool:
        """Run the robot's automatic error recovery (may block ~100 ms); False if it failed."""

    def robot_mode(self) -> str:
        """The robot's mode as franky names it: Idle, Move, Reflex, UserStopped, ..."""

    def start_retreat(self, up_m: float) -> None:
        """Start (asynchronously) moving the end-effector up by `up_m` metres."""

    def start_home(self) -> None:
        """Start (asynchronously) moving to the home joint pose."""

    def motion_running(self) -> bool:
        """Whether the motion started last is still running; raises its error if it failed."""


class RecoveryMachine:
    def __init__(
        self,
        robot: RecoverableRobot,
        cfg: RecoveryConfig,
        stats: ArmStats,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 3,
        verify_s: float = 1.0,
        retry_delay_s: float = 0.1,
        motion_timeout_s: float = 20.0,
        is_control_error: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.robot = robot
        self.cfg = cfg
        self.stats = stats
        self.clock = clock
        self.max_attempts = max_attempts
        self.verify_s = verify_s
        self.retry_delay_s = retry_delay_s
        self.motion_timeout_s = motion_timeout_s
        # Which exceptions from a retreat/home motion count as a new reflex (others propagate).
        self._is_control_error = is_control_error or (lambda exc: True)
        self._state = RecoveryState.RUNNING
        self._help: str | None = None
        self._failures: collections.deque[float] = collections.deque()
        self._requests: collections.deque[tuple[str, str]] = collections.deque()
        self._attempts = 0
        self._deadline = 0.0
        self._not_before = 0.0
        self._motion_started = False
        self._pause_reason: str | None = None  # set when this episode must end in PAUSED
        self._skip_motion = False
        self._last_error = ""
        self.episodes = 0  # completed recoveries; the arm uses it to notice a fresh start

    # -- what the arm reads (any thread) ---------------------------------------------------------

    @property
    def state(self) -> RecoveryState:
        state = self._state
        if state is RecoveryState.RUNNING and any(kind == "reflex" for kind, _ in list(self._requests)):
            return RecoveryState.REFLEX
        return state

    @property
    def active(self) -> bool:
        """True while `step()` has work to do."""
        return bool(self._requests) or self._state not in (RecoveryState.RUNNING, RecoveryState.PAUSED)

    @property
    def help_reason(self) -> str | None:
        return self._help if self._state is RecoveryState.PAUSED else None

    # -- requests (any thread, never block) --------------------------------------------------------

    def on_reflex(self, error: str) -> None:
        """A ControlException (or a robot mode of Reflex) was observed."""
        self.stats.reflexes += 1
        self.stats.last_error = error
        self.stats.errors.append(error)
        del self.stats.errors[:-MAX_ERRORS_KEPT]
        self._requests.append(("reflex", error))

    def resume(self) -> None:
        """The operator's decision to leave PAUSED (clears the failure window)."""
        self._requests.append(("resume", ""))

    def fault(self, reason: str) -> None:
        """Something unexpected went wrong while recovering: stop trying and ask the operator."""
        self._requests.append(("fault", reason))

    def cancel_motion(self) -> None:
        """An emergency stop: skip or abandon the retreat and home moves of this episode."""
        self._requests.append(("cancel_motion", ""))

    # -- the machine (one thread) ------------------------------------------------------------------

    def step(self) -> RecoveryState:
        """Advance by at most one robot call; returns the new state."""
        while self._requests:
            kind, error = self._requests.popleft()
            self._handle_request(kind, error)
        now = self.clock()
        if now < self._not_before:
            return self._state
        handler = {
            RecoveryState.REFLEX: self._step_reflex,
            RecoveryState.RECOVERING: self._step_reflex,
            RecoveryState.VERIFY: self._step_verify,
            RecoveryState.RETREAT: self._step_motion,
            RecoveryState.HOME: self._step_motion,
        }.get(self._state)
        if handler is not None:
            handler(now)
        return self._state

    def _handle_request(self, kind: str, error: str) -> None:
        now = self.clock()
        if kind == "reflex":
            self._last_error = error
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.cfg.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.cfg.max_failures:
                self._pause_reason = (
                    f"{len(self._failures)} reflexes within {self.cfg.window_s:g} s "
                    f"(max_failures={self.cfg.max_failures}); last error: {error}"
                )
            if self._state is RecoveryState.PAUSED:
                return  # recovered on resume()
            self._begin_episode()
        elif kind == "resume":
            if self._state is not RecoveryState.PAUSED:
                return
            self._failures.clear()
            self._pause_reason = None
            self._help = None
            log.info("resume requested by the operator")
            # Look at the robot first: a healthy one resumes at once, one still (or again) in
            # Reflex goes through recovery.
            self._begin_episode(skip_motion=True)
            self._state = RecoveryState.VERIFY
            self._deadline = now
        elif kind == "fault":
            self._pause(error)
        elif kind == "cancel_motion":
            self._skip_motion = True
            if self._state in (RecoveryState.RETREAT, RecoveryState.HOME):
                self._finish()

    def _begin_episode(self, skip_motion: bool = False) -> None:
        self._state = RecoveryState.REFLEX
        self._attempts = 0
        self._not_before = 0.0
        self._motion_started = False
        self._skip_motion = skip_motion

    def _step_reflex(self, now: float) -> None:
        self._state = RecoveryState.RECOVERING
        self._attempts += 1
        try:
            ok = self.robot.recover()
        except Exception as exc:  # a network error during recovery: retry, then pause
            log.warning("error recovery attempt %d raised %s: %s", self._attempts, type(exc).__name__, exc)
            ok = False
            self._last_error = f"{type(exc).__name__}: {exc}"
        self._state = RecoveryState.VERIFY
        # A failed call gets no grace period: go straight to the retry decision.
        self._deadline = self.clock() + (self.verify_s if ok else 0.0)

    def _step_verify(self, now: float) -> None:
        mode = self.robot.robot_mode()
        if mode in READY_MODES:
            if self._attempts:
                self.stats.recoveries += 1
            log.info("recovered after %d attempt(s); robot mode %s", self._attempts, mode)
            if self._pause_reason is not None:
                self._pause(self._pause_reason)
            elif self.cfg.retreat_m > 0 and not self._skip_motion:
                self._start_motion(RecoveryState.RETREAT)
            elif self.cfg.go_home_after and not self._skip_motion:
                self._start_motion(RecoveryState.HOME)
            else:
                self._finish()
            return
        if mode in USER_STOP_MODES:
            self._pause("the user stop is engaged: release it, check the scene, then resume")
            return
        if mode in IN_PROGRESS_MODES or now < self._deadline:
            return  # look again on the next step
        if self._attempts < self.max_attempts:
            self._state = RecoveryState.RECOVERING
            self._not_before = now + self.retry_delay_s
            return
        self.stats.failed_recoveries += 1
        self._pause(
            f"automatic error recovery failed {self._attempts} times: robot mode still {mode} "
            f"(last error: {self._last_error})"
        )

    def _start_motion(self, state: RecoveryState) -> None:
        self._state = state
        self._motion_started = False
        self._not_before = 0.0

    def _step_motion(self, now: float) -> None:
        try:
            if not self._motion_started:
                log.info("starting the %s move", self._state.value)
                if self._state is RecoveryState.RETREAT:
                    self.robot.start_retreat(self.cfg.retreat_m)
                else:
                    self.robot.start_home()
                    self.stats.homings += 1
                self._motion_started = True
                self._deadline = now + self.motion_timeout_s
                return
            running = self.robot.motion_running()
        except Exception as exc:
            if not self._is_control_error(exc):
                raise
            # The retreat or home move itself hit a reflex: a new failure, a new episode.
            self.on_reflex(f"during {self._state.value}: {exc}")
            return
        if running:
            if now > self._deadline:
                self._pause(f"the {self._state.value} move did not finish within {self.motion_timeout_s:g} s")
            return
        if self._state is RecoveryState.RETREAT and self.cfg.go_home_after and not self._skip_motion:
            self._start_motion(RecoveryState.HOME)
        else:
            self._finish()

    def _finish(self) -> None:
        self._state = RecoveryState.RUNNING
        self.episodes += 1

    def _pause(self, reason: str) -> None:
        log.warning("arm paused, operator needed: %s", reason)
        self._help = reason
        self._state = RecoveryState.PAUSED
        self.episodes += 1
