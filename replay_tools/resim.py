"""Re-execute an episode's logged actions on the sim arm and measure how far the sim drifts from
the log, step by step (`replay sim`): a check of the sim against real logs, or of a sim log
against the sim that recorded it.

The sim starts where the episode's first step was logged: the arm at rest with the logged
end-effector position, yaw and gripper width (the joints are not logged: IK with the posture near
home supplies them), and the cube at its logged pose when the episode logged one (`obs/state`,
the sim's state vector). A real-robot log has no cube pose: the sim cube is then put out of reach
and object divergence is unavailable. Every logged executed action then goes through the
daemon's tick as `PushCubeEnv.step` does it (the same clip and target mapping, one control
period), and after k actions the sim is compared with the observation logged at step k (the
daemon logs a step's observation before its action, so the last action has no logged outcome
and is not replayed). Row 0 is the start placement itself.

The start is at rest: velocities and the controller's pending target are not logged. An episode
that starts while the arm moves (a practice segment cut mid-push) therefore diverges by about one
step's lag at once (~1 mm), and keeps that offset, as every target is relative to the measured
pose; a start from rest (demos, eval episodes) replays a sim log to float32 rounding.

The action mapping (step sizes, workspace box) and the control rate come from the store: they are
what the daemon used. The config supplies only the sim world (physics, arm home, gripper). Each
action gets exactly one nominal control period; logged tick jitter is not replayed, and the CSV's
`dt_ms` column shows it, so that a late tick can be told from a sim error.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from sim.gym_env import PushCubeEnv
from sim.model import TABLE_X, TABLE_Y
from sim.task import STATE_DIM, cube_pose_of_state
from spec.config import ActionConfig, Config, WorkspaceConfig
from spec.step import ActionSpace, yaw_of

# Where the cube waits when the log has no object pose: on the table, beyond the arm's reach, so a
# cube the real scene did not have in that place cannot deflect the replayed arm.
OUT_OF_REACH_XY = np.array([TABLE_X[1] - 0.05, TABLE_Y[1] - 0.05])
CUBE_SYMMETRY = math.pi / 2  # a cube looks the same every quarter turn


class ResimError(ValueError):
    """The episode cannot be replayed in the sim (says why)."""


@dataclass(frozen=True)
class Trajectory:
    """Poses per step, as logged or as simulated. Angles in rad, lengths in m."""

    ee: np.ndarray  # [T, 3] end-effector position
    yaw: np.ndarray | None  # [T] end-effector yaw; None: not logged (actions without yaw)
    gripper: np.ndarray  # [T] gripper width
    cube: np.ndarray | None  # [T, 3] cube centre; None: not logged
    cube_yaw: np.ndarray | None  # [T] modulo 90 deg


@dataclass(frozen=True)
class Divergence:
    """Sim vs log after each number of replayed actions (row k: after k actions)."""

    log: Trajectory
    sim: Trajectory
    dt_ms: np.ndarray  # [T] logged time since the previous step (NaN at step 0)
    object_note: str | None  # why object divergence is unavailable (None: it is available)

    @property
    def steps(self) -> int:
        return len(self.log.ee)

    def errors(self) -> dict[str, np.ndarray | None]:
        """Absolute errors per step: mm for positions and width, deg for yaw; None if not logged."""
        log, sim = self.log, self.sim
        yaw = None
        if log.yaw is not None and sim.yaw is not None:
            yaw = np.degrees(np.abs(_wrap(sim.yaw - log.yaw, 2 * math.pi)))
        obj = obj_yaw = None
        if log.cube is not None and sim.cube is not None:
            obj = np.linalg.norm(sim.cube - log.cube, axis=1) * 1e3
        if log.cube_yaw is not None and sim.cube_yaw is not None:
            obj_yaw = np.degrees(np.abs(_wrap(sim.cube_yaw - log.cube_yaw, CUBE_SYMMETRY)))
        return {
            "ee_err_mm": np.linalg.norm(sim.ee - log.ee, axis=1) * 1e3,
            "ee_yaw_err_deg": yaw,
            "gripper_err_mm": np.abs(sim.gripper - log.gripper) * 1e3,
            "obj_err_mm": obj,
            "obj_yaw_err_deg": obj_yaw,
        }


def _wrap(angle: np.ndarray, period: float) -> np.ndarray:
    return (angle + period / 2) % period - period / 2


def sim_config(cfg: Config, meta: dict[str, Any]) -> tuple[Config, list[str]]:
    """`cfg` with the store's action mapping, workspace and control rate (what the daemon used),
    and a line for each of those that `cfg` had different."""
    spec = meta["action_space"]
    try:
        action = ActionConfig(yaw=bool(spec["yaw"]), max_translation_m=spec["max_translation_m"],
                              max_yaw_rad=spec["max_yaw_rad"])
        workspace = WorkspaceConfig(low=spec["workspace"]["low"], high=spec["workspace"]["high"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ResimError(f"the store's action spec cannot be replayed: {exc}") from None
    control = cfg.control.model_copy(update={"rate_hz": float(meta["rate_hz"])})
    changed = [
        f"{name}: store {new}, config {old}"
        for name, new, old in (
            ("action", action.model_dump(), cfg.action.model_dump()),
            ("workspace", workspace.model_dump(), cfg.workspace.model_dump()),
            ("control.rate_hz", control.rate_hz, cfg.control.rate_hz),
        )
        if new != old
    ]
    return cfg.model_copy(update={"action": action, "workspace": workspace, "control": control}), changed


def logged_trajectory(cfg: Config, meta: dict[str, Any], data: dict[str, np.ndarray]) -> tuple[Trajectory, str | None]:
    """The logged poses (proprio, and the cube from the sim's state vector when there is one), and
    why the cube is unavailable if it is. `cfg` must carry the store's action space (sim_config)."""
    space = ActionSpace(cfg.action, cfg.workspace)
    if int(meta["proprio_dim"]) != space.proprio_dim or int(meta["action_space"]["dim"]) != space.dim:
        raise ResimError(f"the store's proprio ({meta['proprio_dim']} values) and action ({meta['action_space']['dim']}) "
                         f"do not fit its action spec (expects {space.proprio_dim} and {space.dim})")
    ee, yaw, gripper = space.pose_of_proprio(data["obs/proprio"])
    cube = cube_yaw = None
    note = None
    state_dim = meta.get("state_dim")
    if not state_dim or "obs/state" not in data:
        note = "the episode logged no object pose (no obs/state: only the sim records one)"
    elif int(state_dim) != STATE_DIM:
        note = f"the logged state vector has {state_dim} values, not the push task's {STATE_DIM}"
    else:
        cube, cube_yaw = cube_pose_of_state(data["obs/state"], cfg.workspace)
    return Trajectory(ee=ee, yaw=yaw, gripper=gripper, cube=cube, cube_yaw=cube_yaw), note


def resimulate(cfg: Config, meta: dict[str, Any], data: dict[str, np.ndarray]) -> tuple[Divergence, list[str]]:
    """Replay an episode's arrays (`ReplayReader.read`) in a sim built from `cfg`; also returns the
    settings the store overrode in `cfg` (sim_config)."""
    if len(data["action"]) == 0:
        raise ResimError("the episode has no steps")
    cfg, changed = sim_config(cfg, meta)
    log, note = logged_trajectory(cfg, meta, data)
    env = PushCubeEnv(cfg, obs_mode="state", max_episode_steps=None)
    try:
        _place(env, log)
        rows = [_read(env)]
        for action in data["action"][:-1]:
            env.step(action)
            rows.append(_read(env))
    finally:
        env.close()
    sim = Trajectory(
        ee=np.array([r[0] for r in rows]),
        yaw=np.array([r[1] for r in rows]),
        gripper=np.array([r[2] for r in rows]),
        cube=np.array([r[3] for r in rows]) if note is None else None,
        cube_yaw=np.array([r[4] for r in rows]) if note is None else None,
    )
    ts = np.asarray(data["timestamp"], dtype=np.float64)
    dt_ms = np.concatenate([[np.nan], np.diff(ts) * 1e3])
    return Divergence(log=log, sim=sim, dt_ms=dt_ms, object_note=note), changed


def _place(env: PushCubeEnv, log: Trajectory) -> None:
    world = env.world
    # Without a logged yaw the daemon held the arm's yaw: start at the sim home's.
    yaw0 = float(log.yaw[0]) if log.yaw is not None else yaw_of(world.controller.fk(world.home_joints)[1])
    try:
        world.place_arm_at(log.ee[0], yaw0, float(log.gripper[0]))
    except ValueError as exc:
        raise ResimError(f"cannot place the sim arm at the logged start: {exc}") from None
    if log.cube is not None and log.cube_yaw is not None:
        env.task.place_cube(log.cube[0][:2], float(log.cube_yaw[0]), arm_home=False, z=float(log.cube[0][2]))
    else:
        env.task.place_cube(OUT_OF_REACH_XY, arm_home=False)


def _read(env: PushCubeEnv) -> tuple[np.ndarray, float, float, np.ndarray, float]:
    state = env.arm.read()
    cube, cube_yaw = env.task.cube_pose()
    return state.position, state.yaw, state.gripper_width, np.array(cube), cube_yaw


COLUMNS = {  # errors() key: table heading
    "ee_err_mm": "ee mm",
    "ee_yaw_err_deg": "ee yaw deg",
    "gripper_err_mm": "gripper mm",
    "obj_err_mm": "object mm",
    "obj_yaw_err_deg": "object yaw deg",
}


def divergence_table(div: Divergence, every: int = 0) -> Table:
    """The available errors every `every` steps (0: about 15 rows) and at the last, then max, mean
    and final."""
    errs = {k: e for k, e in div.errors().items() if e is not None}
    t = Table("step", *(COLUMNS[k] for k in errs), title="sim - log after each replayed action")
    stride = every or max(1, -(-div.steps // 15))
    for step in sorted(set(range(0, div.steps, stride)) | {div.steps - 1}):
        t.add_row(str(step), *(f"{e[step]:.2f}" for e in errs.values()))
    t.add_section()
    t.add_row("max", *(f"{e.max():.2f}" for e in errs.values()), style="bold")
    t.add_row("mean", *(f"{e.mean():.2f}" for e in errs.values()), style="bold")
    t.add_row("final", *(f"{e[-1]:.2f}" for e in errs.values()), style="bold")
    return t


def write_csv(div: Divergence, path: Path) -> None:
    """One row per step: dt, the errors (empty where unavailable), then the logged and the sim
    poses (m, deg)."""
    errs = div.errors()
    cols: list[tuple[str, np.ndarray | None]] = [("dt_ms", div.dt_ms), *errs.items()]
    for who, traj in (("log", div.log), ("sim", div.sim)):
        cols += [(f"{who}_ee_{a}", traj.ee[:, i]) for i, a in enumerate("xyz")]
        cols.append((f"{who}_ee_yaw_deg", None if traj.yaw is None else np.degrees(traj.yaw)))
        cols.append((f"{who}_gripper", traj.gripper))
        cols += [(f"{who}_obj_{a}", None if traj.cube is None else traj.cube[:, i]) for i, a in enumerate("xyz")]
        cols.append((f"{who}_obj_yaw_deg", None if traj.cube_yaw is None else np.degrees(traj.cube_yaw)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *(name for name, _ in cols)])
        for k in range(div.steps):
            w.writerow([k, *("" if v is None or np.isnan(v[k]) else f"{v[k]:.6g}" for _, v in cols)])
