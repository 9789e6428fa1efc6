"""The learner end to end against a small store and a local policy server (no sim daemon)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from learner.cli import app
from learner.state import latest
from learner.trainer import LearnerError, Trainer
from policies.intake import CheckpointRejected, validate_checkpoint
from spec.config import parse_config
from spec.step import ActionSpace, ObsSpec
from tests.learner_fakes import STATE_DIM, FakeStore, tiny_config

torch.set_num_threads(1)
TOKEN = "test-token-123"


class PolicyServer:
    """A stand-in for the daemon's PUT /policies/{direction}: bearer token, then the real intake."""

    def __init__(self, cfg, port: int = 0, force_status: int | None = None) -> None:
        self.obs_spec = ObsSpec.from_config(cfg, "pixels", state_dim=STATE_DIM)
        self.action_spec = ActionSpace(cfg.action, cfg.workspace).spec()
        self.active: dict[str, int] = {}
        self.log: list[tuple[str, int, str]] = []  # (direction, status, version or message)
        self.force_status = force_status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                body = {d: {"version": v} for d, v in outer.active.items()}
                raw = json.dumps(body).encode()
                self.send_response(200 if self.path == "/policies" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
                if self.path == "/learner/status":
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    return self._answer(200, {"ok": True}, "status")
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                direction = self.path.rsplit("/", 1)[-1]
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"detail": "bad token"}, direction)
                if outer.force_status:
                    return self._answer(outer.force_status, {"detail": "refused by test"}, direction)
                try:
                    v = validate_checkpoint(data, direction, outer.obs_spec, outer.action_spec,
                                            outer.active.get(direction), num_threads=None)
                except CheckpointRejected as exc:
                    return self._answer(exc.status_code, {"detail": exc.message}, direction)
                outer.active[direction] = v.version
                self._answer(200, {"version": v.version}, direction)

            def _answer(self, status: int, body: dict, direction: str) -> None:
                outer.log.append((direction, status, str(body.get("version", body.get("detail")))))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_store(cfg, practice_phases: int = 4, phase: int = 25) -> FakeStore:
    """Two forward and two backward demos, then alternating practice phases (forward first)."""
    key = (practice_phases, phase)
    base = _BASE_STORES.get(key)
    if base is None:  # writing a store costs seconds on a busy box: write each layout once, copy it
        base = _BASE_DIR / f"base-{practice_phases}-{phase}.zarr"
        st = FakeStore(cfg, path=base)
        for _ in range(2):
            st.episode("demo", "forward", 30, success=True)
            st.episode("demo", "backward", 30, success=True)
        for i in range(practice_phases):
            st.episode("practice", "forward" if i % 2 == 0 else "backward", phase)
        st.close()
        _BASE_STORES[key] = base
    shutil.copytree(base, cfg.store.path)
    return FakeStore(cfg)


_BASE_DIR = Path(tempfile.mkdtemp(prefix="learner-test-stores-"))
_BASE_STORES: dict[tuple[int, int], Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _remove_base_stores():
    yield
    shutil.rmtree(_BASE_DIR, ignore_errors=True)


def train_until_idle(tr: Trainer, limit: int = 500) -> int:
    tr.poll(force=True)
    n = 0
    while n < limit and tr.train_once() is not None:
        n += 1
    return n


@contextlib.contextmanager
def trainer(cfg, **kw):
    tr = Trainer(cfg, tensorboard=False, **kw)
    try:
        yield tr
    finally:
        tr.close()


def test_trainer_updates_trains_classifiers_and_pushes_to_the_server(tmp_path):
    cfg = tiny_config(tmp_path, clf_forward_every=25, clf_backward_every=25)
    st = fill_store(cfg)
    server = PolicyServer(cfg)
    try:
        with trainer(cfg, server=server.url) as tr:
            # seed_steps 20 of 100 practice steps: forward 5 + 25, backward 25 + 25 post-seed steps.
            train_until_idle(tr)
            assert tr.router.env_steps == 100
            assert {d: a.updates for d, a in tr.agents.items()} == {"forward": 30, "backward": 50}
            assert {d: a.critic_updates for d, a in tr.agents.items()} == {"forward": 60, "backward": 100}  # UTD 2
            assert {d: c.steps for d, c in tr.classifiers.items()} == {"forward": 4, "backward": 4}
            assert "clf_forward/fresh_accuracy" in tr.last_metrics
            assert tr.owed() == {"agent/forward": 0, "agent/backward": 0, "clf/forward": 0, "clf/backward": 0}
            assert tr.pusher.wait_idle(10)
            assert server.active == {"forward": 30, "backward": 50}  # push_every 5: the newest got through
            assert all(status == 200 for _, status, _ in server.log)
            # New practice data earns new updates; nothing else does.
            st.episode("practice", "forward", 10)
            assert train_until_idle(tr) >= 10 and tr.agents["forward"].updates == 40
            assert train_until_idle(tr) == 0
    finally:
        server.close()
        st.close()


def test_a_fresh_learner_numbers_its_versions_above_the_daemons_active_ones(tmp_path):
    # The daemon still runs a previous learner's policies (v500 forward): a new learner's
    # first pushes must be accepted, not refused as older, and the base survives a restart.
    cfg = tiny_config(tmp_path)
    st = fill_store(cfg)
    server = PolicyServer(cfg)
    server.active = {"forward": 500}
    try:
        with trainer(cfg, server=server.url) as tr:
            train_until_idle(tr)
            assert tr.pusher.wait_idle(10)
            assert server.active == {"forward": 500 + tr.agents["forward"].updates,
                                     "backward": tr.agents["backward"].updates}
            assert tr.pusher.version_base == {"forward": 500, "backward": 0}
            tr.save()
        with trainer(cfg, server=server.url) as tr2:
            tr2.setup()
            assert tr2.pusher.version_base == {"forward": 500, "backward": 0}
    finally:
        server.close()
        st.close()


def test_classifier_steps_and_agent_updates_interleave_when_behind(tmp_path):
    # A learner that cannot keep up must not spend all its time on classifier steps: each stands
    # for clf_every env steps, so a 30-call budget goes to both in proportion.
    cfg = tiny_config(tmp_path, clf_forward_every=5, clf_backward_every=5)
    st = fill_store(cfg)
    with trainer(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as tr:
        tr.poll(force=True)
        for _ in range(30):
            assert tr.train_once() is not None
        updates = sum(a.updates for a in tr.agents.values())
        clf_steps = sum(c.steps for c in tr.classifiers.values())
        assert updates >= 10 and clf_steps >= 3  # classifier-first would give 0 updates here
        assert updates + clf_steps == 30
    st.close()


def test_no_updates_before_the_seed_phase_ends(tmp_path):
    cfg = tiny_config(tmp_path, seed_steps=110)
    st = fill_store(cfg)  # 100 practice steps < 110
    with trainer(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as tr:
        assert train_until_idle(tr) == 0
        assert all(a.updates == 0 for a in tr.agents.values())
        assert all(c.steps == 0 for c in tr.classifiers.values())
        st.episode("practice", "forward", 15)  # 115 steps: 5 past the seed phase
        train_until_idle(tr)
        assert tr.agents["forward"].updates == 5 and tr.agents["backward"].updates == 0
        assert {d: c.steps for d, c in tr.classifiers.items()} == {"forward": 1, "backward": 1}  # as RL starts
    st.close()


def test_agents_never_update_on_a_classifier_that_has_never_trained(tmp_path):
    # A late start: practice data is in the store before any demo, so neither classifier has
    # positives. The agents' steps stay owed (not trained on a random classifier's reward) until
    # each reward classifier has had its first step.
    cfg = tiny_config(tmp_path)
    st = FakeStore(cfg)
    for i in range(4):
        st.episode("practice", "forward" if i % 2 == 0 else "backward", 25)
    with trainer(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as tr:
        assert train_until_idle(tr) == 0
        assert all(a.updates == 0 for a in tr.agents.values())
        assert tr.owed()["agent/forward"] == 30 and tr.owed()["agent/backward"] == 50
        clf_steps_at_update: list[int] = []
        for d, a in tr.agents.items():
            def spy(*args, _d=d, _update=a.update, **kw):
                clf_steps_at_update.append(tr.classifiers[_d].steps)
                return _update(*args, **kw)
            a.update = spy
        for _ in range(2):
            st.episode("demo", "forward", 30, success=True)
            st.episode("demo", "backward", 30, success=True)
        train_until_idle(tr)
        assert {d: a.updates for d, a in tr.agents.items()} == {"forward": 30, "backward": 50}
        assert len(clf_steps_at_update) == 80 and min(clf_steps_at_update) >= 1
    st.close()


def test_backlog_is_capped_and_the_excess_dropped(tmp_path):
    # 0.05 x 200-step phases = 10 agent steps at most; BC weight 1 -> 0 over the first 200 env steps.
    cfg = tiny_config(tmp_path, max_updates_per_step=0.05, bc_forward=(1.0, 0.0, 0, 200))
    fill_store(cfg).close()  # forward 30, backward 50 post-seed steps
    with trainer(cfg, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as tr:
        tr.poll(force=True)
        assert tr.owed()["agent/forward"] == 10 and tr.owed()["agent/backward"] == 10
        assert tr.accounts.dropped == {"forward": 20, "backward": 40}
        train_until_idle(tr)
        assert {d: a.updates for d, a in tr.agents.items()} == {"forward": 10, "backward": 10}
        assert tr.last_metrics["forward/bc_lambda"] == 0.5  # the schedule runs on env steps (100), not updates


def test_a_learner_falling_behind_tells_the_daemon_and_keeps_its_memory_bounded(tmp_path):
    # No classifier positives (no demos): nothing can train, so the learner only falls behind.
    # The daemon hears how far (owed and dropped steps) even though no update ever runs, and the
    # rings hold `capacity` steps however much practice arrives.
    cfg = tiny_config(tmp_path, max_updates_per_step=0.05, capacity=100)
    st = FakeStore(cfg)
    reports: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/learner/status":
            reports.append(json.loads(req.content))
        return httpx.Response(200, json={})

    with trainer(cfg, transport=httpx.MockTransport(handler)) as tr:
        assert tr.setup()
        tr.pusher.report_every_s = 0.0
        for i in range(6):
            st.episode("practice", "forward" if i % 2 == 0 else "backward", 40)
            tr.poll(force=True)
        assert train_until_idle(tr) == 0
        # 240 steps, 220 past the seed phase: 100 forward, 120 backward; at most 10 owed each.
        want = {"behind_steps": {"forward": 10, "backward": 10}, "dropped": {"forward": 90, "backward": 110},
                "buffered": {"forward": 100, "backward": 100}, "capacity": 100}
        assert tr.backlog() == want
        deadline = time.monotonic() + 10
        while not (reports and reports[-1]["dropped"] == want["dropped"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {k: reports[-1][k] for k in want} == want
    st.close()


def test_server_down_keeps_training_and_retries_until_it_is_back(tmp_path):
    cfg = tiny_config(tmp_path)
    st = fill_store(cfg)
    port = free_port()
    with trainer(cfg, server=f"http://127.0.0.1:{port}", push_backoff_cap_s=0.2) as tr:
        train_until_idle(tr)
        assert tr.agents["backward"].updates == 50  # trained all it was owed, server or not
        deadline = time.monotonic() + 10
        while tr.pusher.status.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tr.pusher.status.failures >= 2 and "Connect" in (tr.pusher.status.last_error or "")
        assert tr.pusher.status.pushed == {}
        server = PolicyServer(cfg, port=port)
        try:
            assert tr.pusher.wait_idle(10)
            assert server.active == {"forward": 30, "backward": 50}  # only the newest versions are sent
        finally:
            server.close()
    st.close()


def test_a_refused_version_is_not_retried(tmp_path):
    cfg = tiny_config(tmp_path)
    fill_store(cfg).close()
    server = PolicyServer(cfg, force_status=422)
    try:
        with trainer(cfg, server=server.url, push_backoff_cap_s=0.1) as tr:
            tr.poll(force=True)
            tr.push("forward")
            assert tr.pusher.wait_idle(10)
            time.sleep(0.3)
            assert [e for e in server.log if e[0] != "status"] == [("forward", 422, "refused by test")]
            assert tr.pusher.status.rejected["forward"] == [(0, 422, "refused by test")]
    finally:
        server.close()


def test_training_state_save_and_resume(tmp_path):
    cfg = tiny_config(tmp_path, clf_backward_every=25)
    st = fill_store(cfg)
    mock = httpx.MockTransport(lambda r: httpx.Response(200))
    with trainer(cfg, transport=mock) as tr:
        train_until_idle(tr)
        saved = tr.save()
        weights = {f"{d}.{k}": v.clone() for d, a in tr.agents.items() for k, v in a.critic.state_dict().items()}
        weights |= {f"clf.{k}": v.clone() for k, v in tr.classifiers["backward"].net.state_dict().items()}
        counters = tr.counters()
        alpha = float(tr.agents["backward"].log_alpha.detach())
        opt_step = tr.agents["forward"].critic_opt.state_dict()["state"][0]["step"].item()
    assert saved is not None and latest(tr.state_dir) == saved
    with trainer(cfg, transport=mock) as tr2:
        tr2.poll(force=True)
        assert {d: a.updates for d, a in tr2.agents.items()} == {"forward": 30, "backward": 50}
        assert {d: c.steps for d, c in tr2.classifiers.items()} == counters["classifier_steps"]
        assert tr2.owed()["agent/forward"] == 0 and tr2.owed()["agent/backward"] == 0  # re-read data is not owed again
        for d, a in tr2.agents.items():
            for k, v in a.critic.state_dict().items():
                assert torch.equal(v, weights[f"{d}.{k}"]), k
        for k, v in tr2.classifiers["backward"].net.state_dict().items():
            assert torch.equal(v, weights[f"clf.{k}"]), k
        assert float(tr2.agents["backward"].log_alpha.detach()) == alpha
        assert tr2.agents["forward"].critic_opt.state_dict()["state"][0]["step"].item() == opt_step
        assert len(tr2.buffers.online["forward"]) == len(tr.buffers.online["forward"])
        st.episode("practice", "backward", 7)
        train_until_idle(tr2)
        assert tr2.agents["backward"].updates == 57
    st.close()


def test_state_mode_trains_from_the_state_vector(tmp_path):
    cfg = tiny_config(tmp_path, mode="state")
    st = fill_store(cfg)
    got: list[bytes] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "PUT" and req.url.path.startswith("/policies/"):
            got.append(req.content)
        return httpx.Response(200)

    with trainer(cfg, transport=httpx.MockTransport(handler)) as tr:
        train_until_idle(tr)
        assert tr.spec.mode == "state" and tr.buffers.online["forward"].main.shape[1:] == (STATE_DIM,)
        assert tr.agents["forward"].updates == 30 and tr.agents["backward"].updates == 50
        tr.pusher.wait_idle(10)
    daemon_spec = ObsSpec.from_config(cfg, "pixels", state_dim=STATE_DIM)
    action = ActionSpace(cfg.action, cfg.workspace).spec()
    v = validate_checkpoint(got[-1], "backward", daemon_spec, action, None, num_threads=None)
    assert v.checkpoint.obs_spec.mode == "state"
    st.close()


def write_config(tmp_path: Path, store: bool = True, **learner) -> Path:
    cfg = tiny_config(tmp_path, **learner)
    if store:
        fill_store(cfg).close()
    data = cfg.model_dump(mode="json")
    path = tmp_path / "cfg.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(data))
    return path


def test_cli_run_trains_saves_and_exits(tmp_path):
    path = write_config(tmp_path)
    port = free_port()  # nobody listens: pushes fail, training goes on
    res = CliRunner().invoke(app, ["run", "--config", str(path), "--server", f"http://127.0.0.1:{port}",
                                   "--max-updates", "6", "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert latest(tmp_path / "run" / "state") is not None
    counters = json.loads((latest(tmp_path / "run" / "state") / "counters.json").read_text())
    assert sum(a["updates"] for a in counters["agents"].values()) == 6
    assert (tmp_path / "run" / "tb").is_dir()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "nope.yaml"], "config file not found"),
        (["--server", "localhost:8000"], "--server must be an http(s) URL"),
        (["--device", "tpu"], "not a torch device"),
        (["--device", "cuda:0"], "CUDA is not available"),
    ],
)
def test_cli_bad_values_give_clear_errors(tmp_path, args, message):
    if "cuda" in args[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_config(tmp_path, store=False)  # these fail before the store is read
    base = ["run", "--config", str(path)]
    if args[0] == "--config":
        base = ["run"]
    res = CliRunner().invoke(app, base + args)
    assert res.exit_code == 2
    assert message in res.output


def test_cli_bad_learner_config_value_names_the_field(tmp_path):
    path = write_config(tmp_path, store=False)
    data = json.loads(path.read_text())
    data["learner"]["batch_size"] = 1
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert res.exit_code == 2 and "learner.batch_size" in res.output


def test_sigterm_saves_state_and_exits_cleanly(tmp_path):
    path = write_config(tmp_path, seed_steps=0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "learner.cli", "run", "--config", str(path), "--server", "http://127.0.0.1:9",
         "--quiet", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        tb = tmp_path / "run" / "tb"
        while time.monotonic() < deadline and not (tb.is_dir() and any(tb.iterdir())):
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"SIGTERM" in out
    assert latest(tmp_path / "run" / "state") is not None


def test_a_state_that_does_not_fit_is_refused_and_left_alone(tmp_path):
    cfg = tiny_config(tmp_path)
    fill_store(cfg).close()
    mock = httpx.MockTransport(lambda r: httpx.Response(200))
    with trainer(cfg, transport=mock) as tr:
        tr.poll(force=True)
        saved = tr.save()
    bigger = tiny_config(tmp_path, network={"preset": "tiny", "hidden_dim": 24})
    with trainer(bigger, transport=mock) as tr2:
        with pytest.raises(LearnerError, match="does not fit"):
            tr2.poll(force=True)
        assert not tr2.ready and tr2.save() is None
    assert latest(tmp_path / "run" / "state") == saved


def test_eval_verdicts_in_the_store_reach_tensorboard_as_success_per_version(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    st = fill_store(cfg)
    for version, verdicts in ((5, [True, False]), (9, [True, True])):
        for ok in verdicts:
            ep = st.writer.begin_episode("eval", "forward", {"policy_version": version})
            st.append(ep, 3, version=version)
            ep.close(success=ok)
    st.close()
    logged: list[tuple[str, float, int]] = []

    class Writer:
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            logged.append((tag, value, step))

        def close(self) -> None:
            pass

    with trainer(cfg) as tr:
        tr.poll(force=True)
        tr.writer = Writer()
        tr._last_eval_scan = -math.inf
        tr.poll(force=True)
    assert ("eval/forward_success", 0.5, 5) in logged
    assert ("eval/forward_success", 1.0, 9) in logged


def test_pushes_carry_the_token_read_from_the_secret_file(tmp_path):
    # In compose the token is a secret at /run/secrets/api_token, named by ROBOT__SERVER__TOKEN_FILE.
    secret = tmp_path / "api_token"
    secret.write_text("token-from-the-secret-file\n")
    base = tiny_config(tmp_path, mode="state")
    cfg = parse_config(base.model_dump(mode="json"), "test", env={"ROBOT__SERVER__TOKEN_FILE": str(secret)})
    st = fill_store(cfg)
    auth: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "PUT" and req.url.path.startswith("/policies/"):
            auth.append(req.headers["authorization"])
        return httpx.Response(200)

    with trainer(cfg, transport=httpx.MockTransport(handler)) as tr:
        train_until_idle(tr)
        tr.pusher.wait_idle(10)
    assert auth and set(auth) == {"Bearer token-from-the-secret-file"}
    st.close()
