"""The practice schedule (MEDALPP.md "Switching, resets and interventions")."""

from __future__ import annotations

from robot_server.session import PracticeSchedule, SessionParams


def run_phase(s: PracticeSchedule) -> None:
    while not s.phase_over:
        s.count_step()


def test_alternates_every_phase_and_homes_every_m_steps():
    s = PracticeSchedule(SessionParams(), phase_steps=200, home_every=1000)
    seen, homes = [], []
    for _ in range(10):
        seen.append(s.direction)
        run_phase(s)
        sw = s.switch()
        homes.append(sw.go_home)
    assert seen == ["forward", "backward"] * 5
    # 1000 steps = after the 5th and the 10th phase.
    assert [i for i, h in enumerate(homes) if h] == [4, 9]
    assert s.total_steps == 2000 and s.homings == 2


def test_manual_reset_happens_only_at_the_switch_to_forward_and_counts():
    s = PracticeSchedule(SessionParams(), phase_steps=5, home_every=0)
    run_phase(s)
    s.request_reset("cube fell over")
    sw = s.switch()  # forward -> backward: the reset waits
    assert sw.direction == "backward" and not sw.manual_reset
    run_phase(s)
    sw = s.switch()  # backward -> forward: now
    assert sw.direction == "forward" and sw.manual_reset and sw.go_home
    assert [iv.kind for iv in s.interventions] == ["manual_reset"]
    assert s.interventions[0].reason == "cube fell over"
    run_phase(s)
    run_phase(s)
    assert not s.switch().manual_reset  # one request, one reset


def test_max_steps_and_no_alternation():
    s = PracticeSchedule(SessionParams(max_steps=7, alternate=False, phase_steps=3), phase_steps=200,
                         home_every=0)
    dirs = []
    while not s.done:
        s.count_step()
        if s.phase_over:
            s.switch()
        dirs.append(s.direction)
    assert s.total_steps == 7
    assert set(dirs) == {"forward"}
