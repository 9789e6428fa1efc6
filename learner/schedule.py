"""The MEDAL++ credit schedule: which update is owed after which env steps. Pure Python, no torch.

MEDALPP.md says "per env step": UTD critic updates and one actor update for the agent in control,
a C_f step every 1,000 env steps and a C_b step every 500 (robot) / 100 (sim). Both drivers keep
the same accounts:

- each practice step collected in direction d after the seed phase ended (the first
  `seed_steps` practice steps, counted in collection order) credits agent d with one "agent step"
  (UTD critic updates on fresh batches, then one actor update);
- classifier c is credited one step when the seed phase ends and one more every `clf_every[c]`
  env steps after that;
- an agent never updates on a classifier that has never trained (a late start, a resume, a
  classifier with no positives yet): its reward would be noise. Its steps stay owed until the
  classifier has had its first step;
- the backlog is capped: an agent never owes more than `backlog_steps` agent steps, a classifier
  never more than max(1, backlog_steps // every) steps; the excess is dropped and counted. So a
  slow learner trains on the newest data instead of an ever older backlog.

The synchronous sim harness credits after every env step and works the debt off at once (so it
runs exactly the per-step schedule); the store-tail trainer credits as data arrives in bursts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spec.direction import DIRECTIONS


def _zeros() -> dict[str, int]:
    return dict.fromkeys(DIRECTIONS, 0)


@dataclass
class Accounts:
    """What has been credited and dropped, per direction (saved with the training state)."""

    credited: dict[str, int] = field(default_factory=_zeros)
    post_seed_credited: dict[str, int] = field(default_factory=_zeros)
    dropped: dict[str, int] = field(default_factory=_zeros)
    clf_credited: dict[str, int] = field(default_factory=_zeros)
    clf_ticks_credited: dict[str, int] = field(default_factory=_zeros)
    clf_dropped: dict[str, int] = field(default_factory=_zeros)
    pushed: dict[str, int] = field(default_factory=dict)  # newest version submitted per direction


@dataclass(frozen=True)
class Work:
    kind: str  # "agent" | "classifier"
    direction: str


class CreditSchedule:
    """Credits agent and classifier steps from env-step counts; picks the next unit of work.

    `directions` are the agents (and their reward classifiers) being trained: both for MEDAL++,
    only "forward" for single-agent baselines.
    """

    def __init__(
        self,
        seed_steps: int,
        clf_every: Mapping[str, int],
        backlog_steps: int,
        directions: Sequence[str] = DIRECTIONS,
        accounts: Accounts | None = None,
    ) -> None:
        self.seed_steps = int(seed_steps)
        self.clf_every = dict(clf_every)
        self.backlog_steps = int(backlog_steps)
        self.directions = tuple(directions)
        self.accounts = accounts or Accounts()

    def clf_ticks(self, env_steps: int, direction: str) -> int:
        """Classifier steps due after `env_steps` env steps: one as the seed phase ends, then one per period."""
        if env_steps < self.seed_steps:
            return 0
        return (env_steps - self.seed_steps) // self.clf_every[direction] + 1

    def credit(
        self,
        env_steps: int,
        post_seed: Mapping[str, int],
        agent_done: Mapping[str, int],
        clf_done: Mapping[str, int],
    ) -> None:
        """Bring the accounts up to `env_steps` collected (post_seed[d]: d's steps past the seed phase)."""
        a = self.accounts
        for d in self.directions:
            fresh = post_seed[d] - a.post_seed_credited[d]
            if fresh > 0:
                a.credited[d] += fresh
                a.post_seed_credited[d] = post_seed[d]
            if a.credited[d] - agent_done[d] > self.backlog_steps:
                a.dropped[d] += a.credited[d] - agent_done[d] - self.backlog_steps
                a.credited[d] = agent_done[d] + self.backlog_steps
            ticks = self.clf_ticks(env_steps, d)
            fresh = ticks - a.clf_ticks_credited[d]
            if fresh > 0:
                a.clf_credited[d] += fresh
                a.clf_ticks_credited[d] = ticks
            cap = max(1, self.backlog_steps // self.clf_every[d])
            if a.clf_credited[d] - clf_done[d] > cap:
                a.clf_dropped[d] += a.clf_credited[d] - clf_done[d] - cap
                a.clf_credited[d] = clf_done[d] + cap

    def owed(self, agent_done: Mapping[str, int], clf_done: Mapping[str, int]) -> dict[str, int]:
        a = self.accounts
        out = {f"agent/{d}": a.credited[d] - agent_done[d] for d in self.directions}
        return out | {f"clf/{d}": a.clf_credited[d] - clf_done[d] for d in self.directions}

    def next_work(
        self,
        agent_done: Mapping[str, int],
        clf_done: Mapping[str, int],
        agent_ready: Mapping[str, bool],
        clf_ready: Mapping[str, bool],
    ) -> Work | None:
        """The owed unit of work furthest behind in env steps, or None.

        A classifier step stands for `clf_every` env steps, an agent step for about
        len(directions) env steps (the directions alternate), so when the CPU cannot keep up both
        fall behind in proportion instead of classifier steps starving the agents. On a tie the
        classifier goes first, as in the per-step schedule. `*_ready` say whether the data to
        sample exists; an agent also waits for its reward classifier's first step.
        """
        a = self.accounts
        work: list[tuple[int, int, str]] = []
        for d in self.directions:
            if a.clf_credited[d] > clf_done[d] and clf_ready[d]:
                work.append(((a.clf_credited[d] - clf_done[d]) * self.clf_every[d], 1, d))
            if a.credited[d] > agent_done[d] and agent_ready[d] and clf_done[d] > 0:
                work.append(((a.credited[d] - agent_done[d]) * len(self.directions), 0, d))
        if not work:
            return None
        _, is_clf, d = max(work)
        return Work("classifier" if is_clf else "agent", d)
