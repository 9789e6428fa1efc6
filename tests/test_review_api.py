"""Episode review through the API: classifiers pushed to the daemon (PUT /classifiers), every recorded
step with both classifiers' scores (GET /episodes/{id}/steps), and the stored views as JPEG."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from policies.checkpoint import PolicyCheckpoint
from policies.classifier_checkpoint import ClassifierCheckpoint
from policies.networks import PRESETS, Classifier, Policy
from replay.store import ReplayReader
from robot_server.api.app import create_app
from spec.step import ObsSpec, action_dim, stack_views
from tests.inproc_daemon import sim_daemon, wait_until

torch.set_num_threads(1)
TINY = PRESETS["tiny"]
CAMERAS = {"forward": ["wrist"], "backward": None}  # as the robot learner: C_f on the wrist view, C_b on both


def classifier_bytes(spec: ObsSpec, direction: str, version: int, seed: int = 0) -> bytes:
    """A tiny classifier checkpoint for a daemon whose store describes `spec`."""
    torch.manual_seed(seed)
    net = Classifier(spec, TINY, CAMERAS[direction])
    return ClassifierCheckpoint.from_classifier(net, direction, version, spec, TINY, step=version).to_bytes()


def put(client: TestClient, direction: str, raw: bytes, auth: dict | None) -> object:
    headers = {"Content-Type": "application/octet-stream", **(auth or {})}
    return client.put(f"/classifiers/{direction}", content=raw, headers=headers)


def record_practice(d, client: TestClient, auth: dict, steps: int) -> None:
    r = client.post("/sessions", json={"policy": "random"}, headers=auth)
    assert r.status_code == 201, r.text
    wait_until(lambda: ((d.status().get("session") or {}).get("total_steps") or 0) >= steps, 60.0, f"{steps} steps")


@pytest.fixture(scope="module")
def recorded():
    """A sim daemon that recorded a short practice episode (random policy), with its API client."""
    with tempfile.TemporaryDirectory() as tmp, sim_daemon(Path(tmp)) as d:
        client = TestClient(create_app(d))
        auth = {"Authorization": f"Bearer {d.cfg.server.token}"}
        record_practice(d, client, auth, 20)
        client.post("/sessions/current/stop", headers=auth)
        eps = wait_until(lambda: [e for e in ReplayReader(d.cfg.store.path).episodes() if e.kind == "practice"
                                  and e.length >= 16], 60.0, "a closed practice episode of >= 16 steps")
        yield d, client, auth, eps[0]


def test_pushed_classifiers_score_every_recorded_step(recorded):
    d, client, auth, ep = recorded
    spec = d.store_meta.obs_spec()
    for direction, version in (("forward", 3), ("backward", 4)):
        r = put(client, direction, classifier_bytes(spec, direction, version), auth)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version and r.json()["cameras"] == (CAMERAS[direction] or spec.camera_names)
    loaded = client.get("/classifiers").json()
    assert (loaded["forward"]["version"], loaded["backward"]["version"]) == (3, 4)

    r = client.get(f"/episodes/{ep.id}/steps")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["length"] == ep.length == len(body["steps"]) and body["kind"] == "practice"
    assert body["classifiers"]["forward"]["version"] == 3 and body["cameras"] == spec.camera_names
    stored = ReplayReader(d.cfg.store.path).read(ep.id)
    for i, row in enumerate(body["steps"]):
        assert row["index"] == i and row["direction"] == ep.direction and row["phase"] == 0
        assert set(row["scores"]) == {"forward", "backward"}
        assert all(np.isfinite(p) and 0.0 <= p <= 1.0 for p in row["scores"].values())
        assert row["policy_version"] == stored["policy_version"][i] and row["intervention"] == stored["intervention"][i]
        np.testing.assert_allclose(row["action"], stored["action"][i], rtol=1e-6)
    # The score is σ(C(s)) of that very frame under the pushed weights.
    net = ClassifierCheckpoint.from_bytes(classifier_bytes(spec, "forward", 3)).build_classifier()
    last = len(body["steps"]) - 1
    x = torch.from_numpy(np.ascontiguousarray(stack_views({k: v[[0, last]] for k, v in stored.items()}, spec)))
    with torch.no_grad():
        expected = torch.sigmoid(net(x)).numpy()
    got = [body["steps"][0]["scores"]["forward"], body["steps"][last]["scores"]["forward"]]
    np.testing.assert_allclose(got, expected, rtol=1e-4)

    # A newer classifier scores afresh (the cache is per classifier version).
    assert put(client, "forward", classifier_bytes(spec, "forward", 5, seed=1), auth).status_code == 200
    again = client.get(f"/episodes/{ep.id}/steps").json()
    assert again["classifiers"]["forward"]["version"] == 5
    assert [s["scores"]["forward"] for s in again["steps"]] != [s["scores"]["forward"] for s in body["steps"]]
    assert [s["scores"]["backward"] for s in again["steps"]] == [s["scores"]["backward"] for s in body["steps"]]


def test_bad_classifier_uploads_are_refused_and_the_loaded_one_stays(recorded):
    d, client, auth, _ = recorded
    spec = d.store_meta.obs_spec()
    r = put(client, "backward", classifier_bytes(spec, "backward", 100), auth)
    assert r.status_code == 200, r.text
    before = client.get("/classifiers").json()
    policy = Policy(spec, action_dim(d.store_meta.action_space), TINY)
    policy_raw = PolicyCheckpoint.from_policy(policy, "backward", 200, spec, d.store_meta.action_space, TINY).to_bytes()
    other_views = ObsSpec("pixels", spec.cameras[:1], spec.proprio_dim)  # a robot with only the wrist view
    cases = [
        (b"not a safetensors file" * 4, 400, "safetensors"),
        (policy_raw, 400, "medalpp-classifier/1"),
        (classifier_bytes(spec, "backward", 100), 409, "not newer"),
        (classifier_bytes(spec, "forward", 101), 422, "forward classifier"),
        (ClassifierCheckpoint.from_classifier(Classifier(other_views, TINY), "backward", 102, other_views, TINY)
         .to_bytes(), 422, "obs.cameras"),
    ]
    for raw, code, fragment in cases:
        r = put(client, "backward", raw, auth)
        assert r.status_code == code and fragment in r.json()["detail"], (code, r.text)
    assert put(client, "backward", classifier_bytes(spec, "backward", 103), None).status_code == 401
    after = client.get("/classifiers").json()
    assert after["backward"] == before["backward"] and after["rejected"] == before["rejected"] + len(cases)


def test_frames_are_the_stored_views_as_jpeg_and_unknown_ones_a_404(recorded):
    d, client, _, ep = recorded
    stored = ReplayReader(d.cfg.store.path).read(ep.id, stop=ep.length)
    for camera in d.store_meta.obs_spec().camera_names:
        r = client.get(f"/episodes/{ep.id}/frames/{ep.length - 1}.jpg", params={"camera": camera})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        bgr = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        view = stored[f"obs/{camera}"][ep.length - 1]
        assert bgr.shape == view.shape
        assert np.abs(bgr[..., ::-1].astype(int) - view).mean() < 6  # the same picture, up to JPEG loss
    first = client.get(f"/episodes/{ep.id}/frames/0.jpg")  # the first camera by default
    assert first.status_code == 200 and first.content == client.get(
        f"/episodes/{ep.id}/frames/0.jpg", params={"camera": "wrist"}).content
    for path, fragment in [
        (f"/episodes/{ep.id}/frames/{ep.length}.jpg", f"{ep.length} committed steps"),
        (f"/episodes/{ep.id}/frames/0.jpg?camera=top", "no camera 'top'"),
        ("/episodes/424242/frames/0.jpg", "no episode '424242'"),
        ("/episodes/424242/steps", "no episode '424242'"),
    ]:
        r = client.get(path)
        assert r.status_code == 404 and fragment in r.json()["detail"], (path, r.text)


def test_an_open_episode_shows_its_committed_steps_only(recorded):
    d, client, auth, _ = recorded
    spec = d.store_meta.obs_spec()
    put(client, "forward", classifier_bytes(spec, "forward", 1000), auth)
    record_practice(d, client, auth, 40)
    try:
        reader = ReplayReader(d.cfg.store.path)
        ep = wait_until(lambda: [e for e in reader.episodes(include_open=True) if not e.closed and e.length >= 16],
                        60.0, "an open episode with committed steps")[0]
        body = client.get(f"/episodes/{ep.id}/steps").json()
        assert body["closed"] is False and body["length"] >= 16
        assert body["length"] <= reader.episode(ep.id).length  # never beyond what is committed
        assert len(body["steps"]) == body["length"]
        assert all(np.isfinite(s["scores"]["forward"]) for s in body["steps"])
    finally:
        client.post("/sessions/current/stop", headers=auth)


def test_classifiers_are_loaded_again_at_daemon_start(tmp_path):
    with sim_daemon(tmp_path) as d:
        spec = d.store_meta.obs_spec()
        client = TestClient(create_app(d))
        auth = {"Authorization": f"Bearer {d.cfg.server.token}"}
        assert put(client, "forward", classifier_bytes(spec, "forward", 7), auth).status_code == 200
        sha = client.get("/classifiers").json()["forward"]["sha256"]
    with sim_daemon(tmp_path) as d:
        loaded = TestClient(create_app(d)).get("/classifiers").json()
        assert loaded["forward"]["version"] == 7 and loaded["forward"]["sha256"] == sha
        assert loaded["backward"] is None
