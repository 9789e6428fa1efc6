"""Who may read: a daemon bound beyond loopback (0.0.0.0 here, on a free port, for a few seconds)
wants the token on every read by default, and its OpenAPI document says so. Loopback, where reads
stay open, is checked in test_api.py; schemathesis runs every check in test_api_fuzz.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.daemon_proc import DaemonProc, running_daemon

pytestmark = pytest.mark.timeout(240)  # the first test also waits for the daemon to start

# Values that reach each read's own logic once the token is accepted.
PATH_VALUES = {"name": "wrist", "episode_id": "000000", "step": 0}
QUERY = {"/cameras/{name}/stream": {"max_frames": 1}, "/calibration/handeye/samples": {"camera": "wrist"}}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    # server.read_access stays at its default (auto): the bind alone closes the reads.
    with running_daemon(tmp_path_factory.mktemp("lan-daemon"), overrides={"server": {"host": "0.0.0.0"}}) as d:
        yield d


def _reads(doc: dict) -> dict[str, dict]:
    return {path: item["get"] for path, item in doc["paths"].items() if "get" in item}


def test_every_read_but_health_needs_the_token(daemon: DaemonProc) -> None:
    with daemon.client(token="") as anon, daemon.client(token="wrong-token-123") as wrong, daemon.client() as ok:
        doc = anon.get("/openapi.json").json()
        reads = _reads(doc)
        assert len(reads) > 15
        assert {p for p, op in reads.items() if "security" not in op} == {"/health"}
        assert anon.get("/health").status_code == 200
        for path, op in reads.items():
            if path == "/health":
                continue
            assert {"401", "403"} <= set(op["responses"]), path
            url = path.format(**PATH_VALUES)
            params = QUERY.get(path, {})
            r = anon.get(url, params=params)
            assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer", (path, r.status_code)
            assert wrong.get(url, params=params).status_code == 403, path
            # With it the read is answered (404/409/503 are the route's own answers, documented).
            r = ok.get(url, params=params)
            assert r.status_code not in (401, 403) and str(r.status_code) in op["responses"], (path, r.status_code)


def test_the_stream_takes_the_token_as_a_query_parameter_and_nothing_else_does(daemon: DaemonProc) -> None:
    # An <img> cannot send a header: ?token= is accepted there (and on the WebSocket) only.
    stream = "/cameras/wrist/stream"
    with daemon.client(token="") as anon, daemon.client() as ok:
        r = anon.get(stream, params={"max_frames": 1, "token": daemon.token})
        assert r.status_code == 200 and r.content.count(b"Content-Type: image/jpeg") == 1
        assert anon.get(stream, params={"max_frames": 1, "token": "wrong-token-123"}).status_code == 403
        assert anon.get(stream, params={"max_frames": 1}).status_code == 401
        assert ok.get(stream, params={"max_frames": 1}).status_code == 200  # the header works too
        assert anon.get("/status", params={"token": daemon.token}).status_code == 401
        assert anon.get("/cameras/wrist/snapshot", params={"token": daemon.token}).status_code == 401


def test_telemetry_needs_the_token(daemon: DaemonProc) -> None:
    with pytest.raises(InvalidStatus), ws_connect(f"{daemon.ws_url}/telemetry", open_timeout=20):
        pass
    with ws_connect(f"{daemon.ws_url}/telemetry?interval=0.1&token={daemon.token}", open_timeout=20) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "telemetry"


def test_the_served_document_declares_the_token_on_reads(daemon: DaemonProc) -> None:
    doc = httpx.get(f"{daemon.url}/openapi.json", timeout=5).json()
    assert doc["paths"]["/status"]["get"]["security"] == [{"HTTPBearer": []}]
    assert doc["paths"]["/cameras/{name}/stream"]["get"]["security"] == [{"HTTPBearer": []}, {"TokenQuery": []}]
    assert set(doc["components"]["securitySchemes"]) == {"HTTPBearer", "TokenQuery"}
    assert "Reads need it too" in doc["info"]["description"]


def test_bodies_take_integral_floats_as_integers_inside_dicts_too() -> None:
    # JSON Schema counts 7676.0 as an integer: the learner's backlog counts may arrive so.
    from pydantic import ValidationError

    from robot_server.api.models import LearnerReport

    report = LearnerReport.model_validate({"step": 3.0, "metrics": {"a": 1.0}, "buffered": {"backward": 7676.0}})
    assert report.step == 3 and report.buffered == {"backward": 7676} and report.metrics == {"a": 1.0}
    with pytest.raises(ValidationError, match="buffered.backward"):
        LearnerReport.model_validate({"step": 3, "buffered": {"backward": 7676.5}})
