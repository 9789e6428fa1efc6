"""Policy intake: what the daemon runs OFF the control thread when `PUT /policies/{direction}`
arrives (the shared checks and status codes: policies/intake_core.py). What a policy adds:
its action spec must match the daemon's, and its smoke inference on a zero observation must give
finite actions of the right shape, deterministic and sampled.
"""

from __future__ import annotations

import numpy as np

from policies.checkpoint import PolicyCheckpoint
from policies.intake_core import CheckpointRejected, Validated, validate_upload
from policies.runner import PolicyRunner
from spec.step import ActionSpec, ObsSpec, action_dim, action_spec_difference

__all__ = ["CheckpointRejected", "ValidatedPolicy", "validate_checkpoint"]

ValidatedPolicy = Validated[PolicyCheckpoint, PolicyRunner]


def validate_checkpoint(
    data: bytes,
    direction: str,
    obs_spec: ObsSpec,
    action_spec: ActionSpec,
    active_version: int | None,
    num_threads: int | None = 1,
) -> ValidatedPolicy:
    def smoke(ckpt: PolicyCheckpoint) -> PolicyRunner:
        runner = PolicyRunner(ckpt, num_threads=num_threads)
        dim = action_dim(action_spec)
        zero = ckpt.obs_spec.zero_observation()
        for det in (True, False):
            a = runner.act(zero, deterministic=det)
            if a.shape != (dim,):
                raise CheckpointRejected(422, f"smoke test: action shape {list(a.shape)}, expected [{dim}]")
            if not np.all(np.isfinite(a)):
                raise CheckpointRejected(422, f"smoke test: non-finite action {a.tolist()} on a zero observation")
        return runner

    return validate_upload(
        data,
        direction,
        obs_spec,
        active_version,
        kind="policy",
        parse=PolicyCheckpoint.from_bytes,
        mismatch=lambda ckpt: action_spec_difference(action_spec, ckpt.action_spec),
        smoke=smoke,
    )
