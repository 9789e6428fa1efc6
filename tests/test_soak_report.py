"""bench/soak.py's verdicts from its samples: what the reviewer reads after an hour must be right."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import soak_report  # noqa: E402
from bench.soak import inject_specs, parse_args  # noqa: E402
from bench.soak_rig import LogWatch  # noqa: E402


def _sample(t_s: float, ticks: int, late: int, p99: float, rss: dict[str, float | None]) -> dict:
    return {"t_s": t_s, "tick": {"ticks": ticks, "late": late, "skipped": 0, "overruns": 0, "period_error_ms_p99": p99},
            "rss_mb": {"daemon": None, "render": None, "learner": None} | rss, "store_mb": t_s / 60,
            "committed_steps": ticks}


def test_tick_health_counts_a_restarted_daemon_from_zero_and_flags_late_ticks_and_drift():
    samples = [
        _sample(300, 3000, 3, 2.0, {}),
        _sample(600, 6000, 6, 2.5, {}),
        _sample(700, 400, 1, 2.0, {}),  # the daemon restarted: its counters began again
        _sample(1200, 5400, 200, 9.0, {}),
    ]
    w0, w1 = soak_report.tick_health(samples, 600)
    assert (w0["ticks"], w0["late"], w0["pass"]) == (6000, 6, True)
    assert (w1["ticks"], w1["late"]) == (400 + 5000, 1 + 199)
    assert w1["late_fraction"] == pytest.approx(200 / 5400, abs=1e-5)
    assert w1["period_error_ms_p99_max"] == 9.0 and not w1["pass"]  # too many late ticks, p99 drifted


def test_rss_growth_holds_each_process_to_its_baseline():
    samples = [_sample(60 * m, 600 * m, 0, 1.0, {"daemon": 400.0, "render": 200.0,
                                                 "learner": 300.0 + (100.0 if m > 10 else 0.0)})
               for m in range(1, 21)]
    rss = soak_report.rss_growth(samples, minutes=20, baseline_min=10, bound=0.2)
    assert rss["daemon"]["pass"] and rss["render"]["pass"] and rss["daemon"]["growth"] == 0
    assert rss["learner"]["growth"] == pytest.approx(1 / 3, abs=1e-3) and not rss["learner"]["pass"]
    short = soak_report.rss_growth(samples[:5], minutes=5, baseline_min=10, bound=0.2)
    assert short["baseline_shortened"] and short["baseline_end_s"] == 150


def _result(faults: list[dict], instances: list[dict]) -> dict:
    args = argparse.Namespace(minutes=20, health_window_min=10, baseline_min=10, rss_growth=0.2,
                              recovery_timeout_s=600, device_faults=False)
    samples = [_sample(60 * m, 600 * m, 0, 1.0, {"daemon": 400.0, "render": 200.0, "learner": 300.0})
               for m in range(1, 21)]
    return soak_report.build(args=args, inject=[], samples=samples, faults=faults, device_faults=[],
                             instances=instances, unexpected=[], sampler_errors=[], chunk_steps=16,
                             rate_hz=10.0, end_unix=0.0)


def _fault(kind: str, lost: int | None, signal: str | None = None, recovery: float | None = 30.0) -> dict:
    detail = {"signal": signal} if signal else {}
    return {"kind": kind, "at_s": 100.0, "detection_s": 1.0, "recovery_s": recovery, "steps_lost": lost,
            "detail": detail}


def _inst(sig: str, lost: int) -> dict:
    return {"end_signal": sig, "lost": lost}


def test_steps_lost_at_a_kill9_within_its_bound_pass_anywhere_else_they_fail():
    faults = [_fault("learner_kill9", 0), _fault("daemon_restart", 9, "SIGKILL"), _fault("network_cut", 0)]
    ok = _result(faults, [_inst("SIGKILL", 9), _inst("SIGTERM", 0)])
    assert ok["pass"], ok["checks"]
    assert ok["steps_lost"]["total"] == 9 and ok["steps_lost"]["outside_kill9"] == 0

    clean_stop_lost = _result(faults, [_inst("SIGKILL", 9), _inst("SIGTERM", 3)])
    assert not clean_stop_lost["checks"]["steps_lost"] and clean_stop_lost["steps_lost"]["outside_kill9"] == 3

    too_many = [_fault("learner_kill9", 0), _fault("daemon_restart", 40, "SIGKILL"), _fault("network_cut", 0)]
    assert not _result(too_many, [_inst("SIGKILL", 40), _inst("SIGTERM", 0)])["checks"]["process_faults_recovered"]


def test_a_fault_never_recovered_or_a_kind_never_driven_fails_the_soak():
    never = [_fault("learner_kill9", 0, recovery=None), _fault("daemon_restart", 0, "SIGTERM"),
             _fault("network_cut", 0)]
    assert not _result(never, [_inst("SIGTERM", 0)])["pass"]
    missing = [_fault("learner_kill9", 0)]
    assert not _result(missing, [_inst("SIGTERM", 0)])["checks"]["every_process_fault_kind"]


def test_device_faults_judged_only_once_they_had_time_to_recover():
    rows = soak_report.device_fault_rows([
        {"kind": "camera_stop", "injected_at": 1000.0, "detected_at": 1000.5, "recovered_at": 1003.0,
         "escalated": False, "detail": ""},
        {"kind": "reflex", "injected_at": 1100.0, "detected_at": None, "recovered_at": None,
         "escalated": False, "detail": ""},
        {"kind": "gripper_stuck", "injected_at": 1790.0, "detected_at": None, "recovered_at": None,
         "escalated": False, "detail": ""},
    ], end_unix=1800.0, grace_s=600.0)
    assert [(r["detection_s"], r["recovery_s"], r["pass"]) for r in rows] == [
        (0.5, 3.0, True), (None, None, False), (None, None, True)]


def test_cli_names_a_bad_value(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--minutes", "1"])
    assert "--minutes must be >= 3" in capsys.readouterr().err
    # Every start within one daemon life (the soak restarts it every 3 x fault_every = 360 s).
    assert inject_specs(120) == ["camera_stop@60/360", "reflex@180/360", "gripper_stuck@300/360"]


def test_log_watch_counts_only_whole_new_lines(tmp_path):
    log = tmp_path / "learner.log"
    log.write_text("push failed; will retry\npartial will re")
    watch = LogWatch(log, "will retry")
    assert watch.poll() == 1
    with open(log, "a") as f:
        f.write("try\nok\n")
    assert watch.poll() == 2 and watch.poll() == 2
