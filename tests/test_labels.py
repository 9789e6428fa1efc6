"""Operator labels: stored as events through the API (never rewriting data), read back by the
learner as goal-classifier data, and lowering the classifier's false positives."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from learner.core import LearningCore
from learner.labelled import LabelledFrames
from learner.settings import Settings
from policies.networks import PRESETS
from replay.labels import Label, LabelSet
from replay.store import ReplayReader, StoreMeta
from robot_server.api.app import create_app
from spec.step import ObsSpec
from tests.inproc_daemon import sim_daemon, wait_until
from tests.learner_fakes import tiny_config

torch.set_num_threads(1)


# ------------------------------------------------------------------ the label set
def test_a_later_label_overrides_an_earlier_one_for_the_same_frames():
    events = [
        Label("e1", "goal", 0, 10).event() | {"seq": 0},
        Label("e1", "not_goal", 5, 7).event() | {"seq": 1},
        Label("e2", "success").event() | {"seq": 2},
        Label("e2", "failure").event() | {"seq": 3},
        {"type": "intervention", "seq": 4},
        {"type": "label", "episode": "e3", "verdict": "goal", "seq": 5},  # no frames: not a label
    ]
    s = LabelSet.from_events(events)
    assert s.goal_frames("e1") == [0, 1, 2, 3, 4, 7, 8, 9]
    assert s.not_goal_frames("e1") == [5, 6]
    assert s.episode_verdicts == {"e2": "failure"}
    assert s.episodes() == ["e1", "e2"]
    assert len(s.for_episode("e1")) == 2


@pytest.mark.parametrize(
    ("args", "msg"),
    [(("e", "goal", 3, 3), "start < stop"), (("e", "goal"), "start < stop"), (("e", "success", 0, 2), "whole episode"),
     (("e", "maybe"), "verdict must be")],
)
def test_a_malformed_label_is_refused_with_the_reason(args, msg):
    with pytest.raises(ValueError, match=msg):
        Label(*args)


# ------------------------------------------------------------------ API -> store -> learner
@pytest.fixture(scope="module")
def recorded():
    """A sim daemon that recorded a short practice session (random policy), with its API client."""
    with tempfile.TemporaryDirectory() as tmp, sim_daemon(Path(tmp)) as d:
        client = TestClient(create_app(d))
        auth = {"Authorization": f"Bearer {d.cfg.server.token}"}
        r = client.post("/sessions", json={"policy": "random"}, headers=auth)
        assert r.status_code == 201, r.text
        wait_until(lambda: ((d.status().get("session") or {}).get("total_steps") or 0) >= 15, 60.0, "15 practice steps")
        client.post("/sessions/current/stop", headers=auth)
        eps = wait_until(lambda: [e for e in ReplayReader(d.cfg.store.path).episodes() if e.kind == "practice"
                                  and e.length >= 10], 20.0, "a closed practice episode of >= 10 steps")
        yield d, client, auth, eps[0]


def test_labels_are_stored_as_events_and_read_back(recorded):
    d, client, auth, ep = recorded
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "goal", "start": 2, "stop": 6, "who": "ana"},
                    headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["label"]["who"] == "ana" and r.json()["label"]["seq"] >= 0
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "not_goal", "start": 4, "stop": 5}, headers=auth)
    assert r.status_code == 201, r.text
    got = client.get(f"/episodes/{ep.id}/labels").json()
    assert got["goal_frames"] == [2, 3, 5] and got["not_goal_frames"] == [4]
    assert [lb["verdict"] for lb in got["labels"]] == ["goal", "not_goal"]
    # In the store's event log, with who and when; the episode's data is untouched.
    events = [e for e in ReplayReader(d.cfg.store.path).events() if e["type"] == "label" and e["episode"] == ep.id]
    assert [(e["verdict"], e.get("start"), e.get("stop"), e["who"]) for e in events] == [
        ("goal", 2, 6, "ana"), ("not_goal", 4, 5, "operator")]
    assert all(e["time"] > 0 for e in events)


def stored_labels(d) -> int:
    """Label events in the store (the daemon adds its tick_stats events whenever a window closes)."""
    return sum(e["type"] == "label" for e in ReplayReader(d.cfg.store.path).events())


def test_bad_labels_get_a_clear_4xx_and_store_nothing(recorded):
    d, client, auth, ep = recorded
    before = stored_labels(d)
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "goal", "start": 0, "stop": ep.length + 5},
                    headers=auth)
    assert r.status_code == 422 and "beyond" in r.json()["detail"] and str(ep.length) in r.json()["detail"]
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "success", "start": 0, "stop": 2}, headers=auth)
    assert r.status_code == 422 and "whole episode" in r.json()["detail"]
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "goal"}, headers=auth)
    assert r.status_code == 422 and "start < stop" in r.json()["detail"]
    r = client.post("/episodes/999999/labels", json={"verdict": "failure"}, headers=auth)
    assert r.status_code == 404 and "999999" in r.json()["detail"]
    r = client.post(f"/episodes/{ep.id}/labels", json={"verdict": "failure"})
    assert r.status_code == 401
    assert stored_labels(d) == before


def test_the_learner_takes_labelled_frames_from_the_store(recorded):
    d, client, auth, ep = recorded
    reader = ReplayReader(d.cfg.store.path)
    others = [e for e in reader.episodes() if e.kind == "practice" and e.id != ep.id and e.length > 0]
    client.post(f"/episodes/{ep.id}/labels", json={"verdict": "goal", "start": 7, "stop": 9}, headers=auth)
    spec = StoreMeta.from_attrs(reader.meta).obs_spec("state")
    state = reader.read(ep.id, keys=["obs/state"])["obs/state"]
    labelled = LabelledFrames(spec, (spec.state_dim,), np.dtype(np.float32))
    assert labelled.update(reader)
    expected = LabelSet.from_events(reader.events())
    np.testing.assert_array_equal(labelled.goal.frames[-2:], state[[7, 8]])
    assert len(labelled.goal) == sum(len(expected.goal_frames(e)) for e in expected.episodes())
    assert not labelled.update(reader)  # nothing new: no rebuild
    if others:  # a failed episode: every frame a negative
        client.post(f"/episodes/{others[0].id}/labels", json={"verdict": "failure"}, headers=auth)
        assert labelled.update(reader)
        assert len(labelled.not_goal) >= others[0].length


# ------------------------------------------------------------------ labels lower false positives
def _core(rng: np.random.Generator) -> LearningCore:
    cfg = tiny_config(Path(tempfile.gettempdir()), "sim", mode="state", clf_batch_size=64)
    spec = ObsSpec("state", (), proprio_dim=4, state_dim=6)
    s = Settings.from_config(cfg, "state")
    s = dataclasses.replace(s, sizes=PRESETS["tiny"])
    return LearningCore(s, spec, {"dim": 4}, torch.device("cpu"), rng, ("forward",))


def _fp_rate(with_labels: bool) -> float:
    """Goal frames near +1 in the first coordinate; online negatives far away; the operator's
    not-goal frames sit next to the goal (a near miss), where a classifier trained only on demo
    positives and online negatives calls them goals."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    core = _core(rng)
    goal = np.zeros((200, 6), np.float32)
    goal[:, 0] = 1.0
    goal[:, 1:] = rng.normal(0, 0.05, (200, 5))
    near_miss = goal.copy()
    near_miss[:, 1] += 0.6
    far = rng.normal(0, 0.05, (400, 6)).astype(np.float32) - np.array([1, 0, 0, 0, 0, 0], np.float32)
    core.buffers.positives["forward"].add(goal)
    core.buffers.online["forward"].append("p0", 0, far, np.zeros((400, 4), np.float32), np.zeros((400, 4), np.float32))
    if with_labels:
        core.labelled.not_goal.add(near_miss)
    for _ in range(300):
        core.classifier_step("forward")
    probe = LabelledFrames(core.spec, (6,), np.dtype(np.float32))
    probe.not_goal.add(near_miss)
    probe.goal.add(goal)
    rates = probe.rates(core.classifiers["forward"], torch.device("cpu"))
    assert rates["labels/forward_fn_rate"] < 0.2  # the goal is still recognised
    return rates["labels/forward_fp_rate"]


def test_operator_not_goal_labels_lower_the_goal_classifiers_false_positives():
    without, with_ = _fp_rate(False), _fp_rate(True)
    assert without > 0.5, without  # the near misses fool a classifier that never saw them as negatives
    assert with_ < without - 0.3, (without, with_)
