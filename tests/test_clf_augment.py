"""The classifiers' training-frame augmentation (learner/clf_augment.py): kinds none / shift / v2,
applied in the training step only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.classifier import ClassifierLearner
from learner.clf_augment import ClassifierAugment
from learner.settings import Settings
from policies.networks import PRESETS
from spec.config import ConfigError, LearnerConfig
from spec.step import CameraSpec, ObsSpec
from tests.learner_fakes import tiny_config

torch.set_num_threads(1)
H, W = 32, 40  # not square: crops must come back at the view's own size


def frames(n: int = 8, views: int = 2) -> torch.Tensor:
    """Smooth coloured frames (gradients, a bright square per frame): jitter and crops change them."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = torch.stack([yy, xx, 1 - xx], -1).repeat(1, 1, views)  # [H, W, 3V]
    x = (base[None] * 200 + torch.rand(n, 1, 1, 3 * views, generator=g) * 40).clamp(0, 255).to(torch.uint8)
    for i in range(n):
        x[i, 8 + i : 16 + i, 10:18] = 250
    return x.contiguous()


@pytest.mark.parametrize("kind", ["shift", "v2"])
def test_shape_dtype_and_device_are_kept_and_frames_change(kind):
    x = frames()
    y = ClassifierAugment(kind, (H, W))(x)
    assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
    assert y.is_contiguous()
    assert torch.equal(x, frames())  # the input is not modified in place
    changed = [(y[i].int() - x[i].int()).abs().float().mean() > 1.0 for i in range(len(x))]
    assert all(changed), changed


def test_v2_draws_its_parameters_per_sample_and_shares_them_across_a_frames_views():
    one = frames(1, views=1)
    x = torch.cat([one, one], -1).repeat(16, 1, 1, 1)  # the same two-view frame 16 times, both views alike
    torch.manual_seed(1)
    y = ClassifierAugment("v2", (H, W))(x)
    distinct = {tuple(y[i].flatten()[::97].tolist()) for i in range(len(y))}
    assert len(distinct) == len(y)  # no two samples got the same crop and jitter
    # Shared parameters: the two (identical) views of a frame come out identical.
    torch.testing.assert_close(y[..., :3], y[..., 3:])


def test_none_is_the_identity_and_state_frames_are_never_augmented():
    x = frames()
    assert ClassifierAugment("none", (H, W))(x) is x
    spec = ObsSpec("state", (), proprio_dim=4, state_dim=6)
    clf = ClassifierLearner("forward", spec, PRESETS["tiny"], "log_p", augment="v2")
    s = torch.randn(5, 6)
    assert torch.equal(clf._prep(s, augment=True), s)


@pytest.mark.parametrize("kind", ["shift", "v2"])
def test_the_same_seed_gives_the_same_augmentation(kind):
    aug, x = ClassifierAugment(kind, (H, W)), frames()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(aug(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_scoring_is_never_augmented_but_training_is():
    spec = ObsSpec("pixels", (CameraSpec("wrist", H, W), CameraSpec("front", H, W)), 4)
    clf = ClassifierLearner("forward", spec, PRESETS["tiny"], "log_p", ["wrist"], augment="v2")
    x = frames()
    p = clf.probabilities(x)
    torch.testing.assert_close(clf.probabilities(x), p)  # scoring twice: no random transform
    seen: list[torch.Tensor] = []
    real = clf.augment
    clf.augment = lambda t: seen.append(t) or real(t)  # type: ignore[assignment]
    clf.train_step(x[:4], x[4:])
    assert len(seen) == 2  # positives and negatives of the training step
    clf.reward(x)
    assert len(seen) == 2  # rewards: not augmented


def test_the_config_names_a_bad_kind_and_settings_carry_a_good_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="classifier_augment"):
        tiny_config(tmp_path, classifier_augment="mixup")
    assert LearnerConfig().classifier_augment == "v2"  # the default (tiny_config picks shift for test time)
    assert Settings.from_config(tiny_config(tmp_path, classifier_augment="v2")).clf_augment == "v2"
    assert Settings.from_config(tiny_config(tmp_path, classifier_augment="shift")).clf_augment == "shift"
    with pytest.raises(ValueError, match="'crop'"):
        ClassifierAugment("crop", (H, W))
