"""The policy checkpoint: encoder + actor for one direction, as one safetensors file.

Everything the daemon needs to refuse a wrong file is in the safetensors `__metadata__` header
(format tag, version, direction, obs/action specs, network sizes, step, created_at, and a sha256
of the tensors); the container, its hash and its checks are shared with the classifier
checkpoint (policies/checkpoint_format.py). This module adds the action spec and the tensor
names and shapes of a `Policy`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from policies import checkpoint_format as fmt
from policies.checkpoint_format import (
    CheckpointError,
    check_tensor_shapes,
    meta_field,
    payload_sha256,
)
from policies.networks import NetworkSizes, Policy
from spec.step import ActionSpec, ObsSpec, action_dim

__all__ = ["FORMAT", "CheckpointError", "PolicyCheckpoint", "payload_sha256", "read_metadata"]

FORMAT = "medalpp-policy/1"
_REQUIRED = (*fmt.COMMON_KEYS, "action_spec")


@dataclass
class PolicyCheckpoint:
    tensors: dict[str, torch.Tensor]
    direction: str
    version: int
    obs_spec: ObsSpec
    action_spec: ActionSpec
    sizes: NetworkSizes
    step: int = 0
    created_at: str = field(default_factory=fmt.now_iso)
    sha256: str = ""

    def __post_init__(self) -> None:
        fmt.check_fields(self)

    # --- building ---
    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        direction: str,
        version: int,
        obs_spec: ObsSpec,
        action_spec: ActionSpec,
        sizes: NetworkSizes,
        step: int = 0,
    ) -> PolicyCheckpoint:
        tensors = fmt.module_tensors(policy)
        return cls(tensors, direction, int(version), obs_spec, dict(action_spec), sizes, int(step))

    def build_policy(self) -> Policy:
        """The encoder + actor with these weights (CPU, eval mode)."""
        policy = Policy(self.obs_spec, action_dim(self.action_spec), self.sizes)
        policy.load_state_dict(self.tensors, strict=True)
        return policy.eval()

    @property
    def metadata(self) -> dict[str, Any]:
        return {**fmt.common_metadata(self, FORMAT), "action_spec": self.action_spec}

    # --- bytes ---
    def to_bytes(self) -> bytes:
        return fmt.to_bytes(self, FORMAT, {"action_spec": json.dumps(self.action_spec, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes) -> PolicyCheckpoint:
        meta, tensors, h = fmt.read_checkpoint(data, FORMAT, _REQUIRED, what="policy")
        action_spec = meta_field(meta, "action_spec", json.loads)
        meta_field(meta, "action_spec", lambda s: action_dim(json.loads(s)))
        _check_tensors(tensors, h.obs_spec, action_spec, h.sizes)
        return cls(tensors, h.direction, h.version, h.obs_spec, action_spec, h.sizes, h.step, h.created_at, h.sha256)


def read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a policy checkpoint, checked for its format tag and required keys."""
    return fmt.read_metadata(data, FORMAT, _REQUIRED, what="policy")


def _check_tensors(
    tensors: dict[str, torch.Tensor], obs_spec: ObsSpec, action_spec: ActionSpec, sizes: NetworkSizes
) -> None:
    try:
        # On the meta device: shapes only, no memory for a robot-size model.
        with torch.device("meta"):
            expected = {k: v.shape for k, v in Policy(obs_spec, action_dim(action_spec), sizes).state_dict().items()}
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot build a policy from the metadata: {exc}") from None
    check_tensor_shapes(tensors, expected)
