"""`replay sim`: the logged actions re-executed on the sim arm, and the divergence it reports."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from replay.store import ReplayReader, ReplayWriter, StoreMeta
from replay_tools.cli import app
from robot_server.daemon import store_meta
from sim.gym_env import PushCubeEnv
from sim.task import STATE_DIM
from spec.config import Config, load_config
from spec.step import ActionSpace, ObsSpec

runner = CliRunner()
STEPS = 30


def _rollout(steps: int, cfg: Config | None = None, turn: float = 0.0) -> list[dict[str, np.ndarray]]:
    """The scripted expert pushing forward, logged as the daemon logs a step: the observation
    before the tick's action, and the executed (clipped) action. `turn`: a yaw action added to
    every step (actions with yaw)."""
    env = PushCubeEnv(cfg or load_config("sim", env={}), obs_mode="state", max_episode_steps=None)
    try:
        obs = env.reset_to_start("forward", np.random.default_rng(3))
        out = []
        for k in range(steps):
            action = env.expert_action()
            if turn:
                action[3] = turn
            next_obs, *_, info = env.step(action)
            out.append({**obs, "action": info["executed_action"], "timestamp": 0.1 * k})
            obs = next_obs
        return out
    finally:
        env.close()


def _write(path: Path, meta: StoreMeta, episodes: list[list[dict]]) -> None:
    blank = {f"obs/{c['name']}": np.zeros((c["height"], c["width"], 3), np.uint8) for c in meta.cameras}
    with ReplayWriter.open(path, meta, chunk_steps=16) as w:
        for steps in episodes:
            ep = w.begin_episode("demo", "forward", {})
            for s in steps:
                row = {**blank, **s, "policy_version": -1, "intervention": False}
                if not meta.state_dim:
                    row.pop("obs/state")
                ep.append(row)
            ep.close(success=None)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay-sim")
    cfg = load_config("sim", env={})
    space = ActionSpace(cfg.action, cfg.workspace)
    meta = store_meta(cfg, space, ObsSpec.from_config(cfg, "pixels", STATE_DIM))  # what the sim daemon writes
    steps = _rollout(2 * STEPS)
    rng = np.random.default_rng(0)
    tampered = []
    for s in steps[:STEPS]:
        a = s["action"].copy()
        a[:3] = np.clip(a[:3] + rng.normal(0.0, 0.5, 3), -1.0, 1.0)
        tampered.append({**s, "action": a.astype(np.float32)})
    sim_store = tmp / "sim.zarr"
    # 000000 from the reset; 000001 goes on mid-push (arm moving, cube displaced); 000002 is
    # 000000 with perturbed actions.
    _write(sim_store, meta, [steps[:STEPS], steps[STEPS:], tampered])
    # As the real robot logs it: no state vector, so no object pose.
    real_meta = StoreMeta(**{**meta.to_attrs(), "state_dim": None})
    real_store = tmp / "real.zarr"
    _write(real_store, real_meta, [steps[:STEPS]])
    return tmp, sim_store, real_store


def _said(result) -> str:
    """The command's output as one line (rich wraps messages inside its error box)."""
    return " ".join(result.output.replace("│", " ").split())


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_replaying_a_sim_log_reproduces_it(stores):
    tmp, sim_store, _ = stores
    out, plot = tmp / "div.csv", tmp / "div.png"
    r = runner.invoke(app, ["sim", str(sim_store), "000000", "--out", str(out), "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert "29 actions" in _said(r) and "max" in r.output and "final" in r.output
    rows = _csv(out)
    assert [int(row["step"]) for row in rows] == list(range(STEPS))
    ee = np.array([float(row["ee_err_mm"]) for row in rows])
    obj = np.array([float(row["obj_err_mm"]) for row in rows])
    obj_yaw = np.array([float(row["obj_yaw_err_deg"]) for row in rows])
    grip = np.array([float(row["gripper_err_mm"]) for row in rows])
    assert ee.max() < 0.01 and grip.max() < 0.01  # deterministic sim: float32 rounding of the log
    assert obj.max() < 0.1 and obj_yaw.max() < 0.01
    logged = np.array([[float(row[f"log_ee_{a}"]) for a in "xyz"] for row in rows])
    assert np.linalg.norm(logged[-1] - logged[0]) > 0.05  # the arm did travel
    assert rows[0]["ee_yaw_err_deg"] == ""  # the sim config's actions have no yaw: not logged
    assert plot.stat().st_size > 10_000


def test_actions_with_yaw_replay_the_end_effector_yaw(tmp_path):
    base = load_config("sim", env={})
    cfg = base.model_copy(update={"action": base.action.model_copy(update={"yaw": True})})
    space = ActionSpace(cfg.action, cfg.workspace)
    steps = _rollout(40, cfg, turn=0.5)
    path = tmp_path / "yaw.zarr"
    _write(path, store_meta(cfg, space, ObsSpec.from_config(cfg, "pixels", STATE_DIM)), [steps[:20], steps[20:]])
    rows = {}
    for episode in ("000000", "000001"):  # from home, then from a turning arm (yaw about 1 rad)
        out = tmp_path / f"{episode}.csv"
        # The packaged config has no yaw: the store's action spec is what the replay uses.
        r = runner.invoke(app, ["sim", str(path), episode, "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "from the store, as the daemon used it: action" in _said(r)
        rows[episode] = _csv(out)
    assert max(float(row["ee_yaw_err_deg"]) for row in rows["000000"]) < 0.01
    assert max(float(row["ee_err_mm"]) for row in rows["000000"]) < 0.01
    start = rows["000001"][0]  # placed at the logged, turned pose
    assert float(start["ee_yaw_err_deg"]) < 0.01 and float(start["ee_err_mm"]) < 0.01
    assert abs(float(start["log_ee_yaw_deg"]) - float(rows["000000"][0]["log_ee_yaw_deg"])) > 30.0


def test_a_log_starting_mid_motion_is_placed_and_followed(stores):
    tmp, sim_store, _ = stores
    out = tmp / "mid.csv"
    r = runner.invoke(app, ["sim", str(sim_store), "000001", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = _csv(out)
    assert float(rows[0]["ee_err_mm"]) < 0.01 and float(rows[0]["obj_err_mm"]) < 0.01  # placed where logged
    # The replay starts at rest while the logged arm was moving (velocities are not logged): the
    # first step lags by ~1 mm and the cube is pushed a little differently, then both hold.
    assert max(float(row["ee_err_mm"]) for row in rows) < 3.0
    assert max(float(row["obj_err_mm"]) for row in rows) < 5.0


def test_tampered_actions_diverge_clearly(stores):
    tmp, sim_store, _ = stores
    out = tmp / "tampered.csv"
    r = runner.invoke(app, ["sim", str(sim_store), "000002", "--out", str(out), "--every", "5"])
    assert r.exit_code == 0, r.output
    ee = [float(row["ee_err_mm"]) for row in _csv(out)]
    assert ee[0] < 0.01  # same start
    assert max(ee) > 20.0


def test_a_log_without_object_pose_says_so(stores):
    tmp, _, real_store = stores
    out = tmp / "real.csv"
    r = runner.invoke(app, ["sim", str(real_store), "000000", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "object divergence unavailable: the episode logged no object pose" in _said(r)
    rows = _csv(out)
    assert all(row["obj_err_mm"] == "" and row["log_obj_x"] == "" for row in rows)
    # Without a logged cube the sim cube is out of reach: the arm follows the log as it would in air.
    assert float(rows[0]["ee_err_mm"]) < 0.01
    assert max(float(row["ee_err_mm"]) for row in rows) < 2.0


def test_missing_store_unknown_episode_and_corrupt_chunk_name_the_problem(stores):
    tmp, sim_store, _ = stores
    r = runner.invoke(app, ["sim", str(tmp / "nothing.zarr"), "000000"])
    assert r.exit_code != 0 and "no replay store at" in _said(r) and "nothing.zarr" in _said(r)
    r = runner.invoke(app, ["sim", str(sim_store), "000042"])
    assert r.exit_code != 0 and "no episode '000042' (episodes 000000..000002)" in _said(r)
    broken = tmp / "broken.zarr"
    shutil.copytree(sim_store, broken)
    (broken / "episodes" / "000000" / "action" / "c" / "0" / "0").write_bytes(b"not a chunk" * 8)
    r = runner.invoke(app, ["sim", str(broken), "000000"])
    assert r.exit_code != 0 and "episode 000000: cannot read 'action' (corrupt chunk?)" in _said(r)
    assert isinstance(r.exception, SystemExit)  # a usage error, not a traceback


def test_an_episode_being_written_is_replayed_up_to_its_committed_steps(tmp_path, stores):
    _, sim_store, _ = stores
    meta = StoreMeta.from_attrs(ReplayReader(sim_store).meta)
    steps = _rollout(10)
    blank = {f"obs/{c['name']}": np.zeros((c["height"], c["width"], 3), np.uint8) for c in meta.cameras}
    path = tmp_path / "live.zarr"
    with ReplayWriter.open(path, meta, chunk_steps=4) as w:
        ep = w.begin_episode("practice", "forward", {})
        r = runner.invoke(app, ["sim", str(path), "000000"])
        assert r.exit_code != 0 and "episode 000000 has no steps" in _said(r)
        for s in steps:
            ep.append({**blank, **s, "policy_version": -1, "intervention": False})
        # 10 appended with chunks of 4: 8 committed, the last 2 still buffered by the writer.
        out = tmp_path / "live.csv"
        r = runner.invoke(app, ["sim", str(path), "000000", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "8 steps, logged on the sim arm, still being written" in _said(r)
        assert len(_csv(out)) == 8
        ep.close(success=None)


def test_the_plot_without_matplotlib_is_a_clear_error(stores, monkeypatch):
    tmp, sim_store, _ = stores
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp / "noplot.csv"
    r = runner.invoke(app, ["sim", str(sim_store), "000000", "--out", str(out), "--plot", str(tmp / "x.png")])
    assert r.exit_code != 0 and "the plot needs matplotlib, which is not installed" in _said(r)
    assert "--plot" in _said(r)
    assert out.is_file()  # the CSV is written before the plot is tried
