"""What a policy sees and does: the observation and action specs a checkpoint is built for.

Observation dict convention everywhere (daemon tick, store, learner): "obs/<camera>" uint8 HxWx3,
"obs/proprio" float32 [P], "obs/state" float32 [S] (sim only). Pixel policies stack their views
channel-wise in the camera order of the spec (6 channels for 2 views).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from robot_server.config import Config

Mode = Literal["pixels", "state"]


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int
    width: int
    crop: dict[str, int] | None = None  # the full-frame crop rectangle the view comes from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "height": self.height, "width": self.width, "crop": self.crop}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraSpec:
        crop = d.get("crop")
        return cls(
            name=str(d["name"]),
            height=int(d["height"]),
            width=int(d["width"]),
            crop=None if crop is None else {k: int(v) for k, v in dict(crop).items()},
        )


@dataclass(frozen=True)
class ObsSpec:
    mode: Mode
    cameras: tuple[CameraSpec, ...] = ()
    proprio_dim: int = 0
    state_dim: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("pixels", "state"):
            raise ValueError(f"obs mode must be 'pixels' or 'state', got {self.mode!r}")
        if self.mode == "pixels":
            if not self.cameras:
                raise ValueError("a pixel observation spec needs at least one camera")
            sizes = {(c.height, c.width) for c in self.cameras}
            if len(sizes) != 1:
                # Views are stacked channel-wise, so every view must have the same size.
                raise ValueError(f"all camera views must have the same output size, got {sorted(sizes)}")
        if self.mode == "state" and not self.state_dim:
            raise ValueError("a state observation spec needs state_dim > 0")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")

    # --- derived ---
    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def channels(self) -> int:
        return 3 * len(self.cameras)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.cameras[0].height, self.cameras[0].width)

    def keys(self) -> list[str]:
        """The observation keys a policy of this spec reads."""
        if self.mode == "state":
            return ["obs/state", "obs/proprio"]
        return [f"obs/{n}" for n in self.camera_names] + ["obs/proprio"]

    def zero_observation(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {"obs/proprio": np.zeros(self.proprio_dim, np.float32)}
        if self.state_dim:
            obs["obs/state"] = np.zeros(int(self.state_dim), np.float32)
        if self.mode == "pixels":
            for c in self.cameras:
                obs[f"obs/{c.name}"] = np.zeros((c.height, c.width, 3), np.uint8)
        return obs

    # --- building ---
    @classmethod
    def from_config(cls, cfg: Config, mode: Mode | None = None, state_dim: int | None = None) -> ObsSpec:
        """The spec a robot configured by `cfg` provides (mode defaults to cfg.learner.mode)."""
        from robot_server.action_space import ActionSpace

        mode = mode or cfg.learner.mode
        cams = tuple(
            CameraSpec(
                name=c.name,
                height=c.output.height,
                width=c.output.width,
                crop=c.crop_rect.model_dump(),
            )
            for c in cfg.cameras
        )
        proprio = ActionSpace(cfg.action, cfg.workspace).proprio_dim
        if mode == "state" and not state_dim:
            raise ValueError("state mode needs the store's state_dim (the sim records obs/state)")
        return cls(mode=mode, cameras=cams, proprio_dim=proprio, state_dim=state_dim)

    def for_mode(self, mode: Mode) -> ObsSpec:
        return ObsSpec(mode=mode, cameras=self.cameras, proprio_dim=self.proprio_dim, state_dim=self.state_dim)

    # --- serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "cameras": [c.to_dict() for c in self.cameras],
            "proprio_dim": self.proprio_dim,
            "state_dim": self.state_dim,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObsSpec:
        sd = d.get("state_dim")
        return cls(
            mode=d["mode"],
            cameras=tuple(CameraSpec.from_dict(c) for c in d.get("cameras", [])),
            proprio_dim=int(d.get("proprio_dim", 0)),
            state_dim=None if sd is None else int(sd),
        )

    @classmethod
    def from_json(cls, text: str) -> ObsSpec:
        return cls.from_dict(json.loads(text))

    # --- compatibility ---
    def compatible(self, required: ObsSpec) -> str | None:
        """None if observations described by `self` can feed a policy built for `required`;
        otherwise a sentence naming the field that differs.

        `self` is what the robot provides (a sim daemon provides pixels and a state vector), so a
        state policy only needs a matching state vector, and a pixel policy only the same views.
        """
        if self.proprio_dim != required.proprio_dim:
            return f"obs.proprio_dim: robot provides {self.proprio_dim}, policy needs {required.proprio_dim}"
        if required.mode == "state":
            if self.state_dim != required.state_dim:
                return f"obs.state_dim: robot provides {self.state_dim}, policy needs {required.state_dim}"
            return None
        have, need = self.camera_names, required.camera_names
        if have != need:
            return f"obs.cameras: robot provides {have}, policy needs {need}"
        for h, n in zip(self.cameras, required.cameras, strict=True):
            for attr in ("height", "width", "crop"):
                if getattr(h, attr) != getattr(n, attr):
                    return (
                        f"obs.cameras[{n.name}].{attr}: robot provides {getattr(h, attr)}, "
                        f"policy needs {getattr(n, attr)}"
                    )
        return None


def action_spec_difference(have: dict[str, Any], need: dict[str, Any]) -> str | None:
    """None if two ActionSpace.spec() dicts agree; otherwise which field differs."""
    for key in sorted(set(have) | set(need)):
        a, b = have.get(key, "<missing>"), need.get(key, "<missing>")
        if _canon(a) != _canon(b):
            return f"action.{key}: robot has {a!r}, policy was trained with {b!r}"
    return None


def _canon(v: Any) -> Any:
    # A spec that went through JSON has lists for tuples and may have 1 for 1.0: compare by value.
    if isinstance(v, dict):
        return {str(k): _canon(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_canon(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    return str(v)


# The action spec is the plain dict robot_server.action_space.ActionSpace.spec() returns
# (dim, yaw, max_translation_m, max_yaw_rad, layout, workspace).
ActionSpec = dict[str, Any]


def action_dim(spec: ActionSpec) -> int:
    try:
        dim = int(spec["dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"action spec has no integer 'dim': {spec!r}") from exc
    if dim < 1:
        raise ValueError(f"action spec dim must be >= 1, got {dim}")
    return dim


class ObservationError(ValueError):
    """An observation dict does not match the spec (names the key and the shapes)."""


def stack_views(obs: Any, spec: ObsSpec) -> np.ndarray:
    """uint8 [..., C, H, W]: the spec's views from "obs/<camera>" [..., H, W, 3], stacked channel-wise."""
    views = []
    for cam in spec.cameras:
        key = f"obs/{cam.name}"
        if key not in obs:
            raise ObservationError(f"observation has no {key!r} (has {sorted(obs)})")
        v = np.asarray(obs[key])
        if v.shape[-3:] != (cam.height, cam.width, 3) or v.dtype != np.uint8:
            raise ObservationError(
                f"{key}: expected uint8 [..., {cam.height}, {cam.width}, 3], got {v.dtype} {list(v.shape)}"
            )
        views.append(v)
    stacked = np.concatenate(views, axis=-1) if len(views) > 1 else views[0]
    return np.moveaxis(stacked, -1, -3)


def vector(obs: Any, key: str, dim: int) -> np.ndarray:
    """float32 [..., dim] from obs[key], with a clear error on a missing key or wrong size."""
    if key not in obs:
        raise ObservationError(f"observation has no {key!r} (has {sorted(obs)})")
    v = np.asarray(obs[key], dtype=np.float32)
    if v.ndim == 0 or v.shape[-1] != dim:
        raise ObservationError(f"{key}: expected {dim} values, got shape {list(v.shape)}")
    return v


def policy_input(obs: Any, spec: ObsSpec) -> tuple[np.ndarray, np.ndarray]:
    """(image [..., C, H, W] uint8 or state [..., S] float32, proprio [..., P] float32)."""
    main = vector(obs, "obs/state", int(spec.state_dim or 0)) if spec.mode == "state" else stack_views(obs, spec)
    return main, vector(obs, "obs/proprio", spec.proprio_dim)
