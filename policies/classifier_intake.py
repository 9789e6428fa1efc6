"""Classifier intake: what the daemon runs OFF the control thread when `PUT /classifiers/{direction}`
arrives (the shared checks and status codes: policies/intake_core.py). What a classifier adds:
its smoke scoring of a zero observation must be one finite probability.
"""

from __future__ import annotations

import numpy as np

from policies.classifier_checkpoint import ClassifierCheckpoint
from policies.classifier_runner import ClassifierRunner
from policies.intake_core import CheckpointRejected, Validated, validate_upload
from spec.step import ObsSpec

ValidatedClassifier = Validated[ClassifierCheckpoint, ClassifierRunner]


def validate_classifier(
    data: bytes,
    direction: str,
    obs_spec: ObsSpec,
    active_version: int | None,
    num_threads: int | None = 1,
) -> ValidatedClassifier:
    def smoke(ckpt: ClassifierCheckpoint) -> ClassifierRunner:
        runner = ClassifierRunner(ckpt, num_threads=num_threads)
        zero = {k: v[None] for k, v in ckpt.obs_spec.zero_observation().items() if k in runner.keys}
        p = runner.probabilities(zero)
        if p.shape != (1,) or not np.all(np.isfinite(p)):
            raise CheckpointRejected(422, f"smoke test: scoring a zero observation gave {p.tolist()}")
        return runner

    return validate_upload(
        data, direction, obs_spec, active_version,
        kind="classifier", parse=ClassifierCheckpoint.from_bytes, mismatch=lambda ckpt: None, smoke=smoke,
    )
