"""Schemathesis over the whole OpenAPI surface of a running daemon: no input gives a 5xx.

Requests carry the bearer token, so state-changing routes are really exercised (sessions start,
e-stops fire, garbage checkpoints arrive) against the sim arm. The endless MJPEG stream is left
out (test_api.py covers it with max_frames); the WebSocket is not part of the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.daemon_proc import DaemonProc, running_daemon

MAX_EXAMPLES = 15

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with running_daemon(tmp_path_factory.mktemp("fuzz-daemon")) as d:
        yield d


def _schema():
    # The document comes from the app itself, so the tests can be collected before the daemon
    # runs (schemathesis' lazy from_fixture loader does not work with pytest 9);
    # test_served_schema_is_the_one_fuzzed checks that the daemon serves the same document.
    from robot_server.api.app import create_app

    config = schemathesis.Config.from_dict(
        {
            "request-timeout": 15,
            "generation": {"max-examples": MAX_EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_dict(create_app(None).openapi(), config=config).exclude(path_regex=r"/stream$")


schema = _schema()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, daemon: DaemonProc) -> None:
    case.call_and_validate(
        base_url=daemon.url, headers={"Authorization": f"Bearer {daemon.token}"}, checks=[not_a_server_error]
    )


def test_served_schema_is_the_one_fuzzed(daemon: DaemonProc) -> None:
    from robot_server.api.app import create_app

    served = httpx.get(f"{daemon.url}/openapi.json", timeout=5).json()
    assert served == create_app(None).openapi()


def test_daemon_survives_the_fuzzing(daemon: DaemonProc) -> None:
    # Runs after the fuzz test (same module, file order): the control loop must still be alive.
    r = httpx.get(f"{daemon.url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["control_loop_alive"] is True
    assert daemon.alive()
