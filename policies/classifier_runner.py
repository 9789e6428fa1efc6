"""CPU scoring of recorded frames with a classifier checkpoint: σ(C(s)) per frame, in batches.

The daemon scores episodes for the review page on an API worker thread, beside the 10 Hz tick:
one intra-op thread (process-wide in torch, as for PolicyRunner) and bounded batches, so the tick
keeps its core and a long episode never needs all its frames in memory at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from policies.classifier_checkpoint import ClassifierCheckpoint
from policies.cpu_inference import prepare_for_inference
from spec.step import stack_views, vector

BATCH = 64  # frames per forward pass


class ClassifierRunner:
    def __init__(self, checkpoint: ClassifierCheckpoint, num_threads: int | None = 1) -> None:
        self.checkpoint = checkpoint
        self.spec = checkpoint.obs_spec
        self.direction = checkpoint.direction
        self.version = checkpoint.version
        self.net = checkpoint.build_classifier()
        prepare_for_inference(self.net, self.net.encoder, self.spec, num_threads)

    @property
    def keys(self) -> list[str]:
        """The store keys a frame's score needs (all views: the network picks its own)."""
        wanted = self.spec.keys()  # an ObsSpec method, not a dict's
        return [k for k in wanted if k != "obs/proprio"]

    def probabilities(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 [T] in [0, 1] for T frames given as `keys` -> [T, ...] arrays."""
        if self.spec.mode == "state":
            main = vector(frames, "obs/state", int(self.spec.state_dim or 0))
        else:
            main = stack_views(frames, self.spec)
        if main.ndim != (2 if self.spec.mode == "state" else 4):
            raise ValueError(f"probabilities() takes a batch of frames, got shape {list(main.shape)}")
        out = np.empty(len(main), np.float32)
        with torch.inference_mode():
            for i in range(0, len(main), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(main[i : i + BATCH]))
                out[i : i + len(x)] = torch.sigmoid(self.net(x)).numpy()
        return out
