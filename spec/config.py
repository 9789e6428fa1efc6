"""Typed configuration: one YAML file, overridden by ``ROBOT__SECTION__FIELD`` environment variables.

Every process (daemon, learner, tools) loads the same file, so a robot is described once.
A bad value fails at start with a message that names the field, e.g. ``arm.host: ...``.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spec.camera_config import CameraConfig

ENV_PREFIX = "ROBOT__"


class Strict(BaseModel):
    # Unknown keys are almost always typos in a YAML file: refuse them.
    model_config = ConfigDict(extra="forbid")


class ImpedanceConfig(Strict):
    translational_stiffness: float = Field(2000.0, gt=0)
    rotational_stiffness: float = Field(150.0, gt=0)


class RecoveryConfig(Strict):
    max_failures: int = Field(3, ge=1, description="reflexes tolerated inside `window_s` before pausing")
    window_s: float = Field(600.0, gt=0)
    retreat_m: float = Field(0.02, ge=0, description="move up this far after a reflex before resuming")
    go_home_after: bool = False


class ArmConfig(Strict):
    backend: Literal["sim", "franky"] = "sim"
    host: str = "172.16.0.2"
    realtime: Literal["ignore", "enforce"] = "ignore"
    dynamics_factor: float = Field(0.15, gt=0, le=1)
    collision_torque: float = Field(20.0, gt=0, description="joint torque collision threshold, Nm")
    collision_force: float = Field(30.0, gt=0, description="Cartesian force collision threshold, N")
    # Franka's usual ready pose.
    home_joints: list[float] = Field(
        default_factory=lambda: [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], min_length=7, max_length=7
    )
    tracking: Literal["impedance", "cartesian"] = "impedance"
    impedance: ImpedanceConfig = Field(default_factory=ImpedanceConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    gripper_speed: float = Field(0.05, gt=0)
    gripper_force: float = Field(20.0, gt=0)
    gripper_timeout_s: float = Field(
        1.0, gt=0, le=60, description="a gripper that has not answered this long is a fault (counted; the arm goes on)"
    )
    gripper_help_s: float = Field(
        10.0, gt=0, le=3600, description="a gripper that has not answered this long: ask the operator for help"
    )


class WorkspaceConfig(Strict):
    """The safety box for the end-effector, in the robot base frame (metres)."""

    low: list[float] = Field(default_factory=lambda: [0.30, -0.25, 0.02], min_length=3, max_length=3)
    high: list[float] = Field(default_factory=lambda: [0.70, 0.25, 0.40], min_length=3, max_length=3)

    @model_validator(mode="after")
    def _ordered(self) -> WorkspaceConfig:
        for axis, lo, hi in zip("xyz", self.low, self.high, strict=True):
            if lo >= hi:
                raise ValueError(f"low[{axis}]={lo} must be below high[{axis}]={hi}")
        return self


class ActionConfig(Strict):
    yaw: bool = False
    max_translation_m: float = Field(0.02, gt=0, le=0.05, description="per step; 2 cm = 0.2 m/s at 10 Hz")
    max_yaw_rad: float = Field(0.2, gt=0, le=0.5)


class ControlConfig(Strict):
    rate_hz: float = Field(10.0, gt=0, le=100)
    max_frame_age_ticks: float = Field(2.0, gt=0)
    # 0 keeps normal scheduling. SCHED_FIFO is opt-in: a busy-waiting real-time thread can starve
    # everything else on a small machine.
    realtime_priority: int = Field(0, ge=0, le=99)
    status_line: bool = True
    tick_stats_s: float = Field(
        60.0, gt=0, le=3600, description="every this many seconds the daemon stores the loop's own tick health "
        "over the window (a tick_stats event: ticks, late, skipped, overruns, period-error and work percentiles)"
    )


class StoreConfig(Strict):
    path: Path | str = Field(
        Path("data/sim.zarr"),
        description="a directory, or s3://bucket/prefix on an S3-compatible object store (one prefix per robot); "
        "credentials from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws)",
    )
    chunk_steps: int = Field(16, ge=1, le=1000)
    # A full disk pauses practice instead of letting it run unrecorded (robot_server.store_space).
    min_free_mb: float = Field(
        256.0, ge=0, description="pause practice when the store's disk has less free space than this "
        "(checked every space_check_s off the tick; 0 = only a failed write pauses it)"
    )
    resume_free_mb: float = Field(
        512.0, gt=0, description="after a pause for space, resume once this much is free (at least min_free_mb)"
    )
    space_check_s: float = Field(5.0, gt=0, le=600, description="how often the writer thread checks free space")

    endpoint_url: str | None = Field(
        None, description="S3-compatible server for an s3:// path (MinIO, moto); default AWS or AWS_ENDPOINT_URL"
    )
    region: str | None = Field(None, description="S3 region for an s3:// path; default from the AWS settings")
    lock_lease_s: float = Field(
        30.0, ge=3, le=3600,
        description="s3:// stores: the writer renews its lock object every third of this; a lock not renewed "
        "this long may be taken over by a new writer (a dead writer on the same host is taken over at once)",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_or_url(cls, v: Any) -> Any:
        """An s3:// URL stays a string (a Path would fold its //); anything else is a directory path."""
        if isinstance(v, str) and "://" in v:
            if not v.startswith("s3://"):
                raise ValueError(f"store.path: only s3:// URLs are supported, got {v!r}")
            bucket, _, prefix = v[len("s3://"):].partition("/")
            if not bucket or not prefix.strip("/"):
                raise ValueError(f"store.path {v!r} needs a bucket and a prefix (s3://bucket/prefix)")
            return v
        return Path(v) if isinstance(v, str) else v

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"store.endpoint_url must be an http(s) URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _resume_above_floor(self) -> StoreConfig:
        if self.resume_free_mb < self.min_free_mb:
            raise ValueError(f"resume_free_mb={self.resume_free_mb} must be at least min_free_mb={self.min_free_mb}, "
                             "or practice would pause again as soon as it resumed")
        return self


class SessionConfig(Strict):
    phase_steps: int = Field(200, ge=1, description="steps per forward or backward phase")
    home_every: int = Field(1000, ge=0, description="arm-only return home every N steps (0 = never)")
    seed: int = 0
    help_after_steps: int = Field(
        3000,
        ge=0,
        description="ask the operator for help after this many practice steps in one direction without its "
        "success (sim: the task's success test; robot: a success the operator confirms) (0 = never)",
    )
    eval_episodes: int = Field(10, ge=1, le=1000, description="episodes of an eval session (default)")
    eval_horizon: int = Field(200, ge=1, le=100_000, description="steps per eval episode (default)")
    # A late frame only holds the arm for its tick; a camera stale this long is treated as stuck.
    stale_pause_s: float = Field(
        3.0,
        gt=0,
        le=600,
        description="frames stale this long without a fresh one: pause practice, close the segment and reset "
        "the stale cameras (practice resumes by itself once fresh frames are back)",
    )
    stale_help_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="no fresh frame this long after a camera reset: ask the operator for help",
    )


def is_loopback(host: str) -> bool:
    """True if `host` (an address or a name) is reachable from this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # any other name may resolve beyond this machine
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


ReadAccess = Literal["auto", "token", "open"]


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", min_length=1, description="the address the API binds to")
    port: int = Field(8000, ge=0, le=65535)
    token: str = Field("change-me", min_length=8)
    token_file: Path | None = Field(
        None,
        description="read the token from this file instead (a compose secret: /run/secrets/NAME); it wins over "
        "`token`, so an image or env file never has to carry the token itself",
    )
    read_access: ReadAccess = Field(
        "auto",
        description="who may read (status, episodes, cameras, telemetry, metrics): auto = anyone on a "
        "loopback host, only holders of the token on any other bind; token = always the token; "
        "open = anyone, also on a LAN bind (an explicit choice: the cameras show the lab)",
    )
    checkpoint_dir: Path = Path("data/policies")
    max_checkpoint_mb: float = Field(512.0, gt=0)
    body_timeout_s: float = Field(
        60.0, gt=0, description="a request body (a checkpoint upload) that stalls this long is answered 408"
    )
    reports_dir: Path = Field(
        Path("data/reports"),
        description="where `replay report STORE -o DIR` writes (DIR itself or one folder per report); "
        "GET /reports/latest serves the newest",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # protect_reads (a bool, reads open by default everywhere) became read_access.
        if isinstance(data, dict) and "protect_reads" in data:
            raise ValueError("protect_reads was replaced by read_access: auto (default), token or open")
        return data

    @model_validator(mode="after")
    def _token_from_file(self) -> ServerConfig:
        if self.token_file is None:
            return self
        try:
            # Secret files usually end in a newline (echo, an editor): it is not part of the token.
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"token_file {str(self.token_file)!r} cannot be read: {exc.strerror}") from None
        if len(token) < 8:
            raise ValueError(
                f"token_file {str(self.token_file)!r} holds a token of {len(token)} characters, at least 8 needed"
            )
        self.token = token
        return self

    @property
    def reads_need_token(self) -> bool:
        """Reads stay open on loopback only, unless the config says otherwise."""
        if self.read_access == "auto":
            return not is_loopback(self.host)
        return self.read_access == "token"


class SpaceMouseConfig(Strict):
    enabled: bool = False
    path: str | None = Field(None, description="hidraw device path; None = first 3Dconnexion device")
    rate_hz: float = Field(200.0, ge=100)
    deadzone: float = Field(0.08, ge=0, lt=1)
    full_scale: float = Field(350.0, gt=0, description="raw axis value that maps to 1.0")
    scale: list[float] = Field(default_factory=lambda: [1, 1, 1, 1, 1, 1], min_length=6, max_length=6)
    takeover_release_s: float = Field(1.0, ge=0, description="idle time before control returns to the policy")
    retry_s: float = Field(2.0, gt=0, description="seconds between attempts to find or reopen the device")
    gripper_button: int = Field(0, ge=0, le=63, description="button bit that toggles the gripper (0 = left)")
    demo_button: int = Field(1, ge=0, le=63, description="button bit that starts/stops a demo (1 = right)")

    @model_validator(mode="after")
    def _distinct_buttons(self) -> SpaceMouseConfig:
        if self.gripper_button == self.demo_button:
            raise ValueError(f"gripper_button and demo_button are both {self.demo_button}")
        return self


class TeleopConfig(Strict):
    spacemouse: SpaceMouseConfig = Field(default_factory=SpaceMouseConfig)


class SimConfig(Strict):
    task: Literal["push_cube"] = "push_cube"
    physics_hz: float = Field(500.0, ge=100)
    render_hz: float = Field(15.0, gt=0, le=60)
    realtime_factor: float = Field(1.0, gt=0, le=20)
    seed: int = 0
    # The start distribution of each direction (MEDALPP.md "Benchmark setting"): the daemon's narrow
    # default; the learning benchmark uses +-5 cm, +-45 deg, where BC from demos no longer saturates.
    # Capped at 8 cm: beyond that the expert's push stand-off behind the cube can lie outside the
    # workspace box and it fails (measured: 120/120 at 8 cm, 112/120 at 10 cm).
    start_jitter_m: float = Field(
        0.02, ge=0, le=0.08, description="cube start offset from its zone centre, uniform in +-this in x and y, m"
    )
    start_jitter_yaw_deg: float = Field(
        15.0, ge=0, le=45, description="cube start yaw, uniform in +-this, deg (45 covers every pose of a cube)"
    )


class NetworkConfig(Strict):
    """Sizes follow MEDALPP.md: `robot` (1024/256, N=5) and `sim` (256/50, N=10); `state` is the lean
    state-mode preset of `bench/learning.py` (N=2, 2x256 critic); `tiny` is for CI."""

    preset: Literal["robot", "sim", "state", "tiny"] = "robot"
    hidden_dim: int | None = Field(None, ge=1)
    feature_dim: int | None = Field(None, ge=1)
    num_critics: int | None = Field(None, ge=2)
    encoder_channels: int | None = Field(None, ge=1)


class RobotLinkConfig(Strict):
    """One robot of a fleet, as the learner sees it: its store to read and its daemon to push to."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="short unique name (logs, status)")
    store: StoreConfig = Field(description="that robot's store: its path (s3://bucket/prefix) and endpoint")
    server_url: str = Field(description="that robot's daemon, http(s)://host:port")
    token: str | None = Field(None, min_length=8, description="that daemon's API token")
    token_file: Path | None = Field(None, description="a file holding that daemon's API token (instead of token)")

    @field_validator("server_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"server_url must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_token(self) -> RobotLinkConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError(f"robot {self.name!r}: give exactly one of token and token_file")
        return self

    def resolved_token(self) -> str:
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"robot {self.name!r}: token_file {self.token_file}: {exc.strerror}") from None
        if len(token) < 8:
            raise ValueError(f"robot {self.name!r}: token_file {self.token_file} holds no token of 8+ characters")
        return token


class LearnerConfig(Strict):
    mode: Literal["pixels", "state"] = "pixels"
    setting: Literal["robot", "sim"] = Field("robot", description="which MEDALPP.md column of values")
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    batch_size: int = Field(256, ge=2)
    demo_rows: int | None = Field(None, ge=0, description="demo rows per batch; default 64 robot / 32 sim")
    seed_steps: int | None = Field(None, ge=0)
    utd: int | None = Field(None, ge=1)
    capacity: int = Field(200_000, ge=100)
    lr: float = Field(3e-4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    tau: float = Field(0.005, gt=0, le=1)
    push_every: int = Field(200, ge=1, description="push policies every N agent updates")
    push_classifier_every: int = Field(
        5, ge=1,
        description="push each classifier to the daemon (frame scores on the review page) every N of its "
        "training steps; robot C_f steps once per 1,000 env steps, so 5 is a push every ~8 min of practice",
    )
    save_every: int = Field(1000, ge=1, description="write the training checkpoint every N updates")
    poll_s: float = Field(1.0, gt=0)
    push_timeout_s: float = Field(
        30.0, gt=0, description="each network wait of a policy push (connect, send, answer); then it is retried"
    )
    push_retry_max_s: float = Field(30.0, gt=0, description="longest wait between push retries (backoff cap)")
    run_dir: Path = Path("runs/learner")
    max_updates_per_step: float = Field(
        4.0, gt=0, description="never train more than this many updates per collected step"
    )
    # Schedules (MEDALPP.md); None = the setting's default.
    bc_forward: tuple[float, float, int, int] | None = None
    bc_backward: tuple[float, float, int, int] | None = None
    clf_forward_every: int | None = Field(None, ge=1)
    clf_backward_every: int | None = Field(None, ge=1)
    clf_forward_cameras: list[str] | None = Field(
        None, description="views of the goal classifier; default: robot wrist only, sim all views"
    )
    bc_batch_size: int | None = Field(None, ge=1, description="rows of the separate BC demo batch; default demo_rows")
    clf_batch_size: int = Field(256, ge=2, description="negatives and positives per classifier step, each")
    classifier_augment: Literal["none", "shift", "v2"] = Field(
        "v2",
        description="augmentation of the classifiers' pixel training frames: none | shift (the agents' random "
        "shift) | v2 (torchvision.transforms.v2 crop + colour jitter, per sample); state mode is never augmented",
    )
    labelled_negative_share: float = Field(
        0.25, ge=0.0, le=1.0,
        description="share of the goal classifier's negative rows drawn from operator not-goal frames, when there are any",
    )
    tail_open: bool = Field(True, description="also learn from the committed prefix of the open practice segment")
    robots: list[RobotLinkConfig] = Field(
        default_factory=list,
        description="a fleet: every robot's store is tailed into the same buffers (batches sample steps uniformly, "
        "so each robot in proportion to its steps held) and every robot gets the policies; empty = the one robot "
        "of store.path and server",
    )

    @field_validator("robots")
    @classmethod
    def _unique_robots(cls, robots: list[RobotLinkConfig]) -> list[RobotLinkConfig]:
        for what in ("name", "server_url"):
            values = [str(getattr(r, what)) for r in robots]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"learner.robots: {what} must differ between robots, repeated: {dup}")
        stores = [str(r.store.path) for r in robots]
        dup = sorted({v for v in stores if stores.count(v) > 1})
        if dup:
            raise ValueError(f"learner.robots: each robot needs its own store, shared: {dup}")
        return robots


class Config(Strict):
    robot: str = "sim-panda"
    arm: ArmConfig = Field(default_factory=ArmConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    control: ControlConfig = Field(default_factory=ControlConfig)
    workspace: WorkspaceConfig = Field(default_factory=WorkspaceConfig)
    action: ActionConfig = Field(default_factory=ActionConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    teleop: TeleopConfig = Field(default_factory=TeleopConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cams: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cams]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {sorted(dup)}")
        return cams

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)


class ConfigError(ValueError):
    """A configuration problem, with one line per bad field."""


def _set_path(tree: dict[str, Any], keys: list[str], value: Any, env_name: str) -> None:
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, key, env_name)]
            continue
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict | list):
            raise ConfigError(f"{env_name}: {'.'.join(keys[: i + 1])} is not a section")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, env_name)] = value
    else:
        node[last] = value


def _list_index(items: list[Any], key: str, env_name: str) -> int:
    # Lists of named items (cameras) are addressed by name, e.g. ROBOT__CAMERAS__WRIST__SERIAL.
    for i, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("name", "")).lower() == key:
            return i
    if key.isdigit() and int(key) < len(items):
        return int(key)
    raise ConfigError(f"{env_name}: no list item named or numbered {key!r}")


def apply_env_overrides(tree: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``ROBOT__ARM__HOST=10.0.0.2`` sets ``arm.host``; values are parsed as YAML scalars."""
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not a valid YAML value: {exc}") from exc
        _set_path(tree, keys, value, name)
    return tree


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {where}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(tree: Mapping[str, Any], source: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    data = apply_env_overrides(copy.deepcopy(dict(tree)), os.environ if env is None else env)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


# The configs shipped inside the package (`sim`, `franka`): they work from any directory.
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML file path as given, or the name of a packaged config (`sim`, `franka`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{path.stem}.yaml"
    if path.parent == Path(".") and path.suffix in ("", ".yaml") and packaged.is_file():
        return packaged
    raise ConfigError(
        f"config file not found: {name_or_path} (give a YAML path or a packaged config: {', '.join(packaged_configs())})"
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a YAML config (a path, or a packaged config's name such as `sim`);
    relative store/run paths stay relative to the working dir."""
    path = resolve_config_path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_config(tree, str(path), env)
