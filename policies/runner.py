"""CPU inference for the daemon's 100 ms tick.

The daemon process also runs cameras, the store writer and a web server on a small machine, so
inference uses one intra-op thread by default (`num_threads`); torch's thread pool is process-wide,
so pass None to leave it alone (e.g. in a learner process).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from policies.checkpoint import PolicyCheckpoint
from spec.step import ObservationError, policy_input


class PolicyRunner:
    def __init__(self, checkpoint: PolicyCheckpoint, num_threads: int | None = 1, seed: int | None = None) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.checkpoint = checkpoint
        self.spec = checkpoint.obs_spec
        self.direction = checkpoint.direction
        self.version = checkpoint.version
        self.policy = checkpoint.build_policy()
        self.action_dim = self.policy.actor.action_dim
        for p in self.policy.parameters():
            p.requires_grad_(False)
        # channels_last convolutions are ~25 % faster on CPU for the 6x100x100 robot input.
        self._memory_format = torch.channels_last if self.spec.mode == "pixels" else torch.contiguous_format
        self.policy.encoder.to(memory_format=self._memory_format)
        self._gen = torch.Generator()
        self._gen.manual_seed(seed if seed is not None else int.from_bytes(np.random.bytes(4), "little"))

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """float32 [A] in [-1, 1]; raises ObservationError when `obs` does not match the spec."""
        main, proprio = policy_input(obs, self.spec)
        expect = 1 if self.spec.mode == "state" else 3
        if main.ndim != expect:
            raise ObservationError(f"act() takes one observation, got a batch of shape {list(main.shape)}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(main)).unsqueeze(0)
            if self.spec.mode == "pixels":
                x = x.float().contiguous(memory_format=self._memory_format)
            p = torch.from_numpy(np.ascontiguousarray(proprio)).unsqueeze(0)
            a = self.policy(x, p, deterministic=deterministic, generator=self._gen)
        return a[0].numpy().astype(np.float32, copy=False)
