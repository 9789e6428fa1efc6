"""The operator page in headless Debian chromium (Playwright), against a real daemon subprocess."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemon_proc import DaemonProc, running_daemon, settled_position, wait_for

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("PAGE_SCREENSHOT", "/tmp/page.png"))
WAIT_MS = 15_000  # every Playwright wait is bounded by this

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh --test)"),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these chromium tries to reach Google hosts, which an offline machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    # Reads need the token, as on any bind beyond loopback: the page must send it on every read,
    # the <img> MJPEG streams included. (On loopback reads are open and it needs nothing more.)
    overrides = {"server": {"read_access": "token"}}
    with running_daemon(tmp_path_factory.mktemp("page-daemon"), overrides=overrides) as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: DaemonProc) -> Iterator[httpx.Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="module")
def page(daemon: DaemonProc):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1366, "height": 900},
            timeout=WAIT_MS,
        )
        try:
            ctx.set_default_timeout(WAIT_MS)
            ctx.set_default_navigation_timeout(WAIT_MS)
            pg = ctx.pages[0] if ctx.pages else ctx.new_page()
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            # The MJPEG streams never finish: wait for the DOM, not for "load" of every resource.
            pg.goto(daemon.url + "/", wait_until="domcontentloaded", timeout=WAIT_MS)
            yield pg
        finally:
            ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _status(api: httpx.Client) -> dict:
    return api.get("/status").json()


def _number(page, selector: str) -> float:
    txt = page.text_content(selector, timeout=WAIT_MS) or ""
    try:
        return float(txt)
    except ValueError:
        return -1.0


def test_operator_page_drives_the_robot(page, daemon: DaemonProc, api: httpx.Client) -> None:
    # Without the token the page can read nothing, and says why.
    page.wait_for_function("document.getElementById('cameras').textContent.includes('missing bearer token')",
                           timeout=WAIT_MS)
    # The token is kept in localStorage and sent with every request.
    page.fill("#token", daemon.token)
    page.click("#save-token")
    assert page.evaluate("localStorage.getItem('robot-server-token')") == daemon.token
    page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=WAIT_MS)

    # Both camera views show real pictures.
    page.wait_for_function(
        """() => { const imgs = [...document.querySelectorAll('#cameras img')];
                   return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        timeout=WAIT_MS,
    )
    sizes = page.evaluate("[...document.querySelectorAll('#cameras img')].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sorted(sizes) == [[64, 64], [64, 64]]  # the cropped (policy) views of configs/sim.yaml
    # Live MJPEG streams with the token in their URL, not the snapshot fallback.
    captions = page.evaluate("[...document.querySelectorAll('#cameras figcaption')].map(c => c.textContent)")
    assert all(c.endswith("live stream") for c in captions), captions
    srcs = page.evaluate("[...document.querySelectorAll('#cameras img')].map(i => i.src)")
    assert all("/stream?" in s and f"token={daemon.token}" in s for s in srcs), srcs
    page.check("input[name=view][value=full]")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#cameras img')].every(i => i.naturalWidth > 64)""",
        timeout=WAIT_MS,
    )

    # Start a session from the page; the API sees it running.
    page.select_option("#policy", "random")
    page.click("#btn-start")
    wait_for(lambda: _status(api)["mode"] == "practice", 10.0, what="session running")
    assert _status(api)["session"]["params"]["policy"] == "random"
    page.wait_for_selector("#message.ok", timeout=WAIT_MS)

    # Telemetry numbers move on the page.
    page.wait_for_function("Number(document.getElementById('s-steps').textContent) > 0", timeout=WAIT_MS)
    steps0, ticks0 = _number(page, "#s-steps"), _number(page, "#t-ticks")
    page.wait_for_function(
        f"Number(document.getElementById('s-steps').textContent) > {steps0} && "
        f"Number(document.getElementById('t-ticks').textContent) > {ticks0}",
        timeout=WAIT_MS,
    )
    assert page.text_content("#mode") == "practice"

    # E-stop from the page.
    page.click("#btn-estop")
    wait_for(lambda: _status(api)["mode"] == "estop", 5.0, what="e-stop via the page")
    assert _status(api)["arm"]["mode"] == "stopped"
    page.wait_for_selector("#estop-banner", state="visible", timeout=WAIT_MS)
    page.wait_for_function("document.getElementById('arm-mode').textContent === 'stopped'", timeout=WAIT_MS)

    # An API refusal is shown to the operator with the server's reason.
    page.click("#btn-start")
    page.wait_for_selector("#message.error", timeout=WAIT_MS)
    assert "emergency stop is active" in (page.text_content("#message") or "")

    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.click("#btn-release")
    wait_for(lambda: _status(api)["mode"] == "practice", 5.0, what="released into the paused session")
    page.wait_for_selector("#estop-banner", state="hidden", timeout=WAIT_MS)
    page.click("#btn-stop")
    wait_for(lambda: _status(api)["mode"] == "idle", 5.0, what="session stopped via the page")

    # The stopped session's segments appear in the episodes table.
    page.wait_for_function(
        "[...document.querySelectorAll('#episodes tbody td')].some(td => td.textContent === 'practice')",
        timeout=WAIT_MS,
    )


def test_eval_from_the_page_shows_success_per_policy_version(page, daemon: DaemonProc, api: httpx.Client) -> None:
    from tests.test_api import _checkpoint, _put

    wait_for(lambda: _status(api)["mode"] == "idle", 5.0, what="idle")
    version = (api.get("/policies").json()["forward"] or {}).get("version", 0) + 1
    assert _put(api, "forward", _checkpoint(daemon, "forward", version)).status_code == 200
    page.fill("#eval-episodes", "2")
    page.fill("#eval-horizon", "3")
    page.click("#btn-eval-start")
    wait_for(lambda: api.get("/evals/last").status_code == 200, 30.0, what="the eval started on the page to end")
    last = api.get("/evals/last").json()
    assert last["episodes"] == 2 and last["horizon"] == 3 and len(last["results"]) == 2
    # The results table refreshes when the store closes episodes.
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('#eval-results tbody tr')].some(
                 tr => tr.cells[0].textContent === 'v{version}' && tr.cells[1].textContent === '2')""",
        timeout=WAIT_MS,
    )


def test_keyboard_teleop_jogs_the_arm_only_when_enabled(page, api: httpx.Client) -> None:
    wait_for(lambda: _status(api)["mode"] == "idle", 5.0, what="idle")
    page.click("h1")  # focus off the inputs
    x0 = settled_position(api)[0]
    key, sign = ("s", 1.0) if x0 < 0.525 else ("w", -1.0)  # S: toward the operator, +x

    page.keyboard.down(key)
    time.sleep(0.6)
    page.keyboard.up(key)
    time.sleep(0.3)
    assert abs(_status(api)["arm"]["position"][0] - x0) < 0.003, "keys moved the arm with teleop off"

    page.check("#kb-enable")
    page.keyboard.down(key)
    try:
        wait_for(lambda: (_status(api)["arm"]["position"][0] - x0) * sign > 0.01, 5.0, what="arm jogged")
    finally:
        page.keyboard.up(key)

    # Space toggles the gripper (and not the focused checkbox).
    closed = _status(api)["teleop"]["keyboard"]["gripper_closed"]
    page.keyboard.press(" ")
    wait_for(lambda: _status(api)["teleop"]["keyboard"]["gripper_closed"] is (not closed), 5.0,
             what="gripper toggled by space")
    assert page.is_checked("#kb-enable")
    page.uncheck("#kb-enable")


def test_wrong_token_is_reported(page, daemon: DaemonProc, api: httpx.Client) -> None:
    page.fill("#token", "not-the-token")
    page.click("#save-token")
    page.click("#btn-start")
    page.wait_for_function(
        "document.getElementById('message').textContent.includes('403')", timeout=WAIT_MS
    )
    assert "wrong bearer token" in (page.text_content("#message") or "")
    assert _status(api)["mode"] == "idle"
