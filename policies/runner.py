"""CPU inference for the daemon's 100 ms tick.

Inference uses one intra-op thread by default (`num_threads`; None leaves torch's process-wide
pool alone): see policies/cpu_inference.py.

An observation reaches the encoder in the cameras' layout: the views stacked channels last
(spec.step.stack_views, a copy only when there are several), then widened to float once by the
encoder, whose convolutions read [1, H, W, C] as channels_last NCHW without another copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from policies.checkpoint import PolicyCheckpoint
from policies.cpu_inference import prepare_for_inference
from spec.step import ObservationError, policy_input


class PolicyRunner:
    def __init__(self, checkpoint: PolicyCheckpoint, num_threads: int | None = 1, seed: int | None = None) -> None:
        self.checkpoint = checkpoint
        self.spec = checkpoint.obs_spec
        self.direction = checkpoint.direction
        self.version = checkpoint.version
        self.policy = checkpoint.build_policy()
        self.action_dim = self.policy.actor.action_dim
        prepare_for_inference(self.policy, self.policy.encoder, self.spec, num_threads)
        self._gen = torch.Generator()
        self._gen.manual_seed(seed if seed is not None else int.from_bytes(np.random.bytes(4), "little"))

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """float32 [A] in [-1, 1]; raises ObservationError when `obs` does not match the spec."""
        main, proprio = policy_input(obs, self.spec)
        expect = 1 if self.spec.mode == "state" else 3
        if main.ndim != expect:
            raise ObservationError(f"act() takes one observation, got a batch of shape {list(main.shape)}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(main)).unsqueeze(0)  # [1, H, W, C] uint8 or [1, S]
            p = torch.from_numpy(np.ascontiguousarray(proprio)).unsqueeze(0)
            a = self.policy(x, p, deterministic=deterministic, generator=self._gen)
        return a[0].numpy().astype(np.float32, copy=False)
