"""The offline replay tools a developer uses to debug a session: list, video, scores, rerun."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from learner.trainer import Trainer
from policies.checkpoint import PolicyCheckpoint
from policies.networks import NetworkSizes, Policy
from replay_tools.cli import app
from spec.step import ActionSpace, ObsSpec
from tests.learner_fakes import STATE_DIM, FakeStore, tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay-tools")
    cfg = tiny_config(tmp, seed_steps=10, clf_forward_every=10, clf_backward_every=10)
    st = FakeStore(cfg)
    for _ in range(2):
        st.episode("demo", "forward", 20, success=True)
        st.episode("demo", "backward", 20, success=True)
    st.episode("practice", "forward", 30, versions=[-1] * 15 + [7] * 15, interventions=[False] * 25 + [True] * 5)
    st.episode("practice", "backward", 30)
    st.close()
    config = tmp / "cfg.json"  # YAML is a superset of JSON
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    tr = Trainer(cfg, tensorboard=False)
    try:
        tr.poll(force=True)
        while tr.train_once() is not None:
            pass
        assert tr.save() is not None
    finally:
        tr.close()
    return tmp, cfg, config


def test_list_shows_every_episode_and_filters(setup):
    _tmp, _cfg, config = setup
    r = runner.invoke(app, ["list", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "6 episodes" in r.output and "000004" in r.output
    r = runner.invoke(app, ["list", "--config", str(config), "--kind", "demo", "--direction", "forward"])
    assert "2 episodes" in r.output


def test_video_has_one_frame_per_step_with_scores(setup):
    tmp, _cfg, config = setup
    out = tmp / "ep.avi"
    r = runner.invoke(app, ["video", "000004", "--config", str(config), "--out", str(out), "--scale", "2",
                            "--learner-run", str(tmp / "run")])
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 30


def test_scores_csv_has_probabilities_and_rewards_per_step(setup):
    tmp, _cfg, config = setup
    out = tmp / "scores.csv"
    r = runner.invoke(app, ["scores", "000004", "--config", str(config), "--learner-run", str(tmp / "run"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30
    for row in rows:
        assert 0.0 <= float(row["forward_prob"]) <= 1.0
        assert float(row["forward_reward"]) <= 0.0  # log sigma: never positive
        assert float(row["backward_reward"]) >= 0.0  # sim: -log(1 - sigma)
    assert [int(r["intervention"]) for r in rows][-5:] == [1] * 5


def test_rerun_a_checkpoint_on_logged_observations(setup):
    tmp, cfg, config = setup
    space = ActionSpace(cfg.action, cfg.workspace)
    spec = ObsSpec.from_config(cfg, "pixels", state_dim=STATE_DIM)
    sizes = NetworkSizes.from_config(cfg.learner.network)
    ckpt = PolicyCheckpoint.from_policy(Policy(spec, space.dim, sizes), "forward", 7, spec, space.spec(), sizes)
    path = tmp / "forward.safetensors"
    path.write_bytes(ckpt.to_bytes())
    out = tmp / "rerun.csv"
    r = runner.invoke(app, ["rerun", "000004", "--config", str(config), "--checkpoint", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "15 steps were logged with this version" in r.output
    rows = list(csv.reader(out.open()))
    assert len(rows) == 31
    rerun = np.array([[float(x) for x in row[2 + space.dim:]] for row in rows[1:]])
    assert np.all(np.abs(rerun) <= 1.0)


def test_bad_inputs_name_the_problem(setup):
    tmp, _cfg, config = setup
    r = runner.invoke(app, ["show", "999999", "--config", str(config)])
    assert r.exit_code != 0 and "no episode '999999'" in r.output
    r = runner.invoke(app, ["rerun", "000004", "--config", str(config), "--checkpoint", str(config)])
    assert r.exit_code != 0 and "--checkpoint" in r.output
    r = runner.invoke(app, ["list", "--store", str(tmp / "nothing.zarr")])
    assert r.exit_code != 0 and "no replay store" in r.output
