"""Augmentation of the classifiers' training frames (issue 11): none, the agents' random shift, or
a crop and photometric jitter built from torchvision.transforms.v2.

Only `ClassifierLearner.train_step` calls it: scoring (rewards, the daemon's frame scores, FP/FN
on the labelled set) and the agents' batches never see it. State mode is never augmented.

"v2" draws its parameters per sample: a `RandomResizedCrop` back to the view's size (a shift and
a small zoom) and a `ColorJitter` (brightness, contrast, saturation, hue). A v2 transform draws
one set of parameters per call and applies it to every leading dimension, so the batch is walked
sample by sample, each sample's views ([V, 3, H, W]) in one call: the views of one frame share
their crop, as they share their shift in `random_shift`. Frames stay uint8 (the v2 kernels take
uint8 and return it) and on the device they came on. bench/classifier_augment.py measures what
each kind costs per classifier step and what it does to FP/FN on held-out labelled frames.

The v2 transforms draw from torch's global generator, so `torch.manual_seed` makes a run repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from learner.augment import random_shift

ClassifierAugmentKind = Literal["none", "shift", "v2"]
CLASSIFIER_AUGMENTS: tuple[str, ...] = ("none", "shift", "v2")


@dataclass(frozen=True)
class V2Jitter:
    """Ranges of the v2 augmentation. Mild on purpose: the goal classifier tells a cube in the goal
    zone from one just beside it, so a crop must keep both the cube and the zone in view."""

    crop_scale: tuple[float, float] = (0.8, 1.0)  # share of the view's area the crop keeps
    crop_ratio: tuple[float, float] = (0.9, 1.1)  # crop aspect, relative to the view's own
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05


class ClassifierAugment:
    """Callable on [B, H, W, C] frames (C = 3 per view, channels last); returns a tensor of the same
    shape, dtype and device. `image_size` (H, W) is the views' size (crops are resized back to it)."""

    def __init__(
        self,
        kind: str,
        image_size: tuple[int, int],
        shift_pad: int = 4,
        jitter: V2Jitter | None = None,
    ) -> None:
        if kind not in CLASSIFIER_AUGMENTS:
            raise ValueError(f"classifier augment must be one of {CLASSIFIER_AUGMENTS}, got {kind!r}")
        self.kind = kind
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.shift_pad = shift_pad
        self.jitter = jitter or V2Jitter()
        self._v2 = _v2_pipeline(self.image_size, self.jitter) if kind == "v2" else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if x.dim() != 4 or x.shape[-1] % 3:
            raise ValueError(f"classifier augment expects [B, H, W, 3*views], got shape {list(x.shape)}")
        if self.kind == "shift":
            return random_shift(x, self.shift_pad)
        b, h, w, c = x.shape
        if (h, w) != self.image_size:
            raise ValueError(f"classifier augment was built for {self.image_size} views, got {(h, w)}")
        if b == 0:
            return x
        views = x.view(b, h, w, c // 3, 3).permute(0, 3, 4, 1, 2)  # [B, V, 3, H, W], a view
        assert self._v2 is not None
        out = torch.stack([self._v2(sample) for sample in views])  # one parameter draw per sample
        return out.permute(0, 3, 4, 1, 2).reshape(b, h, w, c).contiguous()  # channels last, as stored


def _v2_pipeline(image_size: tuple[int, int], j: V2Jitter) -> torch.nn.Module:
    # Imported here: only the v2 kind needs torchvision (state mode and the other kinds do not).
    from torchvision.transforms import v2

    aspect = image_size[1] / image_size[0]
    return v2.Compose([
        v2.RandomResizedCrop(
            image_size, scale=j.crop_scale, ratio=(j.crop_ratio[0] * aspect, j.crop_ratio[1] * aspect), antialias=True
        ),
        v2.ColorJitter(brightness=j.brightness, contrast=j.contrast, saturation=j.saturation, hue=j.hue),
    ])
