"""The credit schedule alone (learner/schedule.py): pure Python, the per-step rules of MEDALPP.md."""

from __future__ import annotations

import subprocess
import sys

from learner.schedule import CreditSchedule


def test_the_schedule_module_does_not_import_torch():
    code = "import sys, learner.schedule; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def run(schedule: CreditSchedule, steps: list[str], clf_ready: bool = True) -> list[tuple[int, str, str]]:
    """Collect steps one at a time (direction per step) and work off what is owed after each."""
    agent = dict.fromkeys(("forward", "backward"), 0)
    clf = dict.fromkeys(("forward", "backward"), 0)
    post_seed = dict.fromkeys(("forward", "backward"), 0)
    done = []
    for i, d in enumerate(steps):
        if i >= schedule.seed_steps:
            post_seed[d] += 1
        schedule.credit(i + 1, post_seed, agent, clf)
        while (w := schedule.next_work(agent, clf, dict.fromkeys(agent, True), dict.fromkeys(clf, clf_ready))):
            (clf if w.kind == "classifier" else agent)[w.direction] += 1
            done.append((i + 1, w.kind, w.direction))
    return done


def test_per_step_schedule_seed_then_one_agent_step_per_step_and_periodic_classifier_steps():
    s = CreditSchedule(seed_steps=10, clf_every={"forward": 20, "backward": 5}, backlog_steps=1000)
    steps = (["forward"] * 10 + ["backward"] * 10) * 3  # 60 steps, phases of 10
    done = run(s, steps)
    agent_steps = [(t, d) for t, k, d in done if k == "agent"]
    assert [t for t, _ in agent_steps] == list(range(11, 61))  # one per post-seed env step
    assert all(d == steps[t - 1] for t, d in agent_steps)  # only the agent in control
    clf = {d: [t for t, k, dd in done if k == "classifier" and dd == d] for d in ("forward", "backward")}
    assert clf["forward"] == [10, 30, 50] and clf["backward"] == [10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]
    # The classifier step due at the end of the seed phase comes before the first agent step.
    assert done[0][1] == "classifier" and done[1][1] == "classifier"


def test_agents_wait_for_their_classifiers_first_step():
    s = CreditSchedule(seed_steps=0, clf_every={"forward": 100, "backward": 100}, backlog_steps=1000)
    assert run(s, ["forward"] * 5, clf_ready=False) == []  # owed, but no reward classifier yet
    assert s.owed({"forward": 0, "backward": 0}, {"forward": 0, "backward": 0})["agent/forward"] == 5


def test_backlog_cap_drops_the_excess():
    s = CreditSchedule(seed_steps=0, clf_every={"forward": 10, "backward": 10}, backlog_steps=4)
    s.credit(100, {"forward": 60, "backward": 40}, {"forward": 0, "backward": 0}, {"forward": 0, "backward": 0})
    owed = s.owed({"forward": 0, "backward": 0}, {"forward": 0, "backward": 0})
    assert owed == {"agent/forward": 4, "agent/backward": 4, "clf/forward": 1, "clf/backward": 1}
    assert s.accounts.dropped == {"forward": 56, "backward": 36}


def test_single_agent_baselines_only_schedule_the_forward_direction():
    s = CreditSchedule(seed_steps=0, clf_every={"forward": 10, "backward": 10}, backlog_steps=100, directions=("forward",))
    done = run(s, ["forward"] * 20)
    assert {d for _, _, d in done} == {"forward"} and sum(k == "agent" for _, k, _ in done) == 20
