"""The learner's hyperparameters: MEDALPP.md's robot or sim column, with LearnerConfig overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.networks import NetworkSizes
from spec.config import Config
from spec.goal import GOAL_HOLD_STEPS

# (start value, end value, start step, end step) of a linear BC-weight schedule.
Schedule = tuple[float, float, int, int]

# The daemon holds every demo's goal for GOAL_HOLD_STEPS steps, so these windows show the goal.
FORWARD_POSITIVE_LAST = GOAL_HOLD_STEPS  # goal classifier positives: last frames of each forward demo
BACKWARD_POSITIVE_FIRST = 51  # robot backward classifier: first frames of each forward demo
BACKWARD_POSITIVE_LAST = GOAL_HOLD_STEPS  # ... plus the last frames of each backward demo

_DEFAULTS = {
    "robot": {
        "demo_rows": 64,
        "seed_steps": 2000,
        "utd": 1,
        "bc_forward": (1.0, 0.1, 2500, 50_000),
        "bc_backward": (1.0, 0.25, 2500, 50_000),
        "clf_forward_every": 1000,
        "clf_backward_every": 500,
    },
    "sim": {
        "demo_rows": 32,
        "seed_steps": 10_000,
        "utd": 2,
        "bc_forward": (1.0, 0.1, 10_000, 50_000),
        "bc_backward": (0.0, 0.0, 0, 0),  # off in sim
        "clf_forward_every": 1000,
        "clf_backward_every": 100,
    },
}


def linear_schedule(schedule: Schedule, step: int) -> float:
    v0, v1, s0, s1 = schedule
    if step <= s0:
        return float(v0)
    if step >= s1:
        return float(v1)
    return float(v0 + (v1 - v0) * (step - s0) / (s1 - s0))


@dataclass(frozen=True)
class AgentSettings:
    direction: str
    utd: int
    bc: Schedule
    learn_alpha: bool
    alpha_init: float  # 0 = no entropy term
    target_entropy_per_dim: float  # target entropy = this × |A| (sim backward: -1/2)
    lr: float
    gamma: float
    tau: float


@dataclass(frozen=True)
class Settings:
    setting: str
    mode: str
    sizes: NetworkSizes
    batch_size: int
    demo_rows: int
    bc_batch_size: int
    clf_batch_size: int  # negatives and positives per classifier step, each (MEDALPP.md: 256)
    labelled_negative_share: float  # of the goal classifier's negatives, from operator not-goal frames
    seed_steps: int
    capacity: int
    forward: AgentSettings
    backward: AgentSettings
    clf_forward_every: int
    clf_backward_every: int
    clf_forward_cameras: list[str] | None  # None = every view
    clf_lr: float
    clf_augment: str  # pixel training frames of both classifiers: none | shift | v2 (learner/clf_augment.py)
    backward_reward: str  # "log_p" (robot) | "neg_log_1mp" (sim)
    backward_demos_from_both: bool  # sim: the backward demo buffer holds forward demos too
    backward_positives_all_forward: bool  # sim: backward classifier positives = all forward-demo frames
    backlog_steps: int  # most agent steps (env steps' worth of updates) ever owed; the rest are dropped
    push_every: int
    push_classifier_every: int  # classifier steps between pushes of that classifier to the daemon
    save_every: int
    poll_s: float
    tail_open: bool
    # FBRL baseline (bench/learning.py): if > 0, the backward classifier's positives are only the
    # first this-many frames of each forward demo (the initial-state distribution), nothing else.
    backward_positives_initial: int = 0
    # Ablation (bench/learning.py, README "Does it learn?"): sim C_b positives = the forward demos'
    # frames before their goal hold, so the goal itself is not what the backward agent is paid for.
    backward_positives_pre_goal: bool = False

    def agent(self, direction: str) -> AgentSettings:
        return self.forward if direction == "forward" else self.backward

    def clf_every(self, direction: str) -> int:
        return self.clf_forward_every if direction == "forward" else self.clf_backward_every

    @classmethod
    def from_config(cls, cfg: Config, mode: str | None = None) -> Settings:
        lc = cfg.learner
        d = _DEFAULTS[lc.setting]
        sim = lc.setting == "sim"
        utd = lc.utd or d["utd"]
        demo_rows = d["demo_rows"] if lc.demo_rows is None else lc.demo_rows
        if demo_rows >= lc.batch_size:
            raise ValueError(f"learner.demo_rows={demo_rows} must be below learner.batch_size={lc.batch_size}")

        def agent(direction: str, bc: Schedule | None, learn_alpha: bool) -> AgentSettings:
            return AgentSettings(
                direction=direction,
                utd=utd,
                bc=tuple(bc or d[f"bc_{direction}"]),  # type: ignore[arg-type]
                learn_alpha=learn_alpha,
                alpha_init=1.0 if learn_alpha else 0.0,
                target_entropy_per_dim=-0.5,  # MEDALPP.md: -|A|/2 (+|A|/2 pins a tanh policy near uniform)
                lr=lc.lr,
                gamma=lc.gamma,
                tau=lc.tau,
            )

        cams = lc.clf_forward_cameras
        if cams is None and not sim:
            names = [c.name for c in cfg.cameras]
            cams = ["wrist"] if "wrist" in names else None
        if cams is not None:
            unknown = [c for c in cams if c not in [k.name for k in cfg.cameras]]
            if unknown:
                raise ValueError(f"learner.clf_forward_cameras: unknown cameras {unknown}")
        # The backlog cap: at most `max_updates_per_step` updates per step of one practice phase.
        backlog = max(1, math.ceil(lc.max_updates_per_step * cfg.session.phase_steps))
        return cls(
            setting=lc.setting,
            mode=mode or lc.mode,
            sizes=NetworkSizes.from_config(lc.network),
            batch_size=lc.batch_size,
            demo_rows=demo_rows,
            # MEDALPP.md says "a separate demo batch" without a size: ours defaults to the k demo
            # rows (64 robot / 32 sim), as it costs an extra encoder pass; learner.bc_batch_size overrides.
            bc_batch_size=lc.bc_batch_size or max(demo_rows, 1),
            clf_batch_size=lc.clf_batch_size,
            labelled_negative_share=lc.labelled_negative_share,
            seed_steps=d["seed_steps"] if lc.seed_steps is None else lc.seed_steps,
            capacity=lc.capacity,
            forward=agent("forward", lc.bc_forward, learn_alpha=False),
            backward=agent("backward", lc.bc_backward, learn_alpha=sim),
            clf_forward_every=lc.clf_forward_every or d["clf_forward_every"],
            clf_backward_every=lc.clf_backward_every or d["clf_backward_every"],
            clf_forward_cameras=cams,
            clf_lr=lc.lr,
            clf_augment=lc.classifier_augment,
            backward_reward="neg_log_1mp" if sim else "log_p",
            backward_demos_from_both=sim,
            backward_positives_all_forward=sim,
            backlog_steps=backlog,
            push_every=lc.push_every,
            push_classifier_every=lc.push_classifier_every,
            save_every=lc.save_every,
            poll_s=lc.poll_s,
            tail_open=lc.tail_open,
        )
