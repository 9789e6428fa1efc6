"""Classifier intake: what the daemon runs OFF the control thread when `PUT /classifiers/{direction}`
arrives. Either a ready runner comes back, or CheckpointRejected with the HTTP status to answer,
as for policies (policies/intake.py):

- 400 the bytes are not a valid classifier checkpoint (garbage, format, hash, tensors);
- 409 the version is not newer than the loaded one;
- 422 the checkpoint is for another direction or observation spec, or its smoke scoring of a
  zero observation is not one finite probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.checkpoint import CheckpointError
from policies.classifier_checkpoint import ClassifierCheckpoint
from policies.classifier_runner import ClassifierRunner
from policies.intake import CheckpointRejected
from spec.direction import DIRECTIONS
from spec.step import ObsSpec


@dataclass
class ValidatedClassifier:
    runner: ClassifierRunner
    checkpoint: ClassifierCheckpoint
    size_bytes: int

    @property
    def version(self) -> int:
        return self.checkpoint.version

    @property
    def metadata(self) -> dict[str, Any]:
        return {**self.checkpoint.metadata, "size_bytes": self.size_bytes}


def validate_classifier(
    data: bytes,
    direction: str,
    obs_spec: ObsSpec,
    active_version: int | None,
    num_threads: int | None = 1,
) -> ValidatedClassifier:
    if direction not in DIRECTIONS:
        raise CheckpointRejected(422, f"direction must be one of {DIRECTIONS}, got {direction!r}")
    try:
        ckpt = ClassifierCheckpoint.from_bytes(data)
    except CheckpointError as exc:
        raise CheckpointRejected(400, str(exc)) from None
    if ckpt.direction != direction:
        raise CheckpointRejected(
            422, f"direction: checkpoint is the {ckpt.direction} classifier, uploaded as {direction}"
        )
    why = obs_spec.compatible(ckpt.obs_spec)
    if why:
        raise CheckpointRejected(422, why)
    if active_version is not None and ckpt.version <= active_version:
        raise CheckpointRejected(
            409, f"version {ckpt.version} is not newer than the loaded {direction} classifier version {active_version}"
        )
    try:
        runner = ClassifierRunner(ckpt, num_threads=num_threads)
        zero = {k: v[None] for k, v in ckpt.obs_spec.zero_observation().items() if k in runner.keys}
        p = runner.probabilities(zero)
        if p.shape != (1,) or not np.all(np.isfinite(p)):
            raise CheckpointRejected(422, f"smoke test: scoring a zero observation gave {p.tolist()}")
    except CheckpointRejected:
        raise
    except Exception as exc:  # a classifier that cannot run must not take the daemon down
        raise CheckpointRejected(422, f"smoke test failed: {type(exc).__name__}: {exc}") from None
    return ValidatedClassifier(runner=runner, checkpoint=ckpt, size_bytes=len(data))
