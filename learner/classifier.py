"""The two MEDAL++ classifiers and the rewards they give (MEDALPP.md, "Classifier training").

Forward (goal) classifier C_f: positives are the last frames of forward demos, negatives the
forward agent's online frames; reward log σ(C_f(s′)) ≤ 0.
Backward (state-matching) classifier C_b: positives are demo frames, negatives the backward
agent's online frames; reward log σ(C_b(s′)) (robot) or −log(1 − σ(C_b(s′))) ≥ 0 (sim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.clf_augment import ClassifierAugment
from learner.optim import adam
from policies.classifier_checkpoint import ClassifierCheckpoint
from policies.networks import Classifier, NetworkSizes
from spec.step import ObsSpec

EPS = 1e-10
REWARD_KINDS = ("log_p", "neg_log_1mp")


def classifier_reward(logits: torch.Tensor, kind: str) -> torch.Tensor:
    p = torch.sigmoid(logits)
    if kind == "log_p":
        return torch.log(p + EPS)
    if kind == "neg_log_1mp":
        return -torch.log(1.0 - p + EPS)
    raise ValueError(f"reward kind must be one of {REWARD_KINDS}, got {kind!r}")


def mixup(
    h: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i becomes lam_i·row_i + (1 − lam_i)·row_perm(i), for features and labels alike."""
    lam = lam.view(-1)
    return lam[:, None] * h + (1 - lam[:, None]) * h[perm], lam * y + (1 - lam) * y[perm]


class ClassifierLearner:
    def __init__(
        self,
        name: str,
        spec: ObsSpec,
        sizes: NetworkSizes,
        reward_kind: str,
        cameras: list[str] | None = None,
        lr: float = 3e-4,
        device: torch.device | str = "cpu",
        augment: str = "v2",
    ) -> None:
        """`augment`: what `train_step` does to pixel frames (learner/clf_augment.py); state
        frames and scoring are never augmented."""
        if reward_kind not in REWARD_KINDS:
            raise ValueError(f"reward kind must be one of {REWARD_KINDS}, got {reward_kind!r}")
        self.name = name
        self.spec, self.sizes = spec, sizes
        self.reward_kind = reward_kind
        self.pixels = spec.mode == "pixels"
        self.device = torch.device(device)
        self.augment = ClassifierAugment(augment if self.pixels else "none", spec.image_size if self.pixels else (0, 0))
        self.net = Classifier(spec, sizes, cameras).to(self.device)
        self.opt = adam(list(self.net.parameters()), lr)
        self.steps = 0
        self.trained_until = -1  # online-buffer serial of the newest frame available at the last step

    def checkpoint(self, version: int) -> ClassifierCheckpoint:
        """What the daemon scores recorded frames with (the name is the classifier's direction)."""
        return ClassifierCheckpoint.from_classifier(self.net, self.name, version, self.spec, self.sizes, self.steps)

    def _prep(self, x: torch.Tensor, augment: bool) -> torch.Tensor:
        # Frames stay uint8 until the network widens its own views (a quarter of the memory traffic).
        x = x.to(self.device, non_blocking=True)
        return self.augment(x) if augment else x

    @torch.no_grad()
    def probabilities(self, obs: torch.Tensor) -> torch.Tensor:
        was = self.net.training
        self.net.eval()  # no spectral-norm power iteration outside training steps
        try:
            return torch.sigmoid(self.net(self._prep(obs, augment=False)))
        finally:
            self.net.train(was)

    @torch.no_grad()
    def reward(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Reward for reaching s′ under the current classifier (computed at sampling time)."""
        was = self.net.training
        self.net.eval()
        try:
            return classifier_reward(self.net(self._prep(next_obs, augment=False)), self.reward_kind)
        finally:
            self.net.train(was)

    def evaluate_fresh(self, frames: torch.Tensor) -> dict[str, float]:
        """Accuracy and mean probability on online frames not trained on yet (all labelled 0)."""
        if len(frames) == 0:
            return {}
        p = self.probabilities(frames)
        return {
            f"clf_{self.name}/fresh_accuracy": float((p < 0.5).float().mean()),
            f"clf_{self.name}/fresh_prob": float(p.mean()),
            f"clf_{self.name}/fresh_rows": float(len(frames)),
        }

    def train_step(self, positives: torch.Tensor, negatives: torch.Tensor) -> dict[str, float]:
        self.net.train()
        x = torch.cat([self._prep(positives, True), self._prep(negatives, True)])
        y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).to(self.device)
        h = self.net.features(x)
        lam = torch.distributions.Beta(1.0, 1.0).sample((len(x),)).to(self.device)
        perm = torch.randperm(len(x), device=self.device)
        h_mix, y_mix = mixup(h, y, lam, perm)
        logits = self.net.logits_from_features(h_mix)
        loss = F.binary_cross_entropy_with_logits(logits, y_mix)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        with torch.no_grad():
            p = torch.sigmoid(self.net.logits_from_features(h.detach()))
            acc = ((p > 0.5).float() == y).float().mean()
        return {
            f"clf_{self.name}/loss": float(loss.detach()),
            f"clf_{self.name}/train_accuracy": float(acc),
            f"clf_{self.name}/positive_prob": float(p[: len(positives)].mean()),
            f"clf_{self.name}/negative_prob": float(p[len(positives) :].mean()),
        }
