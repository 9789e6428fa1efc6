"""The episode review page in headless Debian chromium (Playwright), against a real daemon subprocess:
pick a recorded episode, play it, scrub the score plot, label a frame range as goal, and find the
label in the store's event log."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import httpx
import pytest

from replay.store import ReplayReader, StoreMeta
from tests.daemon_proc import DaemonProc, running_daemon, wait_for
from tests.test_review_api import classifier_bytes
from tests.test_web_page import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh --test)"),
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with running_daemon(tmp_path_factory.mktemp("review-daemon")) as d:
        yield d


@pytest.fixture(scope="module")
def episode(daemon: DaemonProc) -> Iterator[dict]:
    """A closed practice episode of the random policy, scored by both classifiers."""
    # A long timeout: the daemon's first classifier upload also imports torch's decompositions.
    with daemon.client(timeout=90.0) as api:
        assert api.post("/sessions", json={"policy": "random"}).status_code == 201
        wait_for(lambda: (api.get("/status").json().get("session") or {}).get("total_steps", 0) >= 30, 60.0,
                 what="30 practice steps")
        assert api.post("/sessions/current/stop").status_code == 200
        eps = wait_for(lambda: api.get("/episodes", params={"kind": "practice"}).json()["episodes"], 60.0,
                       what="a closed practice episode")
        spec = StoreMeta.from_attrs(ReplayReader(daemon.store_path).meta).obs_spec()
        for direction in ("forward", "backward"):
            r = api.put(f"/classifiers/{direction}", content=classifier_bytes(spec, direction, 1),
                        headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 200, r.text
        yield eps[0]


@pytest.fixture(scope="module")
def page(daemon: DaemonProc):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1366, "height": 1000}, timeout=WAIT_MS,
        )
        try:
            ctx.set_default_timeout(WAIT_MS)
            pg = ctx.pages[0] if ctx.pages else ctx.new_page()
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.goto(daemon.url + "/", wait_until="domcontentloaded")
            pg.click("a[href='/static/review.html']")  # the operator page links to the review page
            pg.wait_for_selector("#episode-list")
            yield pg
        finally:
            ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def plot_x(page):
    """Page x of a fraction of the plot's width (0: just inside its left edge, 1: its right edge)."""
    page.locator("#plot").scroll_into_view_if_needed()
    box = page.locator("#plot").bounding_box()
    return lambda f: box["x"] + 3 + f * (box["width"] - 6)


def plot_y(page) -> float:
    box = page.locator("#plot").bounding_box()
    return box["y"] + box["height"] / 2


def step_now(page) -> int:
    return int(page.text_content("#step-now") or "-1")


def test_review_page_plays_scrubs_and_labels_an_episode(page, daemon: DaemonProc, episode: dict) -> None:
    ep_id, n = episode["id"], episode["length"]
    page.fill("#token", daemon.token)
    page.click("#save-token")
    page.fill("#who", "ana")

    # Pick the recorded episode (the filter keeps practice episodes).
    page.select_option("#f-kind", "practice")
    page.click(f"#episode-list tbody tr[data-id='{ep_id}']")
    page.wait_for_function(f"document.getElementById('step-last').textContent === '{n - 1}'")
    assert "goal v1" in (page.text_content("#clf-info") or "")
    page.wait_for_function(  # both stored views drawn (64x64 policy views of configs/sim.yaml)
        "[...document.querySelectorAll('#views canvas')].map(c => c.width).join() === '64,64'")
    assert "(v1)" in (page.text_content("#f-score-forward") or "")
    assert "(v1)" in (page.text_content("#f-score-backward") or "")

    # Play: the step counter advances; pause stops it. At 0.25x (2.5 steps/s) playback is still
    # running when the pause click lands on a busy machine, not already over.
    page.select_option("#speed", "0.25")
    page.click("#btn-play")
    assert page.text_content("#btn-play") == "Pause"
    page.wait_for_function("Number(document.getElementById('step-now').textContent) >= 2")
    page.click("#btn-play")
    paused = step_now(page)
    page.wait_for_timeout(400)
    assert step_now(page) == paused and page.text_content("#btn-play") == "Play"

    # Scrub the plot: its left edge is step 0, its right edge the last step, dragging moves the cursor.
    x, y = plot_x(page), plot_y(page)
    page.mouse.move(x(0.0), y)
    page.mouse.down()
    assert step_now(page) == 0
    page.mouse.move(x(1.0), y, steps=5)
    assert step_now(page) == n - 1
    page.mouse.move(x(0.3), y, steps=5)
    page.mouse.up()
    start = step_now(page)
    assert 0 < start < n - 1
    page.click("#btn-range-start")
    page.mouse.click(plot_x(page)(0.6), plot_y(page))  # the click above may have scrolled the page
    end = step_now(page)
    assert start < end < n - 1
    page.click("#btn-range-end")
    assert page.text_content("#range") == f"frames {start}–{end} ({end - start + 1})"

    # Label the range goal: stored as an event with who and when; the overlay shows it.
    page.click("#btn-goal")
    page.wait_for_selector("#message.ok")
    page.wait_for_function(f"document.getElementById('goal-frames').textContent === '{start}–{end}'")
    assert f"goal frames {start}–{end} by ana" in (page.text_content("#label-history") or "")
    labels = [e for e in ReplayReader(daemon.store_path).events() if e["type"] == "label" and e["episode"] == ep_id]
    assert [(e["verdict"], e["start"], e["stop"], e["who"]) for e in labels] == [("goal", start, end + 1, "ana")]
    assert labels[0]["time"] > 0

    # The episode verdict, too.
    page.click("#btn-failure")
    page.wait_for_function("document.getElementById('verdict').textContent === 'failure'")
    with httpx.Client(base_url=daemon.url) as api:
        assert api.get(f"/episodes/{ep_id}/labels").json()["verdict"] == "failure"
