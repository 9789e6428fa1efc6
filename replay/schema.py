"""What the store holds: errors, store metadata, per-step array specs and episode records."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spec.step import CameraSpec, Mode, ObsSpec

SCHEMA_VERSION = 1
STORE_FORMAT = "franka-practice-replay"
EPISODES = "episodes"
EVENTS = "events"  # the store's event log (replay.event_log)
KINDS = ("demo", "practice", "eval")
ID_WIDTH = 6
_ID_RE = re.compile(r"^[0-9]{6,}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# Episode attrs the store manages itself; callers cannot set them through update_attrs/close(**attrs).
RESERVED_ATTRS = frozenset(
    {
        "kind",
        "direction",
        "success",
        "closed",
        "length",
        "started_at",
        "ended_at",
        "started_monotonic",
        "events",
        "policy_versions",
        "intervention_steps",
        "meta_revision",
        "uid",
        "writer_pid",
        "repaired",
        "committed_at",
    }
)


class StoreError(RuntimeError):
    """The store cannot do what was asked (wrong layout, incompatible metadata, closed episode...)."""


class StoreLockedError(StoreError):
    """Another process holds the writer lock."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def episode_id(number: int) -> str:
    return f"{number:0{ID_WIDTH}d}"


def is_episode_id(name: str) -> bool:
    return bool(_ID_RE.match(name))


def jsonable(value: Any, what: str) -> Any:
    """`value` as plain JSON types (numpy scalars/arrays converted); a clear error if impossible."""

    def convert(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    try:
        text = json.dumps(value, default=convert, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable (finite numbers, str, list, dict): {e}") from e
    return json.loads(text)


@dataclass(frozen=True)
class ArraySpec:
    """One per-step array: its store key, the shape of one step, and dtype."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_image(self) -> bool:
        return self.dtype == np.uint8 and len(self.shape) == 3


@dataclass
class StoreMeta:
    """Root metadata of a store. `cameras[i]` needs name/height/width (the stored, output size)."""

    robot: str
    rate_hz: float
    cameras: list[dict]
    action_space: dict
    proprio_dim: int
    state_dim: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.robot, str) or not self.robot:
            raise ValueError(f"robot must be a non-empty string, got {self.robot!r}")
        if not isinstance(self.rate_hz, int | float) or not math.isfinite(self.rate_hz) or self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be a positive number, got {self.rate_hz!r}")
        self.cameras = jsonable(list(self.cameras), "cameras")
        names: list[str] = []
        for i, cam in enumerate(self.cameras):
            if not isinstance(cam, dict):
                raise ValueError(f"cameras[{i}] must be a dict, got {cam!r}")
            name = cam.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name) or name in ("proprio", "state"):
                raise ValueError(
                    f"cameras[{i}].name {name!r} must match {_NAME_RE.pattern} and not be 'proprio'/'state'"
                )
            if name in names:
                raise ValueError(f"camera name {name!r} appears twice")
            names.append(name)
            for dim in ("height", "width"):
                v = cam.get(dim)
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    raise ValueError(f"camera {name!r} {dim} must be a positive int, got {v!r}")
        self.action_space = jsonable(dict(self.action_space), "action_space")
        dim = self.action_space.get("dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"action_space['dim'] must be a positive int, got {dim!r}")
        for name in ("proprio_dim", "state_dim"):
            v = getattr(self, name)
            if v is None and name == "state_dim":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.extra = jsonable(dict(self.extra), "extra")

    @property
    def action_dim(self) -> int:
        return int(self.action_space["dim"])

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StoreMeta:
        return cls(**{k: attrs[k] for k in ("robot", "rate_hz", "cameras", "action_space", "proprio_dim")},
                   state_dim=attrs.get("state_dim"), extra=dict(attrs.get("extra") or {}))

    def obs_spec(self, mode: Mode = "pixels") -> ObsSpec:
        """The observation a policy of `mode` reads from this store: the step, as the daemon described it."""
        cams = tuple(CameraSpec.from_dict(c) for c in self.cameras) if mode == "pixels" else ()
        if mode == "state" and not self.state_dim:
            raise StoreError("this store records no state vector (obs/state): only pixel policies can learn from it")
        return ObsSpec(mode=mode, cameras=cams, proprio_dim=self.proprio_dim, state_dim=self.state_dim)

    def to_attrs(self) -> dict[str, Any]:
        return {
            "robot": self.robot,
            "rate_hz": float(self.rate_hz),
            "cameras": self.cameras,
            "action_space": self.action_space,
            "proprio_dim": self.proprio_dim,
            "state_dim": self.state_dim,
            "extra": self.extra,
        }


def array_specs(meta: dict[str, Any]) -> dict[str, ArraySpec]:
    """Per-step arrays of every episode, from root attrs (or StoreMeta.to_attrs())."""
    specs: dict[str, ArraySpec] = {}
    for cam in meta["cameras"]:
        key = f"obs/{cam['name']}"
        specs[key] = ArraySpec(key, (int(cam["height"]), int(cam["width"]), 3), np.dtype(np.uint8))
    specs["obs/proprio"] = ArraySpec("obs/proprio", (int(meta["proprio_dim"]),), np.dtype(np.float32))
    if meta.get("state_dim"):
        specs["obs/state"] = ArraySpec("obs/state", (int(meta["state_dim"]),), np.dtype(np.float32))
    specs["action"] = ArraySpec("action", (int(meta["action_space"]["dim"]),), np.dtype(np.float32))
    specs["timestamp"] = ArraySpec("timestamp", (), np.dtype(np.float64))
    specs["policy_version"] = ArraySpec("policy_version", (), np.dtype(np.int32))
    specs["intervention"] = ArraySpec("intervention", (), np.dtype(np.bool_))
    return specs


@dataclass
class EpisodeInfo:
    id: str
    kind: str
    direction: str
    length: int  # committed steps
    closed: bool
    success: bool | None
    started_at: float
    ended_at: float | None
    attrs: dict = field(default_factory=dict)


def info_from_attrs(ep_id: str, attrs: dict[str, Any]) -> EpisodeInfo:
    return EpisodeInfo(
        id=ep_id,
        kind=attrs["kind"],
        direction=attrs["direction"],
        length=int(attrs["length"]),
        closed=bool(attrs["closed"]),
        success=attrs.get("success"),
        started_at=float(attrs["started_at"]),
        ended_at=attrs.get("ended_at"),
        attrs=dict(attrs),
    )


def read_node_attrs(node_dir: Path) -> dict[str, Any] | None:
    """The attributes in a zarr v3 node's zarr.json, or None if it is missing or unreadable.

    zarr.json is replaced atomically (atomic.AtomicLocalStore), so a reader sees an old or a new
    version, never half of one; "unreadable" only happens for a directory that is not ours.
    """
    try:
        doc = json.loads((node_dir / "zarr.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def is_episode_record(attrs: dict[str, Any] | None) -> bool:
    """True for an episode group whose attrs were written by begin_episode (the first commit)."""
    return bool(attrs) and all(k in attrs for k in ("kind", "direction", "closed", "length", "started_at"))
