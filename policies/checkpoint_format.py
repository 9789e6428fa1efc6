"""The checkpoint container both kinds share (policies/checkpoint.py, policies/classifier_checkpoint.py):
one safetensors file whose `__metadata__` header carries a format tag, the direction, version,
step, observation spec, network sizes, created_at and a sha256 of the tensors, beside whatever
the kind adds (a policy's action spec, a classifier's cameras). Loading never unpickles anything:
the bytes are parsed by safetensors only.

The payload hash is canonical: sha256 over the tensors sorted by name, each contributing
`name \\0 dtype \\0 json(shape) \\0 raw little-endian bytes`, so it does not depend on the
header's byte layout or key order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from policies.networks import NetworkSizes
from spec.direction import DIRECTIONS
from spec.step import ObsSpec

# The metadata keys every kind carries; a kind's required keys are these plus its own.
COMMON_KEYS = ("format", "version", "direction", "obs_spec", "network", "step", "created_at", "sha256")


class CheckpointError(ValueError):
    """The bytes are not a valid checkpoint; the message says what is wrong."""


class CheckpointFields(Protocol):
    """What a checkpoint of either kind holds besides its own fields."""

    tensors: dict[str, torch.Tensor]
    direction: str
    version: int
    obs_spec: ObsSpec
    sizes: NetworkSizes
    step: int
    created_at: str
    sha256: str


@dataclass(frozen=True)
class Header:
    """The common metadata of a checkpoint read from bytes, parsed and checked."""

    direction: str
    version: int
    step: int
    obs_spec: ObsSpec
    sizes: NetworkSizes
    created_at: str
    sha256: str


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_fields(ckpt: CheckpointFields) -> None:
    """A checkpoint's `__post_init__`: a known direction, and the payload hash filled in when not given."""
    if ckpt.direction not in DIRECTIONS:
        raise CheckpointError(f"direction must be one of {DIRECTIONS}, got {ckpt.direction!r}")
    if not ckpt.sha256:
        ckpt.sha256 = payload_sha256(ckpt.tensors)


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state dict on the CPU, detached and contiguous (what a checkpoint stores)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def common_metadata(ckpt: CheckpointFields, fmt: str) -> dict[str, Any]:
    """The common fields as JSON values (a checkpoint's `metadata`, shown by the API)."""
    return {
        "format": fmt,
        "version": ckpt.version,
        "direction": ckpt.direction,
        "obs_spec": ckpt.obs_spec.to_dict(),
        "network": ckpt.sizes.to_dict(),
        "step": ckpt.step,
        "created_at": ckpt.created_at,
        "sha256": ckpt.sha256,
    }


def to_bytes(ckpt: CheckpointFields, fmt: str, extra: dict[str, str]) -> bytes:
    """The safetensors file: the tensors, the common fields as strings, and the kind's `extra` ones."""
    meta = {
        "format": fmt,
        "version": str(ckpt.version),
        "direction": ckpt.direction,
        "obs_spec": ckpt.obs_spec.to_json(),
        "network": json.dumps(ckpt.sizes.to_dict(), sort_keys=True),
        "step": str(ckpt.step),
        "created_at": ckpt.created_at,
        "sha256": ckpt.sha256,
        **extra,
    }
    return st_save({k: v.contiguous() for k, v in ckpt.tensors.items()}, metadata=meta)


def read_checkpoint(
    data: bytes, fmt: str, required: tuple[str, ...], what: str
) -> tuple[dict[str, str], dict[str, torch.Tensor], Header]:
    """The metadata, tensors and checked common header of a checkpoint of format `fmt`: the
    format tag, the `required` keys, version >= 0, a known direction and the payload hash.
    The kind then parses its own fields from the metadata and checks the tensor shapes."""
    meta = read_metadata(data, fmt, required, what)
    tensors = load_tensors(data)
    version = meta_field(meta, "version", int)
    step = meta_field(meta, "step", int)
    obs_spec = meta_field(meta, "obs_spec", ObsSpec.from_json)
    sizes = meta_field(meta, "network", lambda s: NetworkSizes.from_dict(json.loads(s)))
    if version < 0:
        raise CheckpointError(f"version must be >= 0, got {version}")
    if meta["direction"] not in DIRECTIONS:
        raise CheckpointError(f"metadata direction must be one of {DIRECTIONS}, got {meta['direction']!r}")
    actual = payload_sha256(tensors)
    if actual != meta["sha256"]:
        raise CheckpointError(f"tensor payload sha256 {actual[:12]}… does not match metadata {meta['sha256'][:12]}…")
    header = Header(meta["direction"], version, step, obs_spec, sizes, meta["created_at"], meta["sha256"])
    return meta, tensors, header


def payload_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(b"\0" + str(t.dtype).removeprefix("torch.").encode() + b"\0")
        h.update(json.dumps(list(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def read_metadata(data: bytes, fmt: str, required: tuple[str, ...], what: str) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (header: u64 little-endian length, then JSON), checked
    for the format tag `fmt` and the `required` keys; `what` names the kind in the error."""
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
