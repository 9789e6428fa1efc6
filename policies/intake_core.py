"""The checkpoint intake both kinds share (policies/intake.py for policies, policies/classifier_intake.py
for classifiers): what the daemon runs OFF the control thread when a checkpoint is uploaded. Either
a ready runner comes back, or CheckpointRejected with the HTTP status to answer:

- 400 the bytes are not a valid checkpoint of that kind (garbage, format, hash, tensors);
- 409 the version is not newer than the active one;
- 422 the checkpoint is for another direction or spec, or its smoke run on a zero observation
  fails (each kind says what it runs and checks).

The daemon keeps what is running whenever this raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from policies.checkpoint_format import CheckpointError
from spec.direction import DIRECTIONS
from spec.step import ObsSpec


class CheckpointRejected(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message


class Checkpoint(Protocol):
    direction: str
    version: int
    obs_spec: ObsSpec

    @property
    def metadata(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=Checkpoint)
R = TypeVar("R")


@dataclass
class Validated(Generic[C, R]):
    """A checkpoint that passed intake, with its ready runner."""

    runner: R
    checkpoint: C
    size_bytes: int

    @property
    def version(self) -> int:
        return self.checkpoint.version

    @property
    def metadata(self) -> dict[str, Any]:
        return {**self.checkpoint.metadata, "size_bytes": self.size_bytes}


def validate_upload(
    data: bytes,
    direction: str,
    obs_spec: ObsSpec,
    active_version: int | None,
    *,
    kind: str,
    parse: Callable[[bytes], C],
    mismatch: Callable[[C], str | None],
    smoke: Callable[[C], R],
) -> Validated[C, R]:
    """Run the checks in the order of their cost: the direction asked for, the bytes (`parse`,
    raising CheckpointError), the direction and observation spec in the file, whatever else the
    kind compares (`mismatch` gives the reason or None), the version, then `smoke`, which builds
    the runner and runs it once (raising CheckpointRejected, or anything for a 422).
    `kind` ("policy", "classifier") names the checkpoint in the messages."""
    if direction not in DIRECTIONS:
        raise CheckpointRejected(422, f"direction must be one of {DIRECTIONS}, got {direction!r}")
    try:
        ckpt = parse(data)
    except CheckpointError as exc:
        raise CheckpointRejected(400, str(exc)) from None
    if ckpt.direction != direction:
        raise CheckpointRejected(
            422, f"direction: checkpoint is the {ckpt.direction} {kind}, uploaded as {direction}"
        )
    why = obs_spec.compatible(ckpt.obs_spec) or mismatch(ckpt)
    if why:
        raise CheckpointRejected(422, why)
    if active_version is not None and ckpt.version <= active_version:
        raise CheckpointRejected(
            409, f"version {ckpt.version} is not newer than the active {direction} {kind} version {active_version}"
        )
    try:
        runner = smoke(ckpt)
    except CheckpointRejected:
        raise
    except Exception as exc:  # a checkpoint that cannot run must not take the daemon down
        raise CheckpointRejected(422, f"smoke test failed: {type(exc).__name__}: {exc}") from None
    return Validated(runner=runner, checkpoint=ckpt, size_bytes=len(data))
