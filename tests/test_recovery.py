"""The recovery state machine (arm/recovery.py) against a scripted fake robot.

A unit test of the transitions; the real path (franky against franka-sim, a reflex provoked by
pausing the client) is in test_franky_sim.py.
"""

from __future__ import annotations

import pytest

from arm.base import ArmStats
from arm.recovery import RecoveryMachine, RecoveryState
from spec.config import RecoveryConfig

S = RecoveryState


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ReflexDuringMotion(RuntimeError):
    pass


class FakeRobot:
    """Scripted: `modes` is what robot_mode() answers, one per call (the last one repeats)."""

    def __init__(self, modes=("Idle",), recover_results=(True,), motion_polls=2, motion_error=None):
        self.modes = list(modes)
        self.recover_results = list(recover_results)
        self.motion_polls = motion_polls
        self.motion_error = motion_error
        self.calls: list[str] = []
        self._polls_left = 0

    def recover(self) -> bool:
        self.calls.append("recover")
        return self.recover_results.pop(0) if len(self.recover_results) > 1 else self.recover_results[0]

    def robot_mode(self) -> str:
        self.calls.append("mode")
        return self.modes.pop(0) if len(self.modes) > 1 else self.modes[0]

    def start_retreat(self, up_m: float) -> None:
        self.calls.append(f"retreat {up_m:g}")
        self._polls_left = self.motion_polls

    def start_home(self) -> None:
        self.calls.append("home")
        self._polls_left = self.motion_polls

    def motion_running(self) -> bool:
        if self.motion_error is not None:
            err, self.motion_error = self.motion_error, None
            raise err
        self._polls_left -= 1
        return self._polls_left > 0


def machine(robot, clock=None, is_control_error=None, **cfg):
    params = {"max_failures": 3, "window_s": 600.0, "retreat_m": 0.02, "go_home_after": False} | cfg
    return RecoveryMachine(
        robot,
        RecoveryConfig(**params),
        ArmStats(),
        clock=clock or Clock(),
        verify_s=0.5,
        is_control_error=is_control_error,
    )


def run(m: RecoveryMachine, clock: Clock | None = None, max_steps: int = 50, dt: float = 0.05) -> list[S]:
    """Step until the machine is idle; returns the distinct states visited, in order."""
    seen = [m.state]
    for _ in range(max_steps):
        if not m.active:
            return seen
        state = m.step()
        if state != seen[-1]:
            seen.append(state)
        if clock is not None:
            clock.t += dt
    raise AssertionError(f"machine still active after {max_steps} steps, in {m.state}")


def test_reflex_is_recovered_verified_retreated_and_counted():
    robot = FakeRobot(modes=["Idle"])
    m = machine(robot)
    assert m.state is S.RUNNING and not m.active
    m.on_reflex("communication_constraints_violation")
    assert m.state is S.REFLEX and m.active  # visible at once, before any step runs
    seen = run(m)
    assert seen == [S.REFLEX, S.VERIFY, S.RETREAT, S.RUNNING]
    assert robot.calls[:3] == ["recover", "mode", "retreat 0.02"]
    assert (m.stats.reflexes, m.stats.recoveries, m.stats.failed_recoveries) == (1, 1, 0)
    assert m.stats.last_error == "communication_constraints_violation"
    assert m.help_reason is None and m.episodes == 1


def test_mode_latched_in_reflex_is_polled_then_recovery_retried():
    clock = Clock()
    # The error flags cleared (recover() says True) but the mode stays Reflex past verify_s once.
    robot = FakeRobot(modes=["Reflex"] * 20 + ["Idle"])
    m = machine(robot, clock, retreat_m=0.0)
    m.on_reflex("joint_reflex")
    seen = run(m, clock, dt=0.05)
    assert seen[-1] is S.RUNNING
    assert robot.calls.count("recover") == 2  # 0.5 s of Reflex, then a second recovery
    assert robot.calls.count("mode") == 21
    assert m.stats.recoveries == 1 and m.stats.failed_recoveries == 0


def test_recovery_that_keeps_failing_pauses_with_a_reason():
    clock = Clock()
    robot = FakeRobot(modes=["Reflex"], recover_results=[False])
    m = machine(robot, clock)
    m.on_reflex("cartesian_reflex")
    seen = run(m, clock)
    assert seen[-1] is S.PAUSED and not m.active
    assert robot.calls.count("recover") == 3  # the bounded number of attempts
    assert m.stats.failed_recoveries == 1 and m.stats.recoveries == 0
    assert "failed 3 times" in m.help_reason and "Reflex" in m.help_reason


def test_a_retry_waits_for_its_delay_without_sleeping():
    clock = Clock()
    robot = FakeRobot(modes=["Reflex"], recover_results=[False, True])
    m = machine(robot, clock, retreat_m=0.0)
    m.on_reflex("x")
    m.step()  # recover() -> False
    m.step()  # verify: no grace period after a failed call -> schedule a retry
    assert m.state is S.RECOVERING
    for _ in range(5):  # same instant: the retry delay has not passed
        m.step()
    assert robot.calls.count("recover") == 1
    clock.t += 0.2
    m.step()
    assert robot.calls.count("recover") == 2


def test_repeated_failures_within_the_window_pause_until_resume():
    clock = Clock()
    robot = FakeRobot(modes=["Idle"])
    m = machine(robot, clock, max_failures=3, window_s=60.0, retreat_m=0.0)
    for i in range(2):
        m.on_reflex(f"reflex {i}")
        assert run(m, clock)[-1] is S.RUNNING
        clock.t += 10.0
    m.on_reflex("reflex 2")
    assert run(m, clock)[-1] is S.PAUSED
    assert "3 reflexes within 60 s" in m.help_reason and "reflex 2" in m.help_reason
    # Recovered before pausing, so the robot is holding still, not latched in Reflex.
    assert m.stats.recoveries == 3 and m.stats.reflexes == 3
    # Paused stays paused: steps do nothing until the operator decides.
    calls = len(robot.calls)
    for _ in range(5):
        assert m.step() is S.PAUSED
    assert len(robot.calls) == calls

    m.resume()
    assert run(m, clock)[-1] is S.RUNNING
    assert m.help_reason is None
    assert robot.calls[calls:] == ["mode"]  # healthy robot: just looked, no recovery needed
    assert m.stats.recoveries == 3
    # The window was cleared by resume(): one more reflex is recovered, not paused.
    m.on_reflex("after resume")
    assert run(m, clock)[-1] is S.RUNNING


def test_failures_spread_beyond_the_window_never_pause():
    clock = Clock()
    m = machine(FakeRobot(), clock, max_failures=2, window_s=30.0, retreat_m=0.0)
    for i in range(5):
        m.on_reflex(f"reflex {i}")
        assert run(m, clock)[-1] is S.RUNNING
        clock.t += 31.0
    assert m.stats.reflexes == 5 and m.stats.recoveries == 5


def test_resume_of_a_robot_still_in_reflex_recovers_it():
    clock = Clock()
    robot = FakeRobot(modes=["Reflex"], recover_results=[False])
    m = machine(robot, clock, max_failures=1)
    m.on_reflex("x")
    assert run(m, clock)[-1] is S.PAUSED
    robot.modes, robot.recover_results = ["Reflex", "Idle"], [True]
    m.resume()
    assert run(m, clock)[-1] is S.RUNNING
    assert robot.calls.count("recover") == 4 and m.stats.recoveries == 1
    assert not any(c.startswith("retreat") for c in robot.calls)  # resume never moves the arm


def test_go_home_after_runs_after_the_retreat_and_is_counted():
    robot = FakeRobot()
    m = machine(robot, go_home_after=True)
    m.on_reflex("x")
    assert run(m) == [S.REFLEX, S.VERIFY, S.RETREAT, S.HOME, S.RUNNING]
    assert [c for c in robot.calls if c != "mode"] == ["recover", "retreat 0.02", "home"]
    assert m.stats.homings == 1


def test_a_reflex_during_the_retreat_starts_a_new_counted_episode():
    robot = FakeRobot(motion_error=ReflexDuringMotion("cartesian_reflex"))
    m = machine(robot, is_control_error=lambda exc: isinstance(exc, ReflexDuringMotion))
    m.on_reflex("first")
    seen = run(m)
    assert seen[-1] is S.RUNNING and S.RETREAT in seen
    assert m.stats.reflexes == 2 and m.stats.recoveries == 2
    assert "during retreat" in m.stats.last_error


def test_unexpected_errors_are_not_swallowed():
    robot = FakeRobot(motion_error=KeyError("bug"))
    m = machine(robot, is_control_error=lambda exc: isinstance(exc, ReflexDuringMotion))
    m.on_reflex("x")
    with pytest.raises(KeyError):
        run(m)


def test_user_stop_pauses_at_once():
    robot = FakeRobot(modes=["UserStopped"])
    m = machine(robot)
    m.on_reflex("x")
    assert run(m)[-1] is S.PAUSED
    assert "user stop" in m.help_reason
    assert robot.calls.count("recover") == 1


def test_emergency_stop_cancels_the_retreat():
    robot = FakeRobot(motion_polls=100)
    m = machine(robot, go_home_after=True)
    m.on_reflex("x")
    while m.state is not S.RETREAT:
        m.step()
    m.step()  # the retreat move starts
    m.cancel_motion()
    assert m.step() is S.RUNNING
    assert "home" not in robot.calls


def test_a_move_that_never_finishes_pauses():
    clock = Clock()
    robot = FakeRobot(motion_polls=10**6)
    m = RecoveryMachine(
        robot, RecoveryConfig(retreat_m=0.02), ArmStats(), clock=clock, motion_timeout_s=2.0
    )
    m.on_reflex("x")
    assert run(m, clock, max_steps=200)[-1] is S.PAUSED
    assert "did not finish within 2 s" in m.help_reason


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="max_attempts"):
        RecoveryMachine(FakeRobot(), RecoveryConfig(), ArmStats(), max_attempts=0)
