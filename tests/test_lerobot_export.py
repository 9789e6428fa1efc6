"""`replay export --format lerobot`: the layout we write, its errors, and a round trip through
lerobot's own LeRobotDataset (in .venv-lerobot, made by scripts/setup_lerobot_venv.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from replay.labels import Label
from replay.store import ReplayReader, ReplayWriter
from replay_tools.cli import app
from replay_tools.lerobot_export import export_lerobot
from sim.task import STATE_DIM
from tests.store_patterns import pattern_meta, pattern_step

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
LEROBOT_VENV = ROOT / ".venv-lerobot"
CAMERAS = (("front", 48, 64), ("wrist", 32, 32))  # two views of different sizes

# (kind, direction, steps, recorded success): the store's closed episodes, in id order.
EPISODES = [
    ("demo", "forward", 23, True),
    ("practice", "backward", 40, False),
    ("eval", "forward", 6, True),  # not exported by default
    ("practice", "forward", 17, None),  # the operator labels it a success
]
EXPORTED = ["000000", "000001", "000003"]


def _step(attrs: dict, seed: int, t: int, kind: str) -> dict:
    step = pattern_step(attrs, seed, t)
    if kind == "demo":  # a person drives a demo and no learned policy acts
        step["policy_version"], step["intervention"] = -1, True
    return step


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lerobot") / "store.zarr"
    meta = pattern_meta(cameras=CAMERAS, state_dim=STATE_DIM)
    attrs = meta.to_attrs()
    with ReplayWriter.open(path, meta, chunk_steps=8) as w:
        for seed, (kind, direction, steps, success) in enumerate(EPISODES):
            ep = w.begin_episode(kind, direction, {"session": "s1"})
            for t in range(steps):
                ep.append(_step(attrs, seed, t, kind))
            ep.close(success=success)
        w.append_event(Label("000003", "success").event())
    return path


def _expected(store: Path, ep: str) -> dict[str, np.ndarray]:
    return ReplayReader(store).read(ep)


def _export(store: Path, out: Path, *args: str):
    return runner.invoke(app, ["export", str(store), "--format", "lerobot", "-o", str(out), *args])


def _said(r) -> str:
    """The command's output as one line (rich wraps messages inside its error box)."""
    return " ".join(r.output.replace("│", " ").split())


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot-out") / "dataset"
    r = _export(store, out)
    assert r.exit_code == 0, r.output
    assert "3 episodes (1 demo, 2 practice), 80 frames, views front, wrist" in _said(r)
    return out


def _frames(out: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    return {k: np.array(v) if not k.startswith("observation.images.") else v for k, v in table.items()}


def test_layout_is_lerobot_v3_with_our_features(exported):
    info = json.loads((exported / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["video_path"] is None
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 80, 2)
    feats = info["features"]
    assert feats["observation.images.front"] == {"dtype": "image", "shape": [48, 64, 3],
                                                 "names": ["height", "width", "channels"]}
    assert feats["observation.state"]["shape"] == [4] and feats["action"]["shape"] == [4]
    assert feats["observation.environment_state"]["names"][:4] == ["ee_x", "ee_y", "ee_z", "gripper"]
    for key, dtype in (("next.reward", "float32"), ("next.success", "bool"), ("next.done", "bool"),
                       ("intervention", "bool"), ("policy_version", "int64")):
        assert feats[key] == {"dtype": dtype, "shape": [1], "names": None}
    stats = json.loads((exported / "meta" / "stats.json").read_text())
    assert np.array(stats["observation.images.wrist"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [80]
    tasks = pq.read_table(exported / "meta" / "tasks.parquet").to_pandas()
    assert tasks["task_index"].to_dict() == {"push the cube forward": 0, "push the cube backward": 1}


def test_frames_are_the_stores_steps(store, exported):
    got = _frames(exported)
    episodes = pq.read_table(exported / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["store_episode"] == EXPORTED
    assert episodes["kind"] == ["demo", "practice", "practice"]
    assert episodes["success"] == [True, False, True]
    assert episodes["success_source"] == ["recorded", "recorded", "operator"]
    for i, ep in enumerate(EXPORTED):
        lo, hi = episodes["dataset_from_index"][i], episodes["dataset_to_index"][i]
        want = _expected(store, ep)
        np.testing.assert_array_equal(got["action"][lo:hi], want["action"])
        np.testing.assert_array_equal(got["observation.state"][lo:hi], want["obs/proprio"])
        np.testing.assert_array_equal(got["observation.environment_state"][lo:hi], want["obs/state"])
        np.testing.assert_array_equal(got["intervention"][lo:hi], want["intervention"])
        np.testing.assert_array_equal(got["policy_version"][lo:hi], want["policy_version"])
        for cam, _, _ in CAMERAS:
            for j, cell in enumerate(got[f"observation.images.{cam}"][lo:hi]):
                img = cv2.imdecode(np.frombuffer(cell["bytes"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                np.testing.assert_array_equal(img, want[f"obs/{cam}"][j])
        done = np.zeros(hi - lo, bool)
        done[-1] = True
        np.testing.assert_array_equal(got["next.done"][lo:hi], done)
        np.testing.assert_array_equal(got["next.success"][lo:hi], done & episodes["success"][i])
        np.testing.assert_array_equal(got["next.reward"][lo:hi], (done & episodes["success"][i]).astype(float))
        np.testing.assert_array_equal(got["frame_index"][lo:hi], np.arange(hi - lo))
        np.testing.assert_allclose(got["timestamp"][lo:hi], np.arange(hi - lo) / 10, atol=1e-6)
    np.testing.assert_array_equal(got["index"], np.arange(80))


@pytest.fixture(scope="module")
def split(store, tmp_path_factory) -> Path:
    """The same export with a new data file for every episode, as a long session would roll over."""
    out = tmp_path_factory.mktemp("lerobot-split") / "dataset"
    export_lerobot(store, out, data_file_mb=1e-6)
    return out


def test_a_new_data_file_starts_between_episodes(exported, split):
    files = sorted(p.relative_to(split).as_posix() for p in (split / "data").rglob("*.parquet"))
    assert files == [f"data/chunk-000/file-{i:03d}.parquet" for i in range(3)]
    episodes = pq.read_table(split / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["data/file_index"] == [0, 1, 2] and episodes["data/chunk_index"] == [0, 0, 0]
    whole = pq.read_table(exported / "data" / "chunk-000" / "file-000.parquet")
    parts = [pq.read_table(split / f) for f in files]
    assert [len(p) for p in parts] == [23, 40, 17]
    assert pa.concat_tables(parts).equals(whole)


def test_kinds_and_episodes_select(store, tmp_path):
    r = _export(store, tmp_path / "a", "--kinds", "eval")
    assert r.exit_code == 0 and "1 episodes (1 eval), 6 frames" in _said(r), r.output
    r = _export(store, tmp_path / "b", "--episodes", "3,1")
    assert r.exit_code == 0 and "2 episodes (2 practice), 57 frames" in _said(r), r.output


def test_bad_inputs_name_the_problem(store, exported, tmp_path):
    r = _export(tmp_path / "nothing.zarr", tmp_path / "x")
    assert r.exit_code != 0 and "no replay store at" in _said(r)
    r = _export(store, tmp_path / "x", "--episodes", "42")
    assert r.exit_code != 0 and "no episode 000042" in _said(r) and "(episodes 000000..000003)" in _said(r)
    r = _export(store, tmp_path / "x", "--episodes", "2")
    assert r.exit_code != 0 and "episode 000002 is an eval episode: add eval to --kinds" in _said(r)
    r = _export(store, tmp_path / "x", "--episodes", "4x")
    assert r.exit_code != 0 and "'4x' is not an episode id" in _said(r)
    r = _export(store, tmp_path / "x", "--kinds", "demo,dream")
    assert r.exit_code != 0 and "kinds must be some of demo, practice, eval" in _said(r)
    r = _export(store, tmp_path / "x", "--format", "rlds")
    assert r.exit_code != 0 and "unknown format 'rlds'" in _said(r)
    r = _export(store, store / "inside")
    assert r.exit_code != 0 and "overlaps the store" in _said(r)
    assert not (tmp_path / "x").exists()  # nothing half-written

    empty = tmp_path / "empty.zarr"
    with ReplayWriter.open(empty, pattern_meta(cameras=CAMERAS), chunk_steps=8):
        pass
    r = _export(empty, tmp_path / "x")
    assert r.exit_code != 0 and "nothing to export: no closed demo/practice episodes in" in _said(r)

    r = _export(store, exported)  # the export of the fixture: not empty
    assert r.exit_code != 0 and "is not empty" in _said(r) and "--force" in _said(r)
    copy = tmp_path / "again"
    shutil.copytree(exported, copy)
    (copy / "stray.txt").write_text("replaced")
    r = _export(store, copy, "--episodes", "0", "--force")
    assert r.exit_code == 0, r.output
    assert not (copy / "stray.txt").exists()
    assert json.loads((copy / "meta" / "info.json").read_text())["total_episodes"] == 1


def test_a_corrupt_chunk_names_the_episode(store, tmp_path):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    (broken / "episodes" / "000001" / "action" / "c" / "0" / "0").write_bytes(b"not a chunk" * 8)
    r = _export(broken, tmp_path / "x")
    assert r.exit_code != 0 and "episode 000001: cannot read steps 0..40 (corrupt chunk?)" in _said(r)
    assert isinstance(r.exception, SystemExit)  # a usage error, not a traceback
    assert not (tmp_path / "x").exists()


def test_a_store_being_written_exports_its_closed_episodes(tmp_path):
    meta = pattern_meta(cameras=CAMERAS)
    attrs = meta.to_attrs()
    path = tmp_path / "live.zarr"
    with ReplayWriter.open(path, meta, chunk_steps=4) as w:
        ep = w.begin_episode("demo", "forward", {})
        for t in range(9):
            ep.append(_step(attrs, 0, t, "demo"))
        ep.close(success=True)
        ep = w.begin_episode("practice", "backward", {})
        for t in range(10):  # 8 committed, 2 buffered
            ep.append(_step(attrs, 1, t, "practice"))
        r = _export(path, tmp_path / "out")
        assert r.exit_code == 0, r.output
        assert "1 episodes (1 demo), 9 frames" in _said(r) and "skipped 000001: still being written" in _said(r)
        r = _export(path, tmp_path / "out2", "--episodes", "1")
        assert r.exit_code != 0 and "episode 000001 is still being written" in _said(r)


def _lerobot_missing() -> str | None:
    if not (LEROBOT_VENV / "bin" / "python").exists():
        return f"{LEROBOT_VENV.name} is missing: run `make lerobot` (6.8 GB; not part of make test)"
    return None


def test_lerobot_loads_the_export_as_the_store_recorded_it(store, exported, split, tmp_path):
    reason = _lerobot_missing()
    if reason:
        pytest.skip(reason)
    home = tmp_path / "hf"  # lerobot's and datasets' caches; never the network
    env = {**os.environ, "HF_HOME": str(home), "HF_LEROBOT_HOME": str(home / "lerobot"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    dumps = {"one file": tmp_path / "whole.npz", "a file per episode": tmp_path / "split.npz"}
    args = [str(exported), str(dumps["one file"]), str(split), str(dumps["a file per episode"])]
    proc = subprocess.run([str(LEROBOT_VENV / "bin" / "python"), str(ROOT / "tests" / "lerobot_dump.py"), *args],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    wants = [_expected(store, ep) for ep in EXPORTED]
    want = {k: np.concatenate([w[k] for w in wants]) for k in wants[0]}
    lengths = [len(w["action"]) for w in wants]
    last = np.zeros(80, bool)
    last[np.cumsum(lengths) - 1] = True
    for layout, dump in dumps.items():
        got = dict(np.load(dump))
        meta = json.loads(dump.with_suffix(".json").read_text())
        assert meta["fps"] == 10 and meta["num_frames"] == 80 and meta["num_episodes"] == 3, layout
        assert meta["camera_keys"] == ["observation.images.front", "observation.images.wrist"]
        assert meta["video_keys"] == []  # images, lossless: compared exactly below
        eps = meta["episodes"]
        assert eps["store_episode"] == EXPORTED and eps["kind"] == ["demo", "practice", "practice"]
        assert eps["success"] == [True, False, True]

        np.testing.assert_array_equal(got["action"], want["action"], err_msg=layout)
        np.testing.assert_array_equal(got["observation.state"], want["obs/proprio"], err_msg=layout)
        np.testing.assert_array_equal(got["observation.environment_state"], want["obs/state"], err_msg=layout)
        for cam, _, _ in CAMERAS:
            np.testing.assert_array_equal(got[f"observation.images.{cam}"], want[f"obs/{cam}"], err_msg=layout)
        np.testing.assert_array_equal(got["intervention"], want["intervention"], err_msg=layout)
        np.testing.assert_array_equal(got["policy_version"], want["policy_version"], err_msg=layout)
        success = last & np.repeat(eps["success"], lengths)
        np.testing.assert_array_equal(got["next.done"], last, err_msg=layout)
        np.testing.assert_array_equal(got["next.success"], success, err_msg=layout)
        np.testing.assert_array_equal(got["next.reward"], success.astype(np.float32), err_msg=layout)
        directions = np.repeat(["forward", "backward", "forward"], lengths)
        assert got["task"].tolist() == [f"push the cube {d}" for d in directions], layout
        np.testing.assert_allclose(meta["action_stats"]["mean"], want["action"].mean(0), rtol=1e-6)
