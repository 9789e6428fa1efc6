"""The operator API against a real `robot-server run` (uvicorn, sim arm and cameras) subprocess."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.daemon_proc import DaemonProc, running_daemon, settled_position, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with running_daemon(tmp_path_factory.mktemp("api-daemon")) as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: DaemonProc) -> Iterator[httpx.Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture(autouse=True)
def idle(api: httpx.Client) -> Iterator[None]:
    """Every test starts and leaves the daemon idle (no e-stop, session or demo)."""
    _to_idle(api)
    yield
    _to_idle(api)


def _to_idle(api: httpx.Client) -> None:
    st = api.get("/status").json()
    if st["mode"] == "estop":
        api.post("/estop/release")
        st = api.get("/status").json()
    if st["mode"] == "practice":
        api.post("/sessions/current/stop")
    elif st["mode"] == "demo":
        api.post("/demos/current/discard")
    elif st["mode"] == "eval":
        api.post("/evals/current/stop")
    wait_for(lambda: _status(api)["mode"] == "idle", 5.0, what="idle mode")


def _status(api: httpx.Client) -> dict:
    r = api.get("/status")
    assert r.status_code == 200, r.text
    return r.json()


def _session_steps(api: httpx.Client) -> int:
    sess = _status(api).get("session")
    return -1 if sess is None else sess["total_steps"]


def _start_random(api: httpx.Client) -> dict:
    r = api.post("/sessions", json={"policy": "random"})
    assert r.status_code == 201, r.text
    wait_for(lambda: _session_steps(api) >= 2, 10.0, what="session steps")
    return r.json()


def _episodes(api: httpx.Client, **params) -> list[dict]:
    r = api.get("/episodes", params=params)
    assert r.status_code == 200, r.text
    return r.json()["episodes"]


# ------------------------------------------------------------------ read-only routes
def test_health_and_status(api: httpx.Client) -> None:
    h = api.get("/health")
    assert h.status_code == 200
    assert h.json()["ok"] is True and h.json()["control_loop_alive"] is True
    st = _status(api)
    assert st["mode"] == "idle"
    assert st["tick"]["ticks"] > 0
    assert set(st["cameras"]) == {"wrist", "front"}
    assert st["arm"]["mode"] == "ready"
    assert st["store"]["path"].endswith("store.zarr")


def test_page_is_served(api: httpx.Client) -> None:
    r = api.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'id="btn-estop"' in r.text and 'id="eval-results"' in r.text
    texts = [r.text]
    for asset in ("/static/app.js", "/static/style.css"):
        a = api.get(asset)
        assert a.status_code == 200, asset
        texts.append(a.text)
    # The robot PC may be offline: nothing may come from another host (CDN, fonts).
    assert not any(("http://" in t or "https://" in t) for t in texts)


def test_snapshot_is_a_jpeg_of_the_configured_size(api: httpx.Client) -> None:
    cams = {c["name"]: c for c in api.get("/cameras").json()["cameras"]}
    assert set(cams) == {"wrist", "front"}
    for name, cam in cams.items():
        for view, (w, h) in {
            "cropped": (cam["output"]["width"], cam["output"]["height"]),
            "full": (cam["width"], cam["height"]),
        }.items():
            r = api.get(f"/cameras/{name}/snapshot", params={"view": view})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/jpeg"
            assert r.content[:2] == b"\xff\xd8"
            img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (h, w, 3), (name, view, None if img is None else img.shape)


def test_mjpeg_stream_with_max_frames_ends(api: httpx.Client) -> None:
    r = api.get("/cameras/front/stream", params={"max_frames": 2, "fps": 30}, timeout=10.0)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
    assert r.content.count(b"--frame\r\nContent-Type: image/jpeg") == 2


def test_reads_are_open_on_loopback_writes_are_not(daemon: DaemonProc) -> None:
    # The daemon binds 127.0.0.1 with the default server.read_access (auto).
    with daemon.client(token="") as anon:
        for path in ("/status", "/cameras", "/episodes", "/policies", "/metrics", "/cameras/wrist/snapshot",
                     "/cameras/wrist/stream?max_frames=1"):
            assert anon.get(path).status_code == 200, path
        assert anon.post("/estop").status_code == 401
        doc = anon.get("/openapi.json").json()
    # The document says so: no token on reads, the token (and its 401/403) on writes.
    assert "security" not in doc["paths"]["/status"]["get"] and "401" not in doc["paths"]["/status"]["get"]["responses"]
    assert "security" not in doc["paths"]["/cameras/{name}/stream"]["get"]
    assert doc["paths"]["/estop"]["post"]["security"] == [{"HTTPBearer": []}]
    assert {"401", "403"} <= set(doc["paths"]["/estop"]["post"]["responses"])
    assert set(doc["components"]["securitySchemes"]) == {"HTTPBearer"}


def test_unknown_camera_is_404_naming_the_cameras(api: httpx.Client) -> None:
    for path in ("/cameras/nope/snapshot", "/cameras/nope/stream?max_frames=1"):
        r = api.get(path)
        assert r.status_code == 404
        assert "nope" in r.json()["detail"] and "wrist" in r.json()["detail"]


def test_metrics_in_prometheus_text_format(api: httpx.Client) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {s.name: s for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    assert samples["robot_tick_ticks_total"].value > 0
    assert samples["robot_control_loop_up"].value == 1.0
    assert "robot_tick_period_error_ms_p99" in samples
    assert "robot_interventions_total" in samples


# ------------------------------------------------------------------ sessions
def test_session_telemetry_moves_over_websocket(daemon: DaemonProc, api: httpx.Client) -> None:
    r = api.post("/sessions", json={"policy": "random"})
    assert r.status_code == 201, r.text
    session_id = r.json()["id"]
    steps: list[int] = []
    with ws_connect(f"{daemon.ws_url}/telemetry?interval=0.1", open_timeout=5, close_timeout=2) as ws:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=5))
            assert msg["type"] == "telemetry"
            if msg["session"] is not None:
                assert msg["session"]["id"] == session_id
                steps.append(msg["session"]["total_steps"])
            if len(set(steps)) >= 3:
                break
    assert len(set(steps)) >= 3 and steps[-1] > steps[0], steps
    tick = msg["tick"]
    for key in ("ticks", "late", "stale_frames", "period_error_ms_p99", "work_ms_p99"):
        assert isinstance(tick[key], int | float), key
    assert msg["mode"] == "practice" and msg["stage"] == "acting"
    assert msg["arm"]["mode"] == "ready"
    assert msg["store"]["steps_written"] >= 0
    assert any(e["event"] == "session_started" for e in msg["recent_events"])


def test_pause_resume_stop(api: httpx.Client) -> None:
    started = _start_random(api)
    assert api.post("/sessions/current/pause").json() == {"stage": "paused"}
    wait_for(lambda: _status(api)["stage"] == "paused", 2.0, what="paused stage")
    before = _session_steps(api)
    time.sleep(0.5)
    assert _session_steps(api) == before, "steps went on while paused"

    assert api.post("/sessions/current/resume").status_code == 200
    wait_for(lambda: _session_steps(api) > before, 5.0, what="steps after resume")

    r = api.post("/sessions/current/stop")
    assert r.status_code == 200, r.text
    assert r.json()["end_reason"] == "stopped by operator"
    assert r.json()["id"] == started["id"]
    cur = api.get("/sessions/current")
    assert cur.status_code == 404 and "stopped by operator" in cur.json()["detail"]
    assert api.get("/sessions/last").json()["id"] == started["id"]
    # The practice segments of that session are stored, closed.
    eps = wait_for(
        lambda: [e for e in _episodes(api, kind="practice") if e["session"] == started["id"]],
        10.0,
        what="practice episode of the session",
    )
    assert all(e["closed"] and e["length"] > 0 for e in eps)


def test_operator_confirms_a_success(api: httpx.Client) -> None:
    _start_random(api)
    r = api.post("/sessions/current/success")
    assert r.status_code == 200 and r.json()["direction"] == "forward", r.text
    r = api.post("/sessions/current/success", json={"direction": "backward"})
    assert r.status_code == 200 and r.json()["direction"] == "backward", r.text
    events = wait_for(lambda: (e := api.get("/events", params={"type": "success_confirmed"}).json()["events"])
                      and len(e) >= 2 and e, 5.0, what="both confirmations in the store's event log")
    assert [e["direction"] for e in events[-2:]] == ["forward", "backward"]


def test_reset_request_and_done(api: httpx.Client) -> None:
    _start_random(api)
    r = api.post("/sessions/current/reset-request", json={"reason": "cube fell off"})
    assert r.status_code == 200 and r.json() == {"reset_requested": "cube fell off"}
    assert _status(api)["session"]["reset_requested"] == "cube fell off"
    # Nothing to confirm until the switch to forward asks for it.
    r = api.post("/sessions/current/reset-done")
    assert r.status_code == 409 and "no manual reset is pending" in r.json()["detail"]


def test_conflicting_commands_are_409(api: httpx.Client) -> None:
    for method, path, body in [
        ("POST", "/demos/current/finish", {"success": True}),
        ("POST", "/demos/current/discard", None),
        ("POST", "/sessions/current/pause", None),
        ("POST", "/sessions/current/stop", None),
        ("POST", "/sessions/current/success", None),
        ("POST", "/evals/current/stop", None),
        ("POST", "/evals/current/reset-done", None),
        ("POST", "/estop/release", None),
    ]:
        r = api.request(method, path, json=body)
        assert r.status_code == 409, (path, r.status_code, r.text)
        assert r.json()["detail"], path
    _start_random(api)
    r = api.post("/sessions", json={"policy": "random"})
    assert r.status_code == 409 and "practice" in r.json()["detail"]
    r = api.post("/demos", json={"direction": "forward"})
    assert r.status_code == 409 and "practice" in r.json()["detail"]
    assert api.post("/sessions/current/resume").status_code == 409  # not paused
    assert api.post("/arm/home").status_code == 409  # only when idle


def test_intervention_is_counted_listed_and_stored_on_the_episode(api: httpx.Client) -> None:
    started = _start_random(api)
    before = api.get("/interventions").json()["counters"]
    reason = "put the cube back by hand"
    r = api.post("/interventions", json={"reason": reason})
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "operator" and r.json()["reason"] == reason

    listed = api.get("/interventions").json()
    assert listed["counters"]["interventions"] == before["interventions"] + 1
    assert listed["counters"]["operator_interventions"] == before["operator_interventions"] + 1
    assert [iv["reason"] for iv in listed["session"]] == [reason]
    assert _status(api)["session"]["interventions"] == 1

    api.post("/sessions/current/stop")

    def stored() -> list[dict]:
        out = []
        for e in _episodes(api, kind="practice"):
            if e["session"] == started["id"]:
                events = api.get(f"/episodes/{e['id']}").json()["attrs"].get("events", [])
                out += [ev for ev in events if ev.get("reason") == reason]
        return out

    events = wait_for(stored, 10.0, what="intervention event in the stored episode")
    assert events[0]["type"] == "intervention" and events[0]["kind"] == "operator"


def test_estop_halts_motion_until_released(api: httpx.Client) -> None:
    _start_random(api)
    t0 = time.monotonic()
    r = api.post("/estop", json={"reason": "test"})
    assert r.status_code == 200 and r.json() == {"estop": True}
    # The command runs on the control thread at its next tick; the snapshot follows that tick.
    wait_for(lambda: (s := _status(api))["mode"] == "estop" and s["arm"]["mode"] == "stopped", 2.0,
             interval=0.01, what="e-stop in the status")
    print(f"e-stop visible in /status {1e3 * (time.monotonic() - t0):.0f} ms after the POST was sent")
    steps = _session_steps(api)
    store = _status(api)["store"]
    queued = store["steps_written"] + store["backlog"]
    time.sleep(0.6)
    st = _status(api)
    assert st["session"]["total_steps"] == steps, "steps went on during the e-stop"
    assert st["arm"]["mode"] == "stopped"
    assert st["store"]["steps_written"] <= queued + 1  # at most a step already on its way to the writer
    assert st["counters"]["estops"] >= 1

    # Everything that moves is refused while stopped.
    assert api.post("/sessions/current/resume").status_code == 409
    assert api.post("/demos", json={"direction": "forward"}).status_code == 409

    r = api.post("/estop/release")
    assert r.status_code == 200 and r.json() == {"estop": False}
    # Released into a paused session: motion resumes only when the operator says so.
    wait_for(lambda: _status(api)["stage"] == "paused", 2.0, what="paused after release")
    assert _status(api)["arm"]["mode"] == "ready"
    assert api.post("/sessions/current/resume").status_code == 200
    wait_for(lambda: _session_steps(api) > steps, 5.0, what="steps after release and resume")


# ------------------------------------------------------------------ demonstrations
def _demo_steps(api: httpx.Client) -> int:
    demo = api.get("/demos/current").json()["demo"]
    return -1 if demo is None else demo["steps"]


def test_demo_finished_is_stored_and_discarded_is_not(api: httpx.Client) -> None:
    before_ids = {e["id"] for e in _episodes(api, kind="demo", limit=5000)}

    r = api.post("/demos", json={"direction": "forward"})
    assert r.status_code == 201, r.text
    wait_for(lambda: _demo_steps(api) >= 3, 5.0, what="demo steps")
    # The cube is not at the goal: the sim's success test refuses "success" (it would cut the demo
    # short of a held goal), and the demo goes on until the operator says otherwise.
    r = api.post("/demos/current/finish", json={"success": True})
    assert r.status_code == 409 and "goal is not reached" in r.json()["detail"], r.text
    r = api.post("/demos/current/finish", json={"success": False})
    assert r.status_code == 200, r.text
    finished = r.json()
    assert finished["success"] is False and finished["closed"] is True
    assert finished["direction"] == "forward" and finished["steps"] >= 3

    new = wait_for(
        lambda: [e for e in _episodes(api, kind="demo", limit=5000) if e["id"] not in before_ids],
        10.0,
        what="the finished demo in /episodes",
    )
    assert len(new) == 1
    ep = new[0]
    assert ep["kind"] == "demo" and ep["direction"] == "forward" and ep["success"] is False
    assert ep["length"] == finished["steps"]
    detail = api.get(f"/episodes/{ep['id']}").json()
    assert detail["steps"] == finished["steps"] and detail["attrs"]["source"] == "teleop"

    discarded_before = _status(api)["counters"]["demos_discarded"]
    assert api.post("/demos", json={"direction": "backward"}).status_code == 201
    wait_for(lambda: _demo_steps(api) >= 3, 5.0, what="demo steps")
    r = api.post("/demos/current/discard")
    assert r.status_code == 200 and r.json()["discarded"] is True
    assert _status(api)["counters"]["demos_discarded"] == discarded_before + 1
    time.sleep(1.0)  # give the writer time to (wrongly) store it
    after = {e["id"] for e in _episodes(api, kind="demo", include_open=True, limit=5000)}
    assert after == before_ids | {ep["id"]}


def test_unknown_episode_is_404(api: httpx.Client) -> None:
    r = api.get("/episodes/no-such-episode")
    assert r.status_code == 404 and "no-such-episode" in r.json()["detail"]


# ------------------------------------------------------------------ keyboard teleop
def test_keyboard_jogs_the_idle_arm(api: httpx.Client) -> None:
    x0 = settled_position(api)[0]
    direction = 1.0 if x0 < 0.525 else -1.0  # away from the nearer edge of the workspace
    for _ in range(10):
        r = api.post("/teleop/keyboard", json={"x": direction, "hold_s": 0.3})
        assert r.status_code == 200, r.text
        time.sleep(0.1)
    moved = wait_for(
        lambda: abs((x := _status(api)["arm"]["position"][0]) - x0) > 0.01 and x,
        3.0,
        what="arm moved by keyboard",
    )
    assert (moved - x0) * direction > 0.01
    time.sleep(0.4)  # let the held keys expire before the next test starts a session


# ------------------------------------------------------------------ policies
def _checkpoint(daemon: DaemonProc, direction: str, version: int) -> bytes:
    """A valid tiny policy checkpoint for the daemon's cameras, proprio and action space."""
    import torch

    from policies.checkpoint import PolicyCheckpoint
    from policies.networks import PRESETS, Policy
    from sim.task import STATE_DIM
    from spec.config import load_config
    from spec.step import ActionSpace, ObsSpec, action_dim

    cfg = load_config(daemon.config_path, env={})
    spec = ObsSpec.from_config(cfg, mode="pixels", state_dim=STATE_DIM)
    action = ActionSpace(cfg.action, cfg.workspace).spec()
    torch.manual_seed(version)
    policy = Policy(spec, action_dim(action), PRESETS["tiny"])
    return PolicyCheckpoint.from_policy(policy, direction, version, spec, action, PRESETS["tiny"], step=10).to_bytes()


def _put(api: httpx.Client, direction: str, raw: bytes) -> httpx.Response:
    return api.put(f"/policies/{direction}", content=raw, headers={"Content-Type": "application/octet-stream"})


def test_bad_checkpoints_are_refused_and_the_active_policy_stays(daemon: DaemonProc, api: httpx.Client) -> None:
    good = _checkpoint(daemon, "forward", 3)
    r = _put(api, "forward", good)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and r.json()["active"] is True
    before = api.get("/policies").json()
    assert before["forward"]["version"] == 3

    r = _put(api, "forward", b"definitely not a safetensors file" * 10)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]
    r = _put(api, "forward", b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = _put(api, "forward", good)  # the same version again
    assert r.status_code == 409 and "3" in r.json()["detail"]
    r = _put(api, "backward", _checkpoint(daemon, "forward", 4))  # made for the other direction
    assert r.status_code == 422, r.text
    r = api.put("/policies/sideways", content=b"x")
    assert r.status_code == 422 and "direction" in r.json()["detail"]

    after = api.get("/policies").json()
    assert after["forward"] == before["forward"] and after["backward"] is None
    assert after["rejected"] == before["rejected"] + 3  # 400, 409, 422 (the empty body is not a checkpoint)

    # The learned policy that stayed is the one acting.
    r = api.post("/sessions", json={"policy": "learned"})
    assert r.status_code == 201, r.text
    wait_for(lambda: _status(api)["action_source"] == "policy", 5.0, what="the learned policy acting")


# ------------------------------------------------------------------ eval sessions
def _run_eval(api: httpx.Client, episodes: int, horizon: int) -> dict:
    r = api.post("/evals", json={"episodes": episodes, "horizon": horizon})
    assert r.status_code == 201, r.text
    eval_id = r.json()["id"]
    assert api.post("/evals/current/verdict", json={"success": True}).status_code == 409  # sim: the task judges
    return wait_for(lambda: (r := api.get("/evals/last")).status_code == 200 and r.json()["id"] == eval_id
                    and r.json(), 60.0, what="the eval session to end")


def test_eval_sessions_store_verdicts_aggregated_by_policy_version(daemon: DaemonProc, api: httpx.Client) -> None:
    newest = (api.get("/policies").json()["forward"] or {}).get("version", 0)
    versions = [newest + 1, newest + 2]
    before = {r["version"]: r for r in api.get("/evals/results").json()["versions"]}
    assert _put(api, "forward", _checkpoint(daemon, "forward", versions[0])).status_code == 200
    first = _run_eval(api, episodes=2, horizon=4)
    assert _put(api, "forward", _checkpoint(daemon, "forward", versions[1])).status_code == 200
    second = _run_eval(api, episodes=1, horizon=4)
    for summary, n in ((first, 2), (second, 1)):
        assert summary["end_reason"] == "all episodes done" and len(summary["results"]) == n
        assert all(isinstance(r["success"], bool) and r["judged_by"] == "task" for r in summary["results"])

    stored = wait_for(  # the writer thread closes the last episode a moment after the verdict
        lambda: len(e := [e for e in _episodes(api, kind="eval", limit=5000)
                          if e["session"] in (first["id"], second["id"])]) == 3 and e,
        10.0, what="3 eval episodes in the store")
    assert all(isinstance(e["success"], bool) and e["closed"] for e in stored)
    rows = {r["version"]: r for r in api.get("/evals/results").json()["versions"]}
    for version, summary in zip(versions, (first, second), strict=True):
        assert version not in before
        assert rows[version]["episodes"] == len(summary["results"])
        assert rows[version]["successes"] == summary["successes"]
    assert api.get("/evals/current").status_code == 404


# ------------------------------------------------------------------ auth and validation
def _state_changing_routes(api: httpx.Client) -> list[tuple[str, str]]:
    spec = api.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        for method in ops:
            if method in ("post", "put", "patch", "delete"):
                out.append((method.upper(), path.replace("{direction}", "forward")))
    return out


def test_every_state_changing_route_needs_the_token(daemon: DaemonProc, api: httpx.Client) -> None:
    routes = _state_changing_routes(api)
    must_have = {("POST", "/estop"), ("POST", "/sessions"), ("POST", "/demos"), ("POST", "/interventions"),
                 ("PUT", "/policies/forward"), ("POST", "/teleop/keyboard"), ("POST", "/sessions/current/stop")}
    assert must_have <= set(routes)
    with daemon.client(token="") as anon, daemon.client(token="wrong-token-123") as wrong:
        for method, path in routes:
            r = anon.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.status_code)
            assert "bearer" in r.json()["detail"].lower()
            assert r.headers.get("www-authenticate") == "Bearer"
            r = wrong.request(method, path, json={})
            assert r.status_code == 403, (method, path, r.status_code)
    assert _status(api)["mode"] == "idle"  # none of them did anything


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/sessions", {"policy": "banana"}, "policy"),
        ("/sessions", {"policy": "random", "phase_steps": 0}, "phase_steps"),
        ("/sessions", {"policy": "random", "bogus": 1}, "bogus"),
        ("/interventions", {}, "reason"),
        ("/interventions", {"reason": ""}, "reason"),
        ("/demos", {"direction": "sideways"}, "direction"),
        ("/demos/current/finish", {"success": "maybe"}, "success"),
        ("/sessions/current/success", {"direction": "up"}, "direction"),
        ("/evals", {"episodes": 0}, "episodes"),
        ("/evals", {"horizon": "long"}, "horizon"),
        ("/evals", {"episodes": 2, "bogus": 1}, "bogus"),
        ("/evals/current/verdict", {}, "success"),
        ("/teleop/keyboard", {"x": 5}, "x"),
        ("/estop", {"reason": 3}, "reason"),
    ],
)
def test_invalid_body_is_422_naming_the_field(api: httpx.Client, path: str, body: dict, field: str) -> None:
    r = api.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"], r.json()["detail"]
    assert _status(api)["mode"] == "idle"


def test_malformed_json_is_422(api: httpx.Client) -> None:
    r = api.post("/sessions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]
