"""The step, described once: what the arm reports, what a policy sees and outputs, what the arm is sent.

- `ArmState` / `ArmTarget`: the value objects of one tick (the `arm` interface passes them), and
  `yaw_of`, what their yaw means.
- `ActionSpace`: the action in [-1, 1]^(d+1) (translation (dx, dy, dz[, dyaw]) then gripper,
  > 0 closes), THE action clip (translation norm-clipped to 1; MEDALPP.md), its mapping to a
  workspace-clipped arm target, and the normalised proprioception.
- `ObsSpec`: the observation a policy of a given mode reads. Observation dict convention
  everywhere (daemon tick, store, learner): "obs/<camera>" uint8 HxWx3, "obs/proprio" float32 [P],
  "obs/state" float32 [S] (sim only). Pixel policies stack their views channel-wise in the
  camera order of the spec (6 channels for 2 views), channels last: a stacked frame is uint8
  [H, W, C], the store's own layout, and stays so through the learner's buffers, augmentation
  and the networks' inputs (a convolution reads it as channels_last memory, without a copy).

The daemon writes both specs into the store's metadata; the learner, replay tools and checkpoint
intake read them from there.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from spec.config import ActionConfig, Config, WorkspaceConfig

Mode = Literal["pixels", "state"]


class ArmMode(enum.StrEnum):
    READY = "ready"  # accepting targets
    HOMING = "homing"  # a move to the home pose is running; targets are ignored
    REFLEX = "reflex"  # the controller stopped on an error; recovery pending
    RECOVERING = "recovering"
    PAUSED = "paused"  # too many failures: waits for the operator (resume())
    STOPPED = "stopped"  # emergency stop: no motion until resume()
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class ArmState:
    position: np.ndarray  # (3,) end-effector position in the base frame, m
    quaternion: np.ndarray  # (4,) end-effector orientation, w x y z
    yaw: float  # yaw_of(the end-effector rotation), rad
    gripper_width: float  # m
    joints: np.ndarray  # (7,) rad
    external_force: np.ndarray  # (6,) external wrench at the end-effector, base frame, N and Nm
    mode: ArmMode
    timestamp: float  # spec.clock.now() when read
    gripper_closed: bool = False  # the last gripper command


def yaw_of(rot: np.ndarray) -> float:
    """What "yaw" means for every arm: the angle of the end-effector x axis about the base z axis.

    `rot` is the end-effector rotation matrix in the base frame (a 4x4 transform works too).
    """
    return math.atan2(rot[1, 0], rot[0, 0])


@dataclass(frozen=True)
class ArmTarget:
    """An absolute end-effector goal for this tick; roll and pitch are held by the backend."""

    position: np.ndarray  # (3,) m, already clipped to the workspace box
    yaw: float | None  # rad; None = hold the current yaw
    gripper_closed: bool


GRIPPER_MAX_WIDTH = 0.08  # Franka hand, m


class InvalidAction(ValueError):
    pass


def proprio_layout(yaw: bool) -> list[str]:
    """The names of ActionSpace.proprio's values, in order (exports label the vector with them)."""
    return ["ee_x", "ee_y", "ee_z"] + (["ee_yaw"] if yaw else []) + ["gripper_width"]


class ActionSpace:
    def __init__(self, action: ActionConfig, workspace: WorkspaceConfig) -> None:
        self.cfg = action
        self.low = np.asarray(workspace.low, dtype=np.float64)
        self.high = np.asarray(workspace.high, dtype=np.float64)

    @property
    def dim(self) -> int:
        return 5 if self.cfg.yaw else 4

    @property
    def proprio_dim(self) -> int:
        return 5 if self.cfg.yaw else 4

    def spec(self) -> dict[str, Any]:
        """What a checkpoint and the store record about actions, to refuse mismatched policies."""
        return {
            "dim": self.dim,
            "yaw": self.cfg.yaw,
            "max_translation_m": self.cfg.max_translation_m,
            "max_yaw_rad": self.cfg.max_yaw_rad,
            "layout": ["dx", "dy", "dz"] + (["dyaw"] if self.cfg.yaw else []) + ["gripper"],
            "workspace": {"low": self.low.tolist(), "high": self.high.tolist()},
        }

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.dim,):
            raise InvalidAction(f"action has {a.size} values, expected {self.dim}")
        if not np.all(np.isfinite(a)):
            raise InvalidAction("action contains NaN or inf")
        a = np.clip(a, -1.0, 1.0)
        norm = np.linalg.norm(a[:3])
        if norm > 1.0:
            a[:3] /= norm
        return a

    def target(self, action: np.ndarray, state: ArmState) -> ArmTarget:
        """The absolute target for a (clipped) action, relative to the measured pose."""
        a = self.clip_action(action)
        pos = state.position + a[:3] * self.cfg.max_translation_m
        pos = np.clip(pos, self.low, self.high)
        yaw = None
        if self.cfg.yaw:
            yaw = _wrap(state.yaw + a[3] * self.cfg.max_yaw_rad)
        return ArmTarget(position=pos, yaw=yaw, gripper_closed=bool(a[-1] > 0.0))

    def hold(self, state: ArmState) -> ArmTarget:
        return ArmTarget(
            position=np.clip(state.position, self.low, self.high),
            yaw=None,
            gripper_closed=state.gripper_closed,
        )

    def action_towards(
        self, delta_pos: np.ndarray, close_gripper: bool, delta_yaw: float = 0.0
    ) -> np.ndarray:
        """The normalised action that moves by `delta_pos` metres (for experts and teleop)."""
        t = np.asarray(delta_pos, dtype=np.float64) / self.cfg.max_translation_m
        norm = np.linalg.norm(t)
        if norm > 1.0:
            t /= norm
        parts = [t]
        if self.cfg.yaw:
            parts.append([np.clip(delta_yaw / self.cfg.max_yaw_rad, -1.0, 1.0)])
        parts.append([1.0 if close_gripper else -1.0])
        return np.concatenate(parts).astype(np.float32)

    def proprio(self, state: ArmState) -> np.ndarray:
        """End-effector position (and yaw) and gripper width, each normalised to [-1, 1] (proprio_layout)."""
        pos = 2.0 * (state.position - self.low) / (self.high - self.low) - 1.0
        parts = [np.clip(pos, -1.5, 1.5)]
        if self.cfg.yaw:
            parts.append([state.yaw / math.pi])
        parts.append([2.0 * state.gripper_width / GRIPPER_MAX_WIDTH - 1.0])
        return np.concatenate(parts).astype(np.float32)

    def pose_of_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """`proprio` undone, for one vector [P] or many [..., P]: end-effector position (m), yaw (rad;
        None when the actions have no yaw, so it was not recorded) and gripper width (m).
        Exact unless `proprio` clipped a value (a position far outside the workspace box)."""
        p = np.asarray(proprio, dtype=np.float64)
        if p.shape[-1] != self.proprio_dim:
            raise ValueError(f"proprio has {p.shape[-1]} values, expected {self.proprio_dim}")
        pos = self.low + (p[..., :3] + 1.0) * (self.high - self.low) / 2.0
        yaw = p[..., 3] * math.pi if self.cfg.yaw else None
        width = (p[..., -1] + 1.0) * GRIPPER_MAX_WIDTH / 2.0
        return pos, yaw, width

    def contains(self, position: np.ndarray, margin: float = 0.0) -> bool:
        p = np.asarray(position)
        return bool(np.all(p >= self.low - margin) and np.all(p <= self.high + margin))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


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


# The action spec is the plain dict spec.step.ActionSpace.spec() returns
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
    """uint8 [..., H, W, C]: the spec's views from "obs/<camera>" [..., H, W, 3], stacked along the
    last axis in camera order (channels 3v..3v+2 are view v's RGB). One view is returned as given
    (no copy); several are copied once, into the stacked frame."""
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
    if len(views) == 1:
        return views[0]
    if any(v.shape != views[0].shape or v.strides[-1] != 1 for v in views):
        return np.concatenate(views, axis=-1)  # (its error names mismatched shapes)
    # Copy each RGB pixel as one 3-byte element: about twice as fast as concatenate's byte-wise
    # copy along a 3-wide axis, which a restarted learner pays for every stored frame.
    out = np.empty((*views[0].shape[:-1], 3 * len(views)), np.uint8)
    pixels = out.view("V3")
    for i, v in enumerate(views):
        pixels[..., i] = v.view("V3")[..., 0]
    return out


def vector(obs: Any, key: str, dim: int) -> np.ndarray:
    """float32 [..., dim] from obs[key], with a clear error on a missing key or wrong size."""
    if key not in obs:
        raise ObservationError(f"observation has no {key!r} (has {sorted(obs)})")
    v = np.asarray(obs[key], dtype=np.float32)
    if v.ndim == 0 or v.shape[-1] != dim:
        raise ObservationError(f"{key}: expected {dim} values, got shape {list(v.shape)}")
    return v


def policy_input(obs: Any, spec: ObsSpec) -> tuple[np.ndarray, np.ndarray]:
    """(image [..., H, W, C] uint8 or state [..., S] float32, proprio [..., P] float32)."""
    main = vector(obs, "obs/state", int(spec.state_dim or 0)) if spec.mode == "state" else stack_views(obs, spec)
    return main, vector(obs, "obs/proprio", spec.proprio_dim)
