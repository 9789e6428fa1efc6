"""The learner pushes each classifier to the daemon every `learner.push_classifier_every` classifier
steps, through the policy pusher's queue: retried with backoff while the daemon is away, never
holding up training, and numbered above the classifiers a previous learner left on the daemon."""

from __future__ import annotations

import json
import threading
import time

import httpx
import torch

from learner.trainer import Trainer
from policies.classifier_intake import validate_classifier
from policies.intake import CheckpointRejected
from spec.step import ObsSpec
from tests.learner_fakes import STATE_DIM, FakeStore, tiny_config

torch.set_num_threads(1)


class FakeDaemon:
    """PUT /classifiers/{direction} through the real classifier intake; policies and reports accepted.
    While `down`, every request fails to connect."""

    def __init__(self, cfg, loaded: dict[str, int] | None = None) -> None:
        self.spec = ObsSpec.from_config(cfg, "pixels", state_dim=STATE_DIM)
        self.loaded: dict[str, int] = dict(loaded or {})
        self.received: list[tuple[str, int]] = []  # (direction, version) of accepted classifiers
        self.down = threading.Event()
        self.refused_while_down = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down.is_set():
            self.refused_while_down += 1
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if request.method == "GET" and path == "/classifiers":
            return httpx.Response(200, json={d: ({"version": v} if v is not None else None)
                                             for d, v in self.loaded.items()})
        if request.method == "PUT" and path.startswith("/classifiers/"):
            direction = path.rsplit("/", 1)[-1]
            try:
                v = validate_classifier(request.content, direction, self.spec, self.loaded.get(direction),
                                        num_threads=None)
            except CheckpointRejected as exc:
                return httpx.Response(exc.status_code, json={"detail": exc.message})
            self.loaded[direction] = v.version
            self.received.append((direction, v.version))
            return httpx.Response(200, json={"direction": direction, "version": v.version})
        return httpx.Response(200, json={})


def fill(cfg) -> None:
    st = FakeStore(cfg)
    for _ in range(2):
        st.episode("demo", "forward", 30, success=True)
        st.episode("demo", "backward", 30, success=True)
    for direction in ("forward", "backward"):
        st.episode("practice", direction, 25)
    st.close()


def config(tmp_path, k: int):
    return tiny_config(tmp_path, clf_forward_every=4, clf_backward_every=4, push_classifier_every=k)


def run(cfg, daemon: FakeDaemon) -> Trainer:
    tr = Trainer(cfg, tensorboard=False, transport=httpx.MockTransport(daemon), push_backoff_cap_s=0.1)
    tr.poll(force=True)
    while tr.train_once() is not None:
        pass
    return tr


def test_each_classifier_reaches_the_daemon_every_k_steps_with_its_step_count_as_version(tmp_path):
    cfg = config(tmp_path, 3)
    fill(cfg)
    daemon = FakeDaemon(cfg)
    tr = run(cfg, daemon)
    try:
        steps = {d: c.steps for d, c in tr.classifiers.items()}
        assert min(steps.values()) >= 6, steps
        assert tr.pusher.wait_idle(20)
        for d, n in steps.items():
            versions = [v for dd, v in daemon.received if dd == d]
            assert versions and all(v % 3 == 0 for v in versions) and versions == sorted(versions)
            assert daemon.loaded[d] == n - n % 3  # the newest multiple of K got through
        assert tr.pusher.status.pushed["classifiers/forward"] == daemon.loaded["forward"]
    finally:
        tr.close()


def test_a_daemon_that_is_away_never_holds_up_training_and_gets_the_newest_classifier_later(tmp_path):
    cfg = config(tmp_path, 2)
    fill(cfg)
    daemon = FakeDaemon(cfg, loaded={"forward": 500})  # left there by a previous learner
    daemon.down.set()
    t0 = time.monotonic()
    tr = run(cfg, daemon)
    try:
        trained_s = time.monotonic() - t0
        steps = tr.classifiers["forward"].steps
        assert steps >= 4 and daemon.received == []
        deadline = time.monotonic() + 10
        while daemon.refused_while_down < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.refused_while_down >= 3  # retried with backoff
        daemon.down.clear()
        assert tr.pusher.wait_idle(20)
        # Only the newest version per classifier is sent, numbered above the daemon's v500.
        forward = [v for d, v in daemon.received if d == "forward"]
        assert forward == [500 + steps - steps % 2], (forward, trained_s)
        counters = json.loads(json.dumps(tr.counters()))  # what the learner saves: the base survives a restart
        assert counters["version_base"]["classifiers/forward"] == 500
    finally:
        tr.close()
