"""Schemathesis with every check (`st run --checks all`) against a running daemon: the API keeps
the contract its OpenAPI document states, with the token and without it.

"Every check" means more than "no 5xx": replies match their schemas, status codes and media types
are documented, schema-valid requests are accepted and invalid ones refused, and an operation that
declares the token refuses requests without it. The run uses the repository's schemathesis.toml
(the endless MJPEG stream left out, real camera names, the checkpoint upload's refusals); the
WebSocket is not part of the document.

The daemon runs with `read_access: token`, which is what any bind beyond loopback gets by
default, so the token-less run shows every route but /health refusing it; loopback, where reads
are open, is checked in test_api.py and test_api_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spec.config import load_config
from tests.daemon_proc import REPO, START_TIMEOUT_S, DaemonProc, child_environment, running_daemon

MAX_EXAMPLES = 10  # per operation and phase: a run takes about a minute on 2 cores
SEED = 20261203  # the same cases every run: a failure here is reproducible with `st run --seed`
RUN_TIMEOUT_S = 420  # only a guard against a hung run: 2 cores shared with a benchmark are 4x slower

pytestmark = pytest.mark.timeout(START_TIMEOUT_S + RUN_TIMEOUT_S + 30)  # the first test starts the daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with running_daemon(tmp_path_factory.mktemp("fuzz-daemon"), overrides={"server": {"read_access": "token"}}) as d:
        yield d


def schemathesis_run(daemon: DaemonProc, workdir: Path, token: str | None) -> dict[str, Any]:
    """`st run --checks all` against the daemon's served document; its JSON report."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "report.json"
    # The server builds its document once, on the first request: do that here, with room for a
    # busy machine, rather than inside schemathesis's fixed 10 s schema-loading timeout.
    with daemon.client(token=token or "") as client:
        assert client.get("/openapi.json", timeout=120).status_code == 200
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(REPO / "schemathesis.toml"), "--no-color",
        "run", f"{daemon.url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "15",
        "--generation-database", "none",
        "--report", "json", "--report-json-path", str(report),
    ]
    if token is not None:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    # Run in `workdir`: schemathesis keeps a cache directory where it runs.
    proc = subprocess.run(cmd, cwd=workdir, env=child_environment(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    if not report.exists():
        pytest.fail(f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(report.read_text())
    failures = [f"{f['code']} {f['title']}: {f['count']} in {f['operations']}" for f in result["failures"]]
    assert proc.returncode == 0 and not failures and not result["errors"], (
        "\n".join(failures) + f"\nerrors: {result['errors']}\n\n" + proc.stdout[-6000:]
    )
    assert result["operations"]["tested"] == result["operations"]["selected"] > 40
    return result


def _fuzzed_operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """"METHOD /path" -> operation, without the stream (schemathesis.toml leaves it out)."""
    return {f"{method.upper()} {path}": op for path, item in doc["paths"].items() for method, op in item.items()
            if not path.endswith("/stream")}


def test_every_check_passes_with_the_token(daemon: DaemonProc, tmp_path: Path) -> None:
    result = schemathesis_run(daemon, tmp_path, daemon.token)
    assert not result["warnings"]["missing_auth"], "the token was refused somewhere"


def test_every_check_passes_without_the_token(daemon: DaemonProc, tmp_path: Path) -> None:
    result = schemathesis_run(daemon, tmp_path, None)
    # schemathesis lists what answered only 401/403: that must be every operation that declares
    # the token, which here is every one but /health.
    ops = _fuzzed_operations(httpx.get(f"{daemon.url}/openapi.json", timeout=5).json())
    protected = {name for name, op in ops.items() if op.get("security")}
    assert set(result["warnings"]["missing_auth"]) == protected
    assert set(ops) - protected == {"GET /health"}


def test_served_document_is_the_one_for_its_config(daemon: DaemonProc) -> None:
    from robot_server.api.app import create_app

    served = httpx.get(f"{daemon.url}/openapi.json", timeout=5).json()
    assert served == create_app(None, load_config(daemon.config_path, env={}).server).openapi()
    assert served["paths"]["/status"]["get"]["security"] == [{"HTTPBearer": []}]
    stream = served["paths"]["/cameras/{name}/stream"]["get"]
    assert stream["security"] == [{"HTTPBearer": []}, {"TokenQuery": []}]


def test_daemon_survives_the_fuzzing(daemon: DaemonProc) -> None:
    # Runs after the fuzz tests (same module, file order): the control loop must still be alive.
    r = httpx.get(f"{daemon.url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["control_loop_alive"] is True
    assert daemon.alive()
