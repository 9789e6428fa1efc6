"""`replay report STORE -o DIR`: the operator's morning report from a store with known content, written
with the real ReplayWriter and its event log (a practice session with takeovers, help requests, an
e-stop and an arm reflex; evals of two policy versions; a demo), while the writer still holds it open."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from replay.store import EpisodeWriter, ReplayWriter
from replay_tools.cli import app
from robot_server.api.app import create_app
from spec.config import load_config
from tests.store_patterns import pattern_meta, pattern_step

runner = CliRunner()
PERIOD = 0.1  # pattern_meta records at 10 Hz


class KnownStore:
    """Writes episodes whose steps land at chosen wall-clock offsets from one base time."""

    def __init__(self, path: Path) -> None:
        self.writer = ReplayWriter.open(path, pattern_meta(cameras=(("front", 8, 8),)), chunk_steps=16)
        self.base: float | None = None

    def episode(self, kind: str, direction: str, offsets: list[float], attrs: dict[str, Any] | None = None,
                versions: list[int] | None = None, flagged: tuple[float, ...] = ()) -> EpisodeWriter:
        ep = self.writer.begin_episode(kind, direction, attrs or {})
        started_at, started_mono = ep.attrs["started_at"], ep.attrs["started_monotonic"]
        self.base = started_at if self.base is None else self.base
        for i, off in enumerate(offsets):
            self.step(ep, off, started_at, started_mono, -1 if versions is None else versions[i], off in flagged)
        return ep

    def step(self, ep: EpisodeWriter, off: float, started_at: float, started_mono: float, version: int = -1,
             intervention: bool = False) -> None:
        assert self.base is not None
        step = pattern_step(self.writer.meta, 0, 0)
        # The daemon stamps steps with the monotonic clock; this puts the step at base + off on the wall clock.
        step["timestamp"] = started_mono + (self.base + off - started_at)
        step["policy_version"] = version
        step["intervention"] = intervention
        ep.append(step)

    def event(self, off: float, type_: str, **data: Any) -> None:
        assert self.base is not None
        self.writer.append_event({"type": type_, "time": self.base + off, **data})


def _offsets(start: float, stop: float, every: float) -> list[float]:
    return [float(x) for x in np.arange(start, stop + every / 2, every)]


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("report")
    st = KnownStore(tmp / "store.zarr")
    # A demo first (teleop: 20 steps = 2 s), then evals of versions 3 and 5 with stored goal scores.
    st.episode("demo", "forward", _offsets(-4000, -3998.1, PERIOD)).close(success=True)
    evals = [(3, True, 0.9), (3, False, 0.8), (5, True, 0.2), (5, True, 0.6), (5, False, 0.1)]
    for k, (version, success, score) in enumerate(evals):
        off = -3000 + 100 * k
        st.episode("eval", "forward", _offsets(off, off + 1, PERIOD), {"session": "e1", "policy_version": version},
                   versions=[version] * 11).close(success=success, end_reason="eval verdict", goal_score=score)
    st.event(-2500, "intervention", kind="operator", reason="outside practice")
    st.event(-2000, "help_requested", source="eval_verdict", reason="was it done?")  # never resolved
    # Practice session s1: three segments, a step every minute from 0 to 5400 s (1.5 h).
    st.episode("practice", "forward", _offsets(0, 1800, 60), {"session": "s1"},
               versions=[-1] * 10 + [2] * 21, flagged=(600.0, 660.0)).close(end_reason="phase end")
    st.episode("practice", "backward", _offsets(1860, 3540, 60), {"session": "s1"},
               versions=[4] * 29).close(end_reason="arm reflex")
    st.event(300, "intervention", kind="operator", reason="cube stuck")
    st.event(600, "intervention", kind="takeover", reason="spacemouse took over")
    st.event(3000, "help_requested", source="manual_reset", reason="reset the scene")
    st.event(3300, "help_resolved", source="manual_reset")  # 5 min
    st.event(3600, "intervention", kind="manual_reset", reason="reset the scene")
    st.event(4000, "help_requested", source="arm", reason="repeated reflexes")
    st.event(4120, "help_resolved", source="arm")  # 2 min
    st.event(4500, "help_requested", source="forward_no_progress", reason="no success")
    st.event(4600, "help_resolved", source="forward_no_progress")  # clears by itself: not human time
    st.event(5000, "estop", reason="operator")
    st.event(5060, "estop_released")  # 1 min
    # The segment being written: 31 steps committed (flushed), one more still buffered in the writer.
    ep = st.episode("practice", "forward", _offsets(3600, 5400, 60), {"session": "s1"},
                    versions=[2] * 15 + [3] * 16)
    ep.flush()
    st.step(ep, 5460, ep.attrs["started_at"], ep.attrs["started_monotonic"], version=3)
    out = tmp / "reports" / "night1"
    result = runner.invoke(app, ["report", str(st.writer.path), "-o", str(out)])
    yield st, out, result
    st.writer.close()


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def test_report_prints_the_index_path(known) -> None:
    _st, out, result = known
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out / "index.html")
    assert "not recorded" not in result.output  # this store has data for every section


def test_success_per_policy_version_matches_the_eval_verdicts(known) -> None:
    sec = _report(known[1])["sections"]["eval_success"]
    assert sec["recorded"]
    assert [(r["version"], r["episodes"], r["successes"]) for r in sec["rows"]] == [(3, 2, 1), (5, 3, 2)]
    assert sec["rows"][1]["success_rate"] == pytest.approx(2 / 3)


def test_human_minutes_per_practice_hour(known) -> None:
    sec = _report(known[1])["sections"]["practice"]
    practice_h = (5400 + PERIOD) / 3600  # the open segment counts up to its last committed step
    human_min = 5 + 2 + 1 + 2 * PERIOD / 60  # manual reset, arm help, e-stop, two takeover steps
    assert sec["practice_hours"] == pytest.approx(practice_h, abs=1e-4)
    assert sec["human_minutes"] == pytest.approx(human_min, abs=1e-3)
    assert sec["human_minutes_per_practice_hour"] == pytest.approx(human_min / practice_h, abs=1e-3)
    assert sec["human_minutes_by_source"] == pytest.approx(
        {"takeover": 2 * PERIOD / 60, "help:manual_reset": 5.0, "help:arm": 2.0, "estop": 1.0}, abs=1e-3)
    assert sec["interventions"] == 3 and sec["interventions_total"] == 4
    assert sec["interventions_by_kind"] == {"operator": 1, "takeover": 1, "manual_reset": 1}
    assert sec["interventions_per_practice_hour"] == pytest.approx(3 / practice_h, abs=1e-3)
    assert sum(h["practice_minutes"] for h in sec["bins"]) == pytest.approx(practice_h * 60, abs=0.01)
    assert sum(h["human_minutes"] for h in sec["bins"]) == pytest.approx(human_min, abs=0.01)
    assert sum(h["interventions"] for h in sec["bins"]) == 3
    assert sec["demos"] == 1 and sec["demo_teleop_minutes"] == pytest.approx(2.0 / 60, abs=1e-3)
    assert "Human minutes per practice hour = human minutes / practice hours" in sec["definition"]


def test_help_requests_recoveries_and_swaps(known) -> None:
    sections = _report(known[1])["sections"]
    help_ = sections["help_requests"]
    assert help_["requests"] == 4
    assert help_["by_source"]["manual_reset"] == {"requests": 1, "resolved": 1, "still_open": 0,
                                                  "median_wait_s": 300.0, "max_wait_s": 300.0}
    assert help_["by_source"]["eval_verdict"]["still_open"] == 1
    rec = sections["recoveries"]
    assert (rec["arm_cuts"], rec["arm_cuts_by_mode"], rec["arm_help_requests"], rec["estops"]) == (
        1, {"reflex": 1}, 1, 1)
    swaps = [(s["direction"], s["from"], s["to"]) for s in sections["checkpoint_swaps"]["swaps"]]
    assert swaps == [("forward", None, 3), ("forward", 3, 5), ("forward", 5, 2), ("backward", None, 4),
                     ("forward", 2, 3)]


def test_labelled_fp_fn_from_the_scores_stored_with_the_verdicts(known) -> None:
    sections = _report(known[1])["sections"]
    stored = sections["classifier_scores"]["series"]["eval/goal_score (store)"]
    assert [p["value"] for p in stored] == [0.9, 0.8, 0.2, 0.6, 0.1]
    sec = sections["labelled_fp_fn"]
    assert (sec["tp"], sec["fp"], sec["fn"], sec["tn"]) == (2, 1, 1, 1)
    assert sec["fp_rate"] == 0.5 and sec["fn_rate"] == pytest.approx(1 / 3, abs=1e-4)


def test_the_open_segment_is_read_up_to_its_committed_steps(known) -> None:
    overview = _report(known[1])["overview"]
    assert overview["open_episode"] is not None
    assert overview["steps"]["practice"] == 31 + 29 + 31  # not the buffered 32nd step of the open one


def test_index_html_opens_without_a_server(known) -> None:
    out = known[1]
    page = (out / "index.html").read_text()
    report = _report(out)
    assert set(report["plots"]) >= {"eval_success", "practice", "help_requests", "recoveries",
                                    "checkpoint_swaps", "labelled_fp_fn", "tick_health"}
    for png in report["plots"].values():
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'href="{png}"' in page  # the file beside the page, linked relatively
        assert base64.b64encode(data).decode() in page  # and the same image embedded
    assert page.count("data:image/png;base64,") == len(report["plots"])
    assert not re.search(r'(src|href)="(/|https?:)', page)  # nothing to fetch from a server
    assert "not recorded" not in page


def test_tick_health_and_not_recorded_sections(tmp_path: Path) -> None:
    st = KnownStore(tmp_path / "store.zarr")
    # 21 steps: a 120 ms interval (late), a 300 ms one (late, two ticks missed), one of 105 ms (on time).
    gaps = [PERIOD] * 17 + [0.12, 0.3, 0.105]
    st.episode("practice", "forward", [float(x) for x in np.cumsum([0.0, *gaps])], {"session": "s"}).close()
    st.writer.close()
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", str(tmp_path / "store.zarr"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    sections = _report(out)["sections"]
    tick = sections["tick_health"]
    assert (tick["intervals"], tick["late"], tick["missed_ticks"]) == (20, 2, 2)
    assert tick["source"] == "step timestamps" and "no tick_stats event" in tick["definition"]
    assert tick["max_error_ms"] == pytest.approx(200.0, abs=0.01)
    for name in ("eval_success", "classifier_scores", "labelled_fp_fn"):
        assert not sections[name]["recorded"] and sections[name]["why"]
    assert "not recorded: no closed eval episode with a verdict" in (out / "index.html").read_text()


def test_bad_store_gives_a_clear_error(tmp_path: Path, known) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nothing.zarr"), "-o", str(tmp_path / "r")])
    assert result.exit_code != 0 and "no replay store at" in result.output
    assert isinstance(result.exception, SystemExit)  # a usage error, not a traceback
    # A corrupt chunk: the episode is named, no traceback.
    st = KnownStore(tmp_path / "bad.zarr")
    st.episode("practice", "forward", [0.0, 0.1, 0.2], {"session": "s"}).close()
    st.writer.close()
    chunk = next((tmp_path / "bad.zarr" / "episodes" / "000000" / "timestamp" / "c").rglob("*"))
    chunk.write_bytes(b"not a blosc chunk")
    result = runner.invoke(app, ["report", str(tmp_path / "bad.zarr"), "-o", str(tmp_path / "r")])
    assert result.exit_code != 0 and "episode 000000" in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def learner_store(tmp_path_factory: pytest.TempPathFactory):
    """A store with eval verdicts and operator labels, a learner run dir with a saved training state and
    classifier scalars, and the config (a file) naming both."""
    from torch.utils.tensorboard import SummaryWriter

    from learner.trainer import Trainer
    from replay.labels import Label
    from tests.learner_fakes import FakeStore, fake_step, tiny_config

    tmp_path = tmp_path_factory.mktemp("learner")
    cfg = tiny_config(tmp_path)
    st = FakeStore(cfg)
    practice = st.episode("practice", "forward", 20)
    # The operator's labels from the review page: a failure verdict (its last frame), then goal and
    # not-goal frames; the goal frames 15-19 override the verdict's frame 19.
    for label in (Label(practice.id, "failure"), Label(practice.id, "goal", 15, 20), Label(practice.id, "not_goal", 0, 5)):
        st.writer.append_event(label.event())
    for success in (True, False, True):
        ep = st.writer.begin_episode("eval", "forward", {"policy_version": 1})
        for _ in range(5):
            st.t += 0.1
            ep.append(fake_step(cfg, st.t, st.rng, version=1))
        ep.close(success=success, goal_score=None)  # as the daemon records a verdict today
    st.close()
    config = tmp_path / "cfg.json"  # YAML is a superset of JSON
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    tr = Trainer(cfg, tensorboard=False)
    try:
        assert tr.setup() and tr.save() is not None  # untrained classifiers are enough to score frames
    finally:
        tr.close()
    run = Path(cfg.learner.run_dir)
    with SummaryWriter(str(run / "tb")) as tb:
        for step, p in enumerate([0.2, 0.5, 0.9]):
            tb.add_scalar("clf_forward/positive_prob", p, step)
            tb.add_scalar("agent_forward/critic_loss", 1.0, step)  # not a classifier scalar
    return cfg, config, run, practice


def test_learner_run_adds_classifier_scalars_and_scores_the_labelled_set(learner_store, tmp_path: Path) -> None:
    cfg, config, run, practice = learner_store
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--learner-run", str(run)])
    assert result.exit_code == 0, result.output
    sections = _report(out)["sections"]
    series = sections["classifier_scores"]["series"]
    assert list(series) == ["clf_forward/positive_prob"]
    assert [p["value"] for p in series["clf_forward/positive_prob"]] == pytest.approx([0.2, 0.5, 0.9])
    assert not sections["labelled_fp_fn"]["recorded"] and "--config" in sections["labelled_fp_fn"]["why"]

    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--learner-run", str(run),
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    fp_fn = _report(out)["sections"]["labelled_fp_fn"]
    assert fp_fn["recorded"] and fp_fn["labelled"] == fp_fn["scored"] == 13
    assert fp_fn["by_source"] == {"eval_verdict": 3, "operator_verdict": 0, "operator_frames": 10}
    truth = {(i["episode"], i["frame"]): i["goal"] for i in fp_fn["items"]}
    assert [truth[(practice.id, f)] for f in (0, 4, 15, 19)] == [False, False, True, True]
    assert fp_fn["tp"] + fp_fn["fn"] == 2 + 5 and fp_fn["fp"] + fp_fn["tn"] == 1 + 5
    assert set(fp_fn["per_source"]) == {"eval_verdict", "operator_frames"}
    assert all(0.0 <= i["score"] <= 1.0 and "training state" in i["source"] for i in fp_fn["items"])

    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--learner-run", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--learner-run" in result.output


def test_config_names_the_learner_run_dir_and_the_store(learner_store, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` leaves the store and runs/learner: --config alone fills the classifier sections."""
    cfg, config, run, _ = learner_store
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "not recorded" not in result.output
    sections = _report(out)["sections"]
    for name in ("classifier_scores", "labelled_fp_fn"):
        assert sections[name]["recorded"], sections[name]
        assert sections[name]["learner_run"] == f"{run} (learner.run_dir of --config {config})"
    assert sections["labelled_fp_fn"]["scored"] == 13
    # STORE may be left out: the config's store.path is read, as `replay list --config` does.
    result = runner.invoke(app, ["report", "-o", str(tmp_path / "r2"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert _report(tmp_path / "r2")["store"] == str(cfg.store.path)

    # No run dir anywhere: each section names the option that fills it.
    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    sections = _report(out)["sections"]
    assert "--learner-run" in sections["classifier_scores"]["why"] and "--config" in sections["classifier_scores"]["why"]
    assert "--config" in sections["labelled_fp_fn"]["why"]
    assert "not recorded: classifier_scores: " in result.output and "--learner-run" in result.output
    # A config whose learner.run_dir does not exist says so, and which option to give instead.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(cfg.model_dump(mode="json") | {
        "learner": cfg.model_dump(mode="json")["learner"] | {"run_dir": str(tmp_path / "no-run")}}))
    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--config", str(other)])
    assert result.exit_code == 0, result.output
    why = _report(out)["sections"]["classifier_scores"]["why"]
    assert str(tmp_path / "no-run") in why and "does not exist" in why and "give --learner-run" in why
    # A packaged config's name is accepted as by the other verbs (`replay list --config sim`).
    monkeypatch.chdir(tmp_path)  # where sim's runs/learner does not exist
    result = runner.invoke(app, ["report", str(cfg.store.path), "-o", str(out), "--config", "sim"])
    assert result.exit_code == 0, result.output
    assert "learner.run_dir of --config sim" in _report(out)["sections"]["classifier_scores"]["why"]


def _practice_store(path: Path, minutes: float, interventions: tuple[float, ...] = ()) -> Path:
    """A store with one practice session of `minutes` (a step a second, so every interval is late at
    10 Hz: the binning is checked, not the ticks) and intervention events at offsets."""
    st = KnownStore(path)
    st.episode("practice", "forward", _offsets(0, minutes * 60, 1.0), {"session": "s"}).close()
    for off in interventions:
        st.event(off, "intervention", kind="operator", reason="cube stuck")
    st.writer.close()
    return path


def test_a_short_session_is_binned_in_minutes(tmp_path: Path) -> None:
    from replay_tools.intervals import choose_bin_s

    store = _practice_store(tmp_path / "store.zarr", 6.0, interventions=(30.0, 200.0))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", str(store), "-o", str(out)]).exit_code == 0
    report = _report(out)
    assert (report["bin"], report["bin_s"]) == ("1-minute", 60.0)
    for name in ("practice", "tick_health"):
        sec = report["sections"][name]
        assert (sec["bin"], sec["bin_s"]) == ("1-minute", 60.0)
        starts = [b["start"] for b in sec["bins"]]
        assert len(starts) in (6, 7) and all(b - a == 60.0 for a, b in zip(starts, starts[1:], strict=False))
    practice = report["sections"]["practice"]
    assert sum(b["practice_minutes"] for b in practice["bins"]) == pytest.approx(6.0 + PERIOD / 60, abs=1e-3)  # up to the last step + a period
    assert sum(b["interventions"] for b in practice["bins"]) == 2
    assert sum(b["intervals"] for b in report["sections"]["tick_health"]["bins"]) == 360
    # 10-minute bins up to a few hours (the known store: 2.6 h), clock hours for a night.
    assert choose_bin_s(2.6 * 3600) == 600.0
    assert choose_bin_s(3 * 3600) == 600.0 and choose_bin_s(13 * 3600) == 3600.0 and choose_bin_s(80 * 3600) == 3600.0


def test_no_intervention_gives_count_axes_from_zero(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from replay_tools.plots import plot_figure

    store = _practice_store(tmp_path / "store.zarr", 4.0)
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", str(store), "-o", str(out)]).exit_code == 0
    report = _report(out)
    sec = report["sections"]["practice"]
    assert sec["interventions"] == 0 and sec["human_minutes"] == 0
    assert "practice" in report["plots"]
    fig = plot_figure("practice", sec)
    try:
        rate_ax, count_ax = fig.axes
        for ax in (rate_ax, count_ax):
            bottom, top = ax.get_ylim()
            assert bottom == 0 and top >= 1  # not -0.04..0.04 around the one point
        assert all(float(t) == int(t) for t in count_ax.get_yticks() if 0 <= t <= count_ax.get_ylim()[1])
        texts = [t.get_text() for t in rate_ax.texts]
        assert "0 interventions, 0 human minutes in 4.0 min of practice" in texts
    finally:
        plt.close(fig)
    # The tick-health counts (no late interval, no missed tick here) start at 0 as well.
    fig = plot_figure("tick_health", report["sections"]["tick_health"])
    try:
        assert all(ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 0 for ax in fig.axes)
    finally:
        plt.close(fig)


def test_classifier_scores_have_one_panel_per_classifier() -> None:
    import matplotlib.pyplot as plt

    from replay_tools.plots import plot_figure

    series = {f"clf_{d}/{m}": [{"time": 1e9 + i, "step": i, "value": 0.5} for i in range(3)]
              for d in ("forward", "backward") for m in ("positive_prob", "train_accuracy", "loss")}
    fig = plot_figure("classifier_scores", {"title": "t", "recorded": True, "series": series})
    try:
        forward, backward = fig.axes
        assert "forward" in forward.get_title() and "backward" in backward.get_title()
        for ax in (forward, backward):
            styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
            assert styles == {"positive_prob": "-", "train_accuracy": "--"}  # losses stay in report.json
            legend = ax.get_legend()
            assert legend is not None and legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1
    finally:
        plt.close(fig)


def test_demo_ends_with_the_report_and_survives_its_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`make demo` writes the report of the store and run dir it used, and a failing report only prints."""
    from robot_server.demo import write_report

    store = _practice_store(tmp_path / "store.zarr", 1.0)
    env = {**os.environ, "ROBOT__STORE__PATH": str(store), "ROBOT__LEARNER__RUN_DIR": str(tmp_path / "no-run")}
    cfg = load_config("sim", env=env)
    index = write_report(cfg, Path("sim"), env, tmp_path / "demo-report")
    printed = capsys.readouterr().out
    assert index == tmp_path / "demo-report" / "index.html" and index.is_file()
    assert f"morning report: {index}" in printed
    assert "not recorded: classifier_scores" in printed and "does not exist: give --learner-run" in printed

    bad = load_config("sim", env={**env, "ROBOT__STORE__PATH": str(tmp_path / "nothing.zarr")})
    assert write_report(bad, Path("sim"), env, tmp_path / "bad-report") is None
    printed = capsys.readouterr().out
    assert "morning report: not written" in printed and "no replay store at" in printed


# ------------------------------------------------------------------ GET /reports/latest (operator API)
API_TOKEN = "report-test-token-123"


class _Daemon:
    """The part of the daemon the report routes use: its config."""

    def __init__(self, reports_dir: Path, read_access: str) -> None:
        self.cfg = load_config("sim", env={"ROBOT__SERVER__REPORTS_DIR": str(reports_dir),
                                           "ROBOT__SERVER__TOKEN": API_TOKEN,
                                           "ROBOT__SERVER__READ_ACCESS": read_access})


def _client(reports_dir: Path, read_access: str = "open") -> TestClient:
    return TestClient(create_app(_Daemon(reports_dir, read_access)))


def test_api_serves_the_latest_report_and_404s_without_one(known, tmp_path: Path) -> None:
    st, night1, _ = known
    empty = _client(tmp_path / "no-reports")
    r = empty.get("/reports/latest/")
    assert r.status_code == 404 and "no report yet in" in r.json()["detail"]
    assert empty.get("/reports/latest/report.json").status_code == 404

    night2 = night1.parent / "night2"
    assert runner.invoke(app, ["report", str(st.writer.path), "-o", str(night2)]).exit_code == 0
    os.utime(night1 / "index.html", (1e9, 1e9))  # night1 is the older report
    api = _client(night1.parent)
    r = api.get("/reports/latest")  # redirected to /reports/latest/, where the page's relative links work
    assert r.status_code == 200 and r.url.path == "/reports/latest/"
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == (night2 / "index.html").read_text()
    assert api.get("/reports/latest/report.json").json() == _report(night2)
    png = api.get("/reports/latest/practice.png")
    assert png.status_code == 200 and png.content == (night2 / "practice.png").read_bytes()
    assert api.get("/reports/latest/nothing.png").status_code == 404
    assert api.get("/reports/latest/index.py").status_code == 422  # only plots and report.json
    assert api.get("/reports/latest/..%2F..%2Fstore.zarr%2Fzarr.json").status_code in (404, 422)
    assert 'href="/reports/latest/"' in api.get("/").text  # the operator page links it


def test_api_report_follows_read_protection(known) -> None:
    api = _client(known[1].parent, read_access="token")
    assert api.get("/reports/latest/").status_code == 401
    r = api.get("/reports/latest/", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert r.status_code == 200 and "Morning report" in r.text
