"""Checkpoint intake: what the daemon runs OFF the control thread when `PUT /policies/{direction}`
arrives. Either a ready runner comes back, or CheckpointRejected with the HTTP status to answer:

- 400 the bytes are not a valid policy checkpoint (garbage, format, hash, tensors);
- 409 the version is not newer than the active one;
- 422 the checkpoint is for another direction, observation or action spec, or its smoke
  inference on a zero observation does not give finite actions of the right shape.

The daemon keeps the running policy whenever this raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.checkpoint import CheckpointError, PolicyCheckpoint
from policies.runner import PolicyRunner
from spec.direction import DIRECTIONS
from spec.step import ActionSpec, ObsSpec, action_dim, action_spec_difference


class CheckpointRejected(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message


@dataclass
class ValidatedPolicy:
    runner: PolicyRunner
    checkpoint: PolicyCheckpoint
    size_bytes: int

    @property
    def version(self) -> int:
        return self.checkpoint.version

    @property
    def metadata(self) -> dict[str, Any]:
        return {**self.checkpoint.metadata, "size_bytes": self.size_bytes}


def validate_checkpoint(
    data: bytes,
    direction: str,
    obs_spec: ObsSpec,
    action_spec: ActionSpec,
    active_version: int | None,
    num_threads: int | None = 1,
) -> ValidatedPolicy:
    if direction not in DIRECTIONS:
        raise CheckpointRejected(422, f"direction must be one of {DIRECTIONS}, got {direction!r}")
    try:
        ckpt = PolicyCheckpoint.from_bytes(data)
    except CheckpointError as exc:
        raise CheckpointRejected(400, str(exc)) from None
    if ckpt.direction != direction:
        raise CheckpointRejected(
            422, f"direction: checkpoint is a {ckpt.direction} policy, uploaded as {direction}"
        )
    why = obs_spec.compatible(ckpt.obs_spec)
    if why:
        raise CheckpointRejected(422, why)
    why = action_spec_difference(action_spec, ckpt.action_spec)
    if why:
        raise CheckpointRejected(422, why)
    if active_version is not None and ckpt.version <= active_version:
        raise CheckpointRejected(
            409, f"version {ckpt.version} is not newer than the active {direction} policy version {active_version}"
        )
    try:
        runner = PolicyRunner(ckpt, num_threads=num_threads)
        dim = action_dim(action_spec)
        zero = ckpt.obs_spec.zero_observation()
        for det in (True, False):
            a = runner.act(zero, deterministic=det)
            if a.shape != (dim,):
                raise CheckpointRejected(422, f"smoke test: action shape {list(a.shape)}, expected [{dim}]")
            if not np.all(np.isfinite(a)):
                raise CheckpointRejected(422, f"smoke test: non-finite action {a.tolist()} on a zero observation")
    except CheckpointRejected:
        raise
    except Exception as exc:  # a checkpoint that cannot run must not take the daemon down
        raise CheckpointRejected(422, f"smoke test failed: {type(exc).__name__}: {exc}") from None
    return ValidatedPolicy(runner=runner, checkpoint=ckpt, size_bytes=len(data))
