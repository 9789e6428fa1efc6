"""Operator labels as goal-classifier data (issue: "labels feed learning").

The operator marks frames goal / not-goal and episodes success / failure on the page; the labels
live in the store's event log (replay/labels.py). Here they become two frame sets for the forward
(goal) classifier: goal frames join its positives, not-goal frames and every frame of a failed
episode (unless marked goal) its negatives. The sets are rebuilt from the log whenever a new label
arrives, so an overriding label takes effect at the next classifier step. `rates()` is the
classifier's false-positive and false-negative rate on the labelled set: what the operator
checks after labelling.
"""

from __future__ import annotations

import numpy as np
import torch

from learner.buffers import FrameSet
from learner.classifier import ClassifierLearner
from replay.labels import LABEL_EVENT, LabelSet
from replay.store import ReplayReader, StoreError
from spec.step import ObsSpec, policy_input

EVAL_CAP = 4096  # labelled frames scored per class for the FP/FN rates (a bound on the cost)


class LabelledFrames:
    def __init__(self, spec: ObsSpec, main_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.spec = spec
        self._shape, self._dtype = main_shape, dtype
        self.goal = FrameSet(main_shape, dtype, "labelled/goal")
        self.not_goal = FrameSet(main_shape, dtype, "labelled/not_goal")
        self.last_seq = -1  # the newest label event the sets reflect
        self.skipped: list[str] = []  # labelled episodes the store no longer has (or never had)

    def __len__(self) -> int:
        return len(self.goal) + len(self.not_goal)

    def newest_seq(self, reader: ReplayReader) -> int:
        """The store's newest event sequence number (-1 if none since the last rebuild)."""
        return max((ev["seq"] for ev in reader.events(max(self.last_seq + 1, 0))), default=-1)

    def update(self, reader: ReplayReader, until_seq: int | None = None) -> bool:
        """Rebuild the sets if the store has label events newer than the last rebuild; `until_seq`:
        ignore newer events (under torchrun every rank rebuilds from the events rank 0 saw)."""

        def upto(events: list[dict]) -> list[dict]:
            return events if until_seq is None else [ev for ev in events if ev["seq"] <= until_seq]

        events = upto(reader.events(max(self.last_seq + 1, 0)))
        if not any(ev.get("type") == LABEL_EVENT for ev in events):
            return False
        labels = LabelSet.from_events(upto(reader.events()))
        episodes = {e.id: e for e in reader.episodes(include_open=True)}
        goal, not_goal = FrameSet(self._shape, self._dtype, "labelled/goal"), FrameSet(self._shape, self._dtype,
                                                                                         "labelled/not_goal")
        self.skipped = []
        for ep_id in labels.episodes():
            info = episodes.get(ep_id)
            if info is None or info.length == 0:
                self.skipped.append(ep_id)
                continue
            try:
                main, _ = policy_input(reader.read(ep_id, keys=self.spec.keys()), self.spec)
            except (StoreError, KeyError) as exc:  # e.g. an episode recorded without this spec's views
                self.skipped.append(f"{ep_id} ({exc})")
                continue
            g = [i for i in labels.goal_frames(ep_id) if i < len(main)]
            ng = set(i for i in labels.not_goal_frames(ep_id) if i < len(main))
            if labels.episode_verdicts.get(ep_id) == "failure":
                ng |= set(range(len(main))) - set(g)  # a failed episode shows no goal, unless marked
            goal.add(main[g])
            not_goal.add(main[sorted(ng)])
        self.goal, self.not_goal = goal, not_goal
        self.last_seq = max(ev["seq"] for ev in events)
        return True

    def positives(self, demo_positives: FrameSet, n: int, rng: np.random.Generator) -> np.ndarray:
        """n positive rows drawn from demo goal frames and operator goal frames alike (each frame as likely)."""
        total = len(demo_positives) + len(self.goal)
        k = int(rng.binomial(n, len(self.goal) / total)) if total else 0
        parts = [demo_positives.sample(n - k, rng)] if n - k else []
        if k:
            parts.append(self.goal.sample(k, rng))
        return np.concatenate(parts)

    def negatives(self, online: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
        """Replace a `share` of the online negative rows with operator not-goal frames (there are few of
        them against the online buffer: drawn in proportion they would hardly count)."""
        k = int(round(share * len(online))) if len(self.not_goal) else 0
        if k:
            online = online.copy()
            online[:k] = self.not_goal.sample(k, rng)
        return online

    @torch.no_grad()
    def rates(self, clf: ClassifierLearner, device: torch.device) -> dict[str, float]:
        """False-positive rate (not-goal frames scored p > 0.5) and false-negative rate (goal frames
        scored p <= 0.5) of the classifier on the labelled set."""
        out: dict[str, float] = {"labels/goal_frames": float(len(self.goal)),
                                 "labels/not_goal_frames": float(len(self.not_goal))}
        for name, frames, wrong in (("fn_rate", self.goal, lambda p: p <= 0.5),
                                    ("fp_rate", self.not_goal, lambda p: p > 0.5)):
            if len(frames):
                x = frames.frames[:EVAL_CAP]
                p = clf.probabilities(torch.from_numpy(np.ascontiguousarray(x)).to(device))
                out[f"labels/{clf.name}_{name}"] = float(wrong(p).float().mean())
        return out
