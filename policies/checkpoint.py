"""The policy checkpoint: encoder + actor for one direction, as one safetensors file.

Everything the daemon needs to refuse a wrong file is in the safetensors `__metadata__` header
(format tag, version, direction, obs/action specs, network sizes, step, created_at, and a sha256
of the tensors). Loading never unpickles anything: the bytes are parsed by safetensors only.

The payload hash is canonical: sha256 over the tensors sorted by name, each contributing
`name \\0 dtype \\0 json(shape) \\0 raw little-endian bytes`, so it does not depend on the
header's byte layout or key order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from policies.networks import NetworkSizes, Policy
from spec.direction import DIRECTIONS
from spec.step import ActionSpec, ObsSpec, action_dim

FORMAT = "medalpp-policy/1"
_REQUIRED = ("format", "version", "direction", "obs_spec", "action_spec", "network", "step", "created_at", "sha256")


class CheckpointError(ValueError):
    """The bytes are not a valid policy checkpoint; the message says what is wrong."""


def payload_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(b"\0" + str(t.dtype).removeprefix("torch.").encode() + b"\0")
        h.update(json.dumps(list(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class PolicyCheckpoint:
    tensors: dict[str, torch.Tensor]
    direction: str
    version: int
    obs_spec: ObsSpec
    action_spec: ActionSpec
    sizes: NetworkSizes
    step: int = 0
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise CheckpointError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not self.sha256:
            self.sha256 = payload_sha256(self.tensors)

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
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in policy.state_dict().items()}
        return cls(tensors, direction, int(version), obs_spec, dict(action_spec), sizes, int(step))

    def build_policy(self) -> Policy:
        """The encoder + actor with these weights (CPU, eval mode)."""
        policy = Policy(self.obs_spec, action_dim(self.action_spec), self.sizes)
        policy.load_state_dict(self.tensors, strict=True)
        return policy.eval()

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "direction": self.direction,
            "obs_spec": self.obs_spec.to_dict(),
            "action_spec": self.action_spec,
            "network": self.sizes.to_dict(),
            "step": self.step,
            "created_at": self.created_at,
            "sha256": self.sha256,
        }

    # --- bytes ---
    def to_bytes(self) -> bytes:
        meta = {
            "format": FORMAT,
            "version": str(self.version),
            "direction": self.direction,
            "obs_spec": self.obs_spec.to_json(),
            "action_spec": json.dumps(self.action_spec, sort_keys=True),
            "network": json.dumps(self.sizes.to_dict(), sort_keys=True),
            "step": str(self.step),
            "created_at": self.created_at,
            "sha256": self.sha256,
        }
        return st_save({k: v.contiguous() for k, v in self.tensors.items()}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> PolicyCheckpoint:
        meta = read_metadata(data)
        tensors = load_tensors(data)
        version = meta_field(meta, "version", int)
        step = meta_field(meta, "step", int)
        obs_spec = meta_field(meta, "obs_spec", ObsSpec.from_json)
        action_spec = meta_field(meta, "action_spec", json.loads)
        sizes = meta_field(meta, "network", lambda s: NetworkSizes.from_dict(json.loads(s)))
        meta_field(meta, "action_spec", lambda s: action_dim(json.loads(s)))
        if version < 0:
            raise CheckpointError(f"version must be >= 0, got {version}")
        if meta["direction"] not in DIRECTIONS:
            raise CheckpointError(f"metadata direction must be one of {DIRECTIONS}, got {meta['direction']!r}")
        actual = payload_sha256(tensors)
        if actual != meta["sha256"]:
            raise CheckpointError(f"tensor payload sha256 {actual[:12]}… does not match metadata {meta['sha256'][:12]}…")
        _check_tensors(tensors, obs_spec, action_spec, sizes)
        return cls(
            tensors=tensors,
            direction=meta["direction"],
            version=version,
            obs_spec=obs_spec,
            action_spec=action_spec,
            sizes=sizes,
            step=step,
            created_at=meta["created_at"],
            sha256=meta["sha256"],
        )


def load_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors blob, parsed by safetensors only (never unpickled)."""
    try:
        return st_load(bytes(data))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # safetensors' own errors, and a Rust panic (a BaseException)
        raise CheckpointError(f"not a readable safetensors file: {exc}") from None


def meta_field(meta: dict[str, str], name: str, parse: Any) -> Any:
    """`parse(meta[name])`, or a CheckpointError naming the field."""
    try:
        return parse(meta[name])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint metadata {name!r} is invalid ({meta.get(name)!r:.80}): {exc}") from None


def read_metadata(
    data: bytes, fmt: str = FORMAT, required: tuple[str, ...] = _REQUIRED, what: str = "policy"
) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (header: u64 little-endian length, then JSON), checked
    for the format tag `fmt` and the `required` keys (a policy checkpoint's by default)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CheckpointError(f"checkpoint must be bytes, got {type(data).__name__}")
    if len(data) < 8:
        raise CheckpointError(f"not a safetensors file: only {len(data)} bytes")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > len(data) - 8 or n > 100_000_000:
        raise CheckpointError(f"not a safetensors file: header length {n} does not fit in {len(data)} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"not a safetensors file: header is not JSON ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"safetensors file has no __metadata__: not a {what} checkpoint")
    if meta.get("format") != fmt:
        raise CheckpointError(f"format is {meta.get('format')!r}, expected {fmt!r}")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata is missing {missing}")
    return meta


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


def check_tensor_shapes(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    """The tensors are exactly the expected names, shapes and float32, or a CheckpointError says which is not."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint is missing tensors {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if extra:
        raise CheckpointError(f"checkpoint has unexpected tensors {extra[:5]}{' …' if len(extra) > 5 else ''}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(f"tensor {name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
        if tensors[name].dtype != torch.float32:
            raise CheckpointError(f"tensor {name} has dtype {tensors[name].dtype}, expected float32")
