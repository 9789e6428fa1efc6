"""The learning core both drivers share: agents, classifiers, buffers, routing and the credit schedule.

Driver 1, `learner run` (learner/trainer.py), feeds it chunks tailed from the replay store;
driver 2, the synchronous sim harness (learner/harness.py), feeds it the steps it collects from
the gymnasium env. Both hand data in as `Chunk`s, so demo routing, seed routing and step counting
are the store's, and both work the owed updates off with `train_once()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from learner.agent import Agent, TorchBatch
from learner.buffers import Batch, sample_mixed
from learner.classifier import ClassifierLearner
from learner.labelled import LabelledFrames
from learner.routing import Buffers, Router, layout_for
from learner.schedule import DIRECTIONS, Accounts, CreditSchedule, Work
from learner.settings import Settings
from learner.tail import Chunk
from spec.step import ActionSpec, ObsSpec, action_dim

Metrics = dict[str, float]


class LearningCore:
    def __init__(
        self,
        settings: Settings,
        spec: ObsSpec,
        action_spec: ActionSpec,
        device: torch.device,
        rng: np.random.Generator,
        directions: Sequence[str] = DIRECTIONS,
    ) -> None:
        s = self.settings = settings
        self.spec = spec
        self.action_spec = dict(action_spec)
        self.device = device
        self.rng = rng
        self.directions = tuple(directions)
        layout = layout_for(spec, action_dim(action_spec))
        self.buffers = Buffers.create(layout, s.capacity)
        # Every agent step samples into these again (no batch-sized allocations per step).
        self.batch, self.bc_batch = Batch.empty(s.batch_size, layout), Batch.empty(s.bc_batch_size, layout)
        self.router = Router(s, spec, self.buffers)
        self.labelled = LabelledFrames(spec, layout.main_shape, layout.main_dtype)  # operator labels (goal clf)
        self.agents = {d: Agent(s.agent(d), spec, action_spec, s.sizes, device) for d in self.directions}
        clfs = {
            "forward": lambda: ClassifierLearner(
                "forward", spec, s.sizes, "log_p", s.clf_forward_cameras, s.clf_lr, device, s.clf_augment
            ),
            "backward": lambda: ClassifierLearner(
                "backward", spec, s.sizes, s.backward_reward, None, s.clf_lr, device, s.clf_augment
            ),
        }
        self.classifiers = {d: clfs[d]() for d in self.directions}
        # What each agent is paid for reaching s′: its classifier, unless a driver that knows the task's
        # true success (the sim harness, as a diagnostic) puts another function here.
        self.rewards: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            d: c.reward for d, c in self.classifiers.items()
        }
        self.schedule = CreditSchedule(
            s.seed_steps, {d: s.clf_every(d) for d in DIRECTIONS}, s.backlog_steps, self.directions
        )

    # --- data and accounts ---
    @property
    def accounts(self) -> Accounts:
        return self.schedule.accounts

    @accounts.setter
    def accounts(self, value: Accounts) -> None:
        self.schedule.accounts = value

    def agent_updates(self) -> dict[str, int]:
        return {d: a.updates for d, a in self.agents.items()}

    def classifier_steps(self) -> dict[str, int]:
        return {d: c.steps for d, c in self.classifiers.items()}

    def ingest(self, chunk: Chunk) -> None:
        self.router.ingest(chunk)

    def credit(self) -> None:
        self.schedule.credit(
            self.router.env_steps, self.router.post_seed, self.agent_updates(), self.classifier_steps()
        )

    def owed(self) -> dict[str, int]:
        return self.schedule.owed(self.agent_updates(), self.classifier_steps())

    # --- work ---
    def next_work(self) -> Work | None:
        b = self.buffers
        return self.schedule.next_work(
            self.agent_updates(),
            self.classifier_steps(),
            agent_ready={d: b.online[d].num_transitions > 0 for d in self.directions},
            clf_ready={d: len(b.positives[d]) > 0 and len(b.online[d]) > 0 for d in self.directions},
        )

    def train_once(self) -> tuple[Work, Metrics] | None:
        """One classifier step or one agent step, if any is owed and possible; None if idle."""
        work = self.next_work()
        if work is None:
            return None
        step = self.classifier_step if work.kind == "classifier" else self.agent_step
        return work, step(work.direction)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    def classifier_step(self, d: str) -> Metrics:
        clf, online = self.classifiers[d], self.buffers.online[d]
        n = self.settings.clf_batch_size
        metrics = clf.evaluate_fresh(self._tensor(online.fresh_frames(clf.trained_until, n, self.rng)))
        clf.trained_until = online.last_serial
        labelled = d == "forward" and len(self.labelled) > 0
        positives = self.buffers.positives[d]
        pos = self.labelled.positives(positives, n, self.rng) if labelled else positives.sample(n, self.rng)
        neg = online.sample_frames(n, self.rng)
        if labelled:
            neg = self.labelled.negatives(neg, self.settings.labelled_negative_share, self.rng)
        metrics |= clf.train_step(self._tensor(pos), self._tensor(neg))
        if labelled:
            metrics |= self.labelled.rates(clf, self.device)
        return metrics

    def agent_step(self, d: str) -> Metrics:
        agent, s = self.agents[d], self.settings
        online, demo = self.buffers.online[d], self.buffers.demo[d]

        def sample() -> TorchBatch:
            batch, _ = sample_mixed(online, demo, s.batch_size, s.demo_rows, self.rng, self.batch)
            return TorchBatch.from_numpy(batch, self.device)

        def sample_demo() -> TorchBatch | None:
            if demo.num_transitions == 0:
                return None
            return TorchBatch.from_numpy(demo.sample(s.bc_batch_size, self.rng, self.bc_batch), self.device)

        t0 = time.perf_counter()
        agent.env_step = self.router.env_steps  # the BC-λ clock: env steps collected
        m = agent.update(sample, self.rewards[d], sample_demo)
        return {f"{d}/{k}": v for k, v in m.items()} | {f"{d}/update_s": time.perf_counter() - t0}

    # --- training state ---
    def state_parts(
        self,
    ) -> tuple[dict[str, nn.Module], dict[str, torch.Tensor], dict[str, torch.optim.Optimizer]]:
        modules: dict[str, nn.Module] = {}
        tensors: dict[str, torch.Tensor] = {}
        optims: dict[str, torch.optim.Optimizer] = {}
        for d, a in self.agents.items():
            modules |= {f"{d}.{k}": m for k, m in a.modules().items()}
            tensors[f"{d}.log_alpha"] = a.log_alpha
            optims |= {f"{d}.{k}": o for k, o in a.optimizers().items()}
        for d, c in self.classifiers.items():
            modules[f"clf_{d}"] = c.net
            optims[f"clf_{d}"] = c.opt
        return modules, tensors, optims
