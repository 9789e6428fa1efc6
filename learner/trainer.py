"""`learner run`'s driver: tail the store, feed the learning core, push policies and classifiers, save state.

The learning itself (agents, classifiers, buffers, demo routing, the credit schedule) is
learner/core.py's, shared with the synchronous sim harness (learner/harness.py); the schedule's
rules are in learner/schedule.py. Here the env steps arrive from the store in bursts, so the
accounts are credited per poll and owed work is done one unit per `train_once()` (one classifier
step, or one agent step for the direction furthest behind), so polling, pushes, saves and SIGTERM
stay responsive. A slow learner's backlog is capped at `Settings.backlog_steps`
(= learner.max_updates_per_step × session.phase_steps) agent steps; the excess is dropped and counted.

The BC weight λ follows env steps collected (the store's practice-step count), the clock
MEDALPP.md's schedules are written in; policy versions are the agent's update count, classifier
versions the classifier's step count (pushed every `learner.push_classifier_every` steps, for the
daemon's review page).

Under torchrun (learner/distributed.py) every rank runs this same driver on the same data: rank 0
decides when to read the store and what to read (`StoreTail.plan`), every rank reads that plan,
so accounts and schedule agree and each `train_once()` is the same unit of work on every rank,
on each rank's own batches, with gradients averaged. Only rank 0 logs to TensorBoard, pushes and
saves.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from learner.agent import Agent
from learner.classifier import ClassifierLearner
from learner.core import LearningCore
from learner.distributed import Group
from learner.fleet import RobotLink, robot_links
from learner.push import Pusher
from learner.routing import Buffers, Router
from learner.schedule import Accounts
from learner.settings import Settings
from learner.state import StateError, latest, load_state, save_state
from learner.tail import Read, StoreTail
from replay.eval_results import success_by_version
from replay.store import StoreError, StoreMeta
from spec.config import Config
from spec.step import ObsSpec

log = logging.getLogger(__name__)

EVAL_SCAN_S = 30.0  # how often to look for new eval verdicts in the store
LABEL_SCAN_S = 5.0  # how often to look for new operator labels (an operator waits for their effect)


class LearnerError(RuntimeError):
    """A problem that stops the learner, with a message for the operator."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise LearnerError(f"--device {device!r} is not a torch device (auto, cpu, cuda, cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LearnerError(f"--device {device}: CUDA is not available on this machine")
    return dev


class Trainer:
    def __init__(
        self,
        cfg: Config,
        *,
        store_path: str | Path | None = None,
        server: str | None = None,
        token: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        run_dir: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
        tensorboard: bool = True,
        seed: int | None = None,
        push_backoff_cap_s: float | None = None,
        dist: Group | None = None,
    ) -> None:
        """`dist`: this process's torchrun group (None: a single process, no torch.distributed)."""
        self.cfg = cfg
        self.dist = dist
        self.settings = Settings.from_config(cfg, mode)
        self.links: list[RobotLink] = robot_links(cfg, store_path, server, token)
        self.store_path = self.links[0].location.path if len(self.links) == 1 else ", ".join(
            f"{link.name}={link.location}" for link in self.links)
        self.run_dir = Path(run_dir or cfg.learner.run_dir)
        self.device = resolve_device(device or cfg.learner.device)
        self.server = ", ".join(link.server for link in self.links)
        self.action_spec: dict[str, Any] = {}  # read from the store at setup()
        base_seed = cfg.session.seed if seed is None else seed
        # Each rank samples its own batches; rank 0 draws what a single process would. (The
        # networks' random init differs too until setup() copies rank 0's weights to every rank.)
        self.rng = np.random.default_rng(base_seed if dist is None or dist.is_main else [base_seed, dist.rank])
        torch.manual_seed(int(self.rng.integers(2**31)))
        self._transport = transport
        self._tensorboard = tensorboard and self.is_main
        self._last_eval_scan = -math.inf
        self._last_label_scan = -math.inf
        self._eval_logged: dict[int, int] = {}  # version -> eval episodes logged
        self._backoff_cap = cfg.learner.push_retry_max_s if push_backoff_cap_s is None else push_backoff_cap_s
        self.ready = False
        self.spec: ObsSpec | None = None
        self.core: LearningCore | None = None
        self.pushers: dict[str, Pusher] = {}  # robot name -> its pusher
        self.robot_steps: dict[str, int] = {link.name: 0 for link in self.links}  # steps ingested per robot
        self._excluded: dict[str, str] = {}  # robot -> why its store is not used
        self.writer: Any = None
        self.last_metrics: dict[str, float] = {}
        self.saves = 0
        self._last_poll = -math.inf
        self._last_save_updates = 0
        self.tails = {link.name: StoreTail(link.location, [], include_open=self.settings.tail_open, robot=link.name)
                      for link in self.links}

    @property
    def tail(self) -> StoreTail:
        """The first robot's tail (operator labels and eval verdicts are read from it)."""
        return self.tails[self.links[0].name]

    @property
    def pusher(self) -> Pusher | None:
        """The first robot's pusher (the only one of a one-robot learner)."""
        return self.pushers.get(self.links[0].name)

    @property
    def is_main(self) -> bool:
        """The rank that logs, pushes and saves (a single process always is)."""
        return self.dist is None or self.dist.is_main

    # --- the learning core's parts (empty until set-up) ---
    @property
    def agents(self) -> dict[str, Agent]:
        return self.core.agents if self.core else {}

    @property
    def classifiers(self) -> dict[str, ClassifierLearner]:
        return self.core.classifiers if self.core else {}

    @property
    def buffers(self) -> Buffers:
        assert self.core is not None, "set-up has not run"
        return self.core.buffers

    @property
    def router(self) -> Router:
        assert self.core is not None, "set-up has not run"
        return self.core.router

    @property
    def accounts(self) -> Accounts:
        return self.core.accounts if self.core else Accounts()

    # --- set-up, once the store exists (state mode needs its state_dim) ---
    def setup(self) -> bool:
        if self.ready:
            return True
        meta, where = self._first_meta() if self.is_main else ({}, "")
        if self.dist is not None:
            meta, where = self.dist.share((meta, where))  # every rank sets up at the same poll, or none does
        if not meta:
            return False
        # The step as the daemon described it in the store: never rebuilt from our copy of the config.
        try:
            store_meta = StoreMeta.from_attrs(meta)
            self.spec = store_meta.obs_spec(self.settings.mode)
        except (StoreError, KeyError, ValueError) as exc:
            raise LearnerError(f"the store {where}: {exc}") from None
        self.action_spec = store_meta.action_space
        keys = self.spec.keys() + ["action", "policy_version", "intervention"]
        self.tails = {
            lk.name: StoreTail(lk.location, keys, include_open=self.settings.tail_open, keep=self.settings.capacity,
                               robot=lk.name)
            for lk in self.links
        }
        self.core = LearningCore(self.settings, self.spec, self.action_spec, self.device, self.rng)
        # Rank 0 alone pushes (one pusher per robot; the other ranks have none).
        self.pushers = {
            lk.name: Pusher(lk.server, lk.token, timeout_s=self.cfg.learner.push_timeout_s,
                            transport=self._transport, backoff_cap_s=self._backoff_cap)
            for lk in self.links
        } if self.is_main else {}
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.ready = True
        if self.dist is not None:
            _, tensors, optims = self._state_parts()
            self.dist.average_gradients_before_step(optims.values())
        self._resume()
        if self.dist is not None:
            # Every rank loaded the same save (or none): rank 0's copy makes a fresh start identical
            # too. The barrier keeps rank 0 from writing a new save while another rank still reads.
            modules, tensors, _ = self._state_parts()
            self.dist.broadcast_modules(modules.values(), tensors.values())
            self.dist.barrier()
        return True

    def _first_meta(self) -> tuple[dict[str, Any], str]:
        """The step description of the first robot whose store exists (all of a fleet's must agree),
        and where it was read; ({}, "") while none exists yet."""
        for link in self.links:
            try:
                meta = self.tails[link.name].meta if link.location.attrs() is not None else {}
            except Exception as exc:  # an unreachable object store: try the next robot
                log.warning("robot %s: store %s not reachable (%s)", link.name or "-", link.location, exc)
                continue
            if meta:
                return meta, str(link.location)
        return {}, ""

    # --- data ---
    def poll(self, force: bool = False) -> int:
        """Ingest new store data (at most every poll_s unless forced); returns the new step count."""
        now = time.monotonic()
        if not force and now - self._last_poll < self.settings.poll_s:
            return 0
        self._last_poll = now
        if not self.setup():
            return 0
        plans = self._plan_reads() if self.is_main else {}
        if self.dist is not None:
            plans = self.dist.share(plans)  # every rank reads exactly what rank 0 planned
        new = 0
        assert self.core is not None
        for name, plan in plans.items():
            tail = self.tails[name]
            try:
                chunks = tail.read(plan)
            except Exception as exc:  # an object store's client errors too: one robot's store down stops no one
                if self.dist is not None:  # the other ranks read it: going on would drift apart
                    raise LearnerError(f"rank {self.dist.rank}: reading the store {tail.path} failed: {exc}") from exc
                log.warning("reading the store %s failed (%s: %s); retrying next poll", tail.path,
                            type(exc).__name__, exc)
                continue
            for c in chunks:
                self.core.ingest(c)
                new += len(c)
                if not c.light:
                    self.robot_steps[name] += len(c)
        self.core.credit()
        if new:
            self._log_backlog()
        self._log_eval_success()
        self._read_labels()
        if self.dist is not None:
            self.dist.check_same("the data read from the store", self._data_fingerprint())
        return new

    def _data_fingerprint(self) -> tuple:
        """What every rank must agree on after a poll for their schedules to stay in step."""
        labelled = len(self.core.labelled) if self.core else 0
        return self.router.env_steps, sorted(self.buffers.sizes().items()), labelled

    def _plan_reads(self) -> dict[str, list[Read]]:
        """Each usable robot's new committed steps (a robot whose store cannot be read now is skipped)."""
        plans: dict[str, list[Read]] = {}
        for name, tail in self.tails.items():
            if name in self._excluded:
                continue
            try:
                if self._compatible(name, tail):
                    plans[name] = tail.plan()
            except Exception as exc:  # StoreError, OSError, an object store's client errors
                log.warning("reading the store %s failed (%s: %s); retrying next poll", tail.path,
                            type(exc).__name__, exc)
        return plans

    def _compatible(self, name: str, tail: StoreTail) -> bool:
        """A fleet robot's store must record the same step as the first; one that does not is left out."""
        if tail.reader is not None or len(self.links) == 1:
            return True
        meta = tail.meta
        if not meta:
            return False  # not written yet
        try:
            spec = StoreMeta.from_attrs(meta).obs_spec(self.settings.mode)
        except (StoreError, KeyError, ValueError) as exc:
            spec, why = None, str(exc)
        else:
            why = f"it records {spec.to_dict()}, the fleet {self.spec.to_dict() if self.spec else None}"
        if spec is not None and spec == self.spec:
            return True
        self._excluded[name] = why
        log.error("robot %s: store %s left out: %s", name, tail.path, why)
        return False

    def _read_labels(self) -> None:
        """Operator labels from the store's event log into the goal classifier's data; the classifier's
        FP/FN rates on the labelled set are logged at once (and again at each classifier step)."""
        reader = self.tail.reader
        if self.core is None:
            return
        due = reader is not None and time.monotonic() - self._last_label_scan >= LABEL_SCAN_S
        labelled = self.core.labelled
        until = None
        if self.dist is not None:  # rank 0 decides when, and up to which event, every rank reads labels
            if self.is_main and due:
                try:
                    until = labelled.newest_seq(reader)
                except (StoreError, OSError) as exc:
                    log.warning("reading operator labels failed (%s)", exc)
                    due = False
            due, until = self.dist.share((due, until))
        if not due or reader is None:
            return
        self._last_label_scan = time.monotonic()
        try:
            changed = labelled.update(reader, until)
        except (StoreError, OSError) as exc:
            log.warning("reading operator labels failed (%s)", exc)
            return
        if changed:
            log.info("operator labels: %d goal, %d not-goal frames%s", len(labelled.goal), len(labelled.not_goal),
                     f"; skipped {labelled.skipped}" if labelled.skipped else "")
            if "forward" in self.classifiers and len(labelled):
                self._log(labelled.rates(self.classifiers["forward"], self.device))

    def _log_eval_success(self) -> None:
        """Forward success per policy version, from the eval sessions the daemon stored (TensorBoard
        `eval/forward_success` at step = version), logged when a version's verdicts change."""
        reader = self.tail.reader
        if self.writer is None or reader is None or time.monotonic() - self._last_eval_scan < EVAL_SCAN_S:
            return
        self._last_eval_scan = time.monotonic()
        try:
            rows = success_by_version(reader.episodes())
        except (StoreError, OSError) as exc:
            log.warning("reading eval episodes failed (%s)", exc)
            return
        for row in rows:
            if self._eval_logged.get(row["version"]) != row["episodes"]:
                self._eval_logged[row["version"]] = row["episodes"]
                self.writer.add_scalar("eval/forward_success", row["success_rate"], row["version"])
                self.writer.add_scalar("eval/forward_episodes", row["episodes"], row["version"])

    def owed(self) -> dict[str, int]:
        return self.core.owed() if self.ready and self.core else {}

    def backlog(self) -> dict[str, Any]:
        """How far behind the store the learner is, per direction: agent steps owed (env steps
        collected but not trained on yet), steps given up for good by the backlog cap
        (learner.max_updates_per_step) since the first start, and steps held in RAM (rings of
        `capacity` steps: memory stays bounded however far behind training falls)."""
        if not self.ready or self.core is None:
            return {}
        owed = self.owed()
        return {
            "behind_steps": {d: owed[f"agent/{d}"] for d in self.agents},
            "dropped": {d: self.accounts.dropped[d] for d in self.agents},
            "buffered": {d: len(self.buffers.online[d]) for d in self.agents},
            "capacity": self.settings.capacity,
        }

    def _log_backlog(self) -> None:
        """The backlog to TensorBoard and the daemon, also while no update runs (then nothing else reports)."""
        backlog = self.backlog()
        step = sum(a.updates for a in self.agents.values())
        if self.writer is not None:
            for d in self.agents:
                self.writer.add_scalar(f"backlog/{d}_behind_steps", backlog["behind_steps"][d], step)
                self.writer.add_scalar(f"backlog/{d}_dropped", backlog["dropped"][d], step)
        for pusher in self.pushers.values():
            pusher.report(step, self._shown_metrics(step), backlog)

    # --- work ---
    def train_once(self) -> dict[str, float] | None:
        """One classifier step or one agent step (learner/schedule.py picks which); None if idle."""
        if not self.ready or self.core is None:
            return None
        done = self.core.train_once()
        if done is None:
            return None
        work, metrics = done
        if work.kind == "classifier" and self.classifiers[work.direction].steps % self.settings.push_classifier_every == 0:
            self.push_classifier(work.direction)
        if work.kind == "agent":
            if self.agents[work.direction].updates % self.settings.push_every == 0:
                self.push(work.direction)
            if sum(a.updates for a in self.agents.values()) - self._last_save_updates >= self.settings.save_every:
                self.save()
        self._log(metrics)
        return metrics

    def push(self, d: str) -> None:
        agent = self.agents[d]
        if not self.pushers:
            return
        ckpt = agent.checkpoint(version=agent.updates, step=agent.updates)
        for pusher in self.pushers.values():  # each retries on its own: a robot that is down holds up no other
            pusher.submit(ckpt)
        self.accounts.pushed[d] = agent.updates

    def push_classifier(self, d: str) -> None:
        """Queue the classifier for the daemon (it scores recorded frames for the review page)."""
        clf = self.classifiers[d]
        if self.pushers:
            ckpt = clf.checkpoint(version=clf.steps)
            for pusher in self.pushers.values():
                pusher.submit(ckpt)

    def _log(self, metrics: dict[str, float]) -> None:
        self.last_metrics |= metrics
        step = sum(a.updates for a in self.agents.values())
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
        for pusher in self.pushers.values():
            pusher.report(step, self._shown_metrics(step), self.backlog())

    def _shown_metrics(self, step: int) -> dict[str, float]:
        shown = {k: float(v) for k, v in self.last_metrics.items() if math.isfinite(float(v))}
        shown |= {"updates": step, "env_steps": self.router.env_steps}
        return dict(sorted(shown.items())[:190])

    def status(self) -> dict[str, Any]:
        if not self.ready:
            return {"ready": False, "store": str(self.store_path)}
        r = self.router
        out: dict[str, Any] = {
            "ready": True,
            "env_steps": r.env_steps,
            "seed_steps": self.settings.seed_steps,
            "updates": {d: a.updates for d, a in self.agents.items()},
            "classifier_steps": {d: c.steps for d, c in self.classifiers.items()},
            "owed": self.owed(),
            "dropped": dict(self.accounts.dropped),
            "behind_steps": self.backlog()["behind_steps"],
            "pushed": dict(self.pusher.status.pushed) if self.pusher else {},
            "push_failures": self.pusher.status.failures if self.pusher else 0,
        }
        if len(self.links) > 1:
            out["robots"] = {
                name: {
                    "steps": self.robot_steps[name],
                    "pushed": dict(p.status.pushed),
                    "push_failures": p.status.failures,
                    "last_error": p.status.last_error,
                    "excluded": self._excluded.get(name),
                }
                for name, p in self.pushers.items()
            }
        out |= self.buffers.sizes()
        return out

    # --- the loop ---
    def run(
        self,
        stop: threading.Event,
        max_updates: int | None = None,
        on_progress: Callable[[Trainer, dict[str, float] | None], None] | None = None,
    ) -> None:
        if self.dist is not None:
            return self._run_together(stop, max_updates, on_progress)
        while not stop.is_set():
            self.poll()
            if self._step(stop, max_updates, on_progress):
                break

    def _run_together(
        self,
        stop: threading.Event,
        max_updates: int | None,
        on_progress: Callable[[Trainer, dict[str, float] | None], None] | None,
    ) -> None:
        """`run` across torchrun ranks: one small all-reduce per step agrees whether to stop (a signal
        on any rank) and whether to read the store (rank 0's poll clock)."""
        assert self.dist is not None
        while True:
            poll_due = self.is_main and time.monotonic() - self._last_poll >= self.settings.poll_s
            stopping, polling = self.dist.any_of(stop.is_set(), poll_due)
            if stopping:
                break
            if polling:
                self.poll(force=True)
            if self._step(stop, max_updates, on_progress):
                break

    def _step(
        self,
        stop: threading.Event,
        max_updates: int | None,
        on_progress: Callable[[Trainer, dict[str, float] | None], None] | None,
    ) -> bool:
        """One unit of training, reported; True once max_updates is reached. Idles briefly when
        there was nothing to train on."""
        m = self.train_once()
        if on_progress is not None:
            on_progress(self, m)
        if max_updates is not None and self.ready and sum(a.updates for a in self.agents.values()) >= max_updates:
            return True
        if m is None:
            stop.wait(min(0.2, self.settings.poll_s))
        return False

    # --- training state ---
    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    def _state_parts(self) -> tuple[dict, dict, dict]:
        assert self.core is not None
        return self.core.state_parts()

    def counters(self) -> dict[str, Any]:
        return {
            "format": "medalpp-learner-state/1",
            "setting": self.settings.setting,
            "mode": self.settings.mode,
            "sizes": self.settings.sizes.to_dict(),
            "obs_spec": self.spec.to_dict() if self.spec else None,
            "agents": {d: {"updates": a.updates, "critic_updates": a.critic_updates} for d, a in self.agents.items()},
            "classifier_steps": {d: c.steps for d, c in self.classifiers.items()},
            "accounts": asdict(self.accounts),
            "env_steps_seen": self.router.env_steps,
            "push_status": {
                "pushed": self.pusher.status.pushed if self.pusher else {},
                "rejected": self.pusher.status.rejected if self.pusher else {},
            },
            "ingested": dict(self.tail.consumed) if len(self.links) == 1 else {
                n: dict(t.consumed) for n, t in self.tails.items()},
            "version_base": (dict(self.pusher.version_base) if self.pusher else {}) if len(self.links) == 1 else {
                n: dict(p.version_base) for n, p in self.pushers.items()},
            "saved_at": time.time(),
        }

    def save(self) -> Path | None:
        """Write the training state (rank 0 only: every rank holds the same weights)."""
        if not self.ready:
            return None
        if not self.is_main:
            self._last_save_updates = sum(a.updates for a in self.agents.values())
            return None
        modules, tensors, optims = self._state_parts()
        path = save_state(self.state_dir, modules, tensors, optims, self.counters())
        self._last_save_updates = sum(a.updates for a in self.agents.values())
        self.saves += 1
        log.info("saved training state to %s", path)
        return path

    def _resume(self) -> None:
        directory = latest(self.state_dir)
        if directory is None:
            return
        modules, tensors, optims = self._state_parts()
        assert self.spec is not None
        try:
            counters = load_state(directory, modules, tensors, optims, self.device)
            if counters.get("obs_spec") and ObsSpec.from_dict(counters["obs_spec"]) != self.spec:
                raise StateError(f"training state {directory} was made for another observation spec")
        except StateError as exc:
            # Not ready: nothing may save over the state we could not load.
            self.ready = False
            raise LearnerError(f"{exc}; move {self.state_dir} away (or pass another --run-dir) to start afresh") from None
        for d, a in self.agents.items():
            a.updates = int(counters["agents"][d]["updates"])
            a.critic_updates = int(counters["agents"][d]["critic_updates"])
        for d, c in self.classifiers.items():
            c.steps = int(counters["classifier_steps"][d])
        assert self.core is not None
        self.core.accounts = Accounts(**counters["accounts"])
        bases = counters.get("version_base", {})
        if len(self.links) == 1 and self.pusher is not None:
            self.pusher.version_base.update({d: int(v) for d, v in bases.items()})
        else:  # a fleet's are per robot; a robot added since the save starts from its daemon's version
            for name, pusher in self.pushers.items():
                if isinstance(bases.get(name), dict):
                    pusher.version_base.update({d: int(v) for d, v in bases[name].items()})
        self._last_save_updates = sum(a.updates for a in self.agents.values())
        log.info(
            "resumed from %s: updates %s, classifier steps %s; re-reading %d known episodes from the store",
            directory, {d: a.updates for d, a in self.agents.items()},
            {d: c.steps for d, c in self.classifiers.items()}, len(counters.get("ingested", {})),
        )
        # Re-ingest the store now, so steps credited before the save are not credited again
        # and classifiers do not count the re-read data as fresh.
        self.poll(force=True)
        for d, c in self.classifiers.items():
            c.trained_until = self.buffers.online[d].last_serial

    def close(self) -> None:
        for pusher in self.pushers.values():
            pusher.close()
        if self.writer is not None:
            self.writer.close()
