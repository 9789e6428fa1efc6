"""bench/soak.py's figures from its samples: RSS growth per process, tick health per window, store
growth, faults with detection and recovery times, steps lost, and pass/fail against stated bounds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

ROLES = ("daemon", "render", "learner")
LATE_FRACTION_MAX = 0.01  # late ticks per health window
P99_DRIFT_MS = 5.0  # a window's period-error p99 above the first window's by more than this is drift


def _settings(args: argparse.Namespace, inject: list[str], chunk_steps: int, rate_hz: float) -> dict[str, Any]:
    s = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return s | {"inject": inject, "chunk_steps": chunk_steps, "rate_hz": rate_hz, "cpus": os.cpu_count()}


def rss_growth(samples: list[dict], minutes: float, baseline_min: float, bound: float) -> dict[str, Any]:
    """Per process: the largest RSS in the second half of the baseline period against the largest after
    it. A run too short for the baseline uses its first half as the baseline (and says so)."""
    shortened = minutes < 1.5 * baseline_min
    base_end = (minutes / 2 if shortened else baseline_min) * 60
    out: dict[str, Any] = {"baseline_end_s": base_end, "baseline_shortened": shortened, "bound": bound}
    for role in ROLES:
        pts = [(s["t_s"], s["rss_mb"][role]) for s in samples if s["rss_mb"][role] is not None]
        base = [v for t, v in pts if base_end / 2 < t <= base_end]
        after = [(t, v) for t, v in pts if t > base_end]
        if not base or not after:
            out[role] = {"pass": False, "why": "no samples before or after the baseline's end"}
            continue
        growth = max(v for _, v in after) / max(base) - 1.0
        slope = float(np.polyfit([t / 3600 for t, _ in after], [v for _, v in after], 1)[0]) if len(after) >= 3 else None
        out[role] = {
            "baseline_max_mb": round(max(base), 1), "after_max_mb": round(max(v for _, v in after), 1),
            "last_mb": round(after[-1][1], 1), "growth": round(growth, 4),
            "slope_mb_per_h_after_baseline": None if slope is None else round(slope, 1),
            "pass": growth < bound,
        }
    return out


def tick_health(samples: list[dict], window_s: float) -> list[dict[str, Any]]:
    """Per window: ticks, late/skipped/overrun ticks in it (counter deltas; a restarted daemon counts
    from zero) and the worst and median period-error p99 of the samples in it (each the daemon's p99
    over its last 3,000 ticks, 5 min at 10 Hz)."""
    windows: dict[int, dict[str, Any]] = {}
    prev: dict | None = None
    for s in samples:
        tick = s["tick"]
        if tick is None:
            continue
        k = int(max(s["t_s"] - 1e-6, 0) // window_s)
        w = windows.setdefault(k, {"window": k, "from_min": k * window_s / 60, "to_min": (k + 1) * window_s / 60,
                                   "ticks": 0, "late": 0, "skipped": 0, "overruns": 0, "p99s": []})
        for key in ("ticks", "late", "skipped", "overruns"):
            restarted = prev is not None and tick["ticks"] < prev["ticks"]
            w[key] += tick[key] - (0 if prev is None or restarted else prev[key])
        w["p99s"].append(tick["period_error_ms_p99"])
        prev = tick
    out = []
    for k in sorted(windows):
        w = windows[k]
        p99s = w.pop("p99s")
        w["period_error_ms_p99_max"] = round(max(p99s), 3)
        w["period_error_ms_p99_median"] = round(float(np.median(p99s)), 3)
        w["late_fraction"] = round(w["late"] / w["ticks"], 5) if w["ticks"] else None
        out.append(w)
    if out:
        first = out[0]["period_error_ms_p99_max"]
        for w in out:
            w["pass"] = (w["late_fraction"] is not None and w["late_fraction"] <= LATE_FRACTION_MAX
                         and w["period_error_ms_p99_max"] <= first + P99_DRIFT_MS)
    return out


def store_growth(samples: list[dict]) -> dict[str, Any]:
    pts = [(s["t_s"], s["store_mb"], s["committed_steps"]) for s in samples]
    if len(pts) < 2:
        return {}
    (t0, mb0, n0), (t1, mb1, n1) = pts[0], pts[-1]
    hours = (t1 - t0) / 3600
    return {
        "first_mb": mb0, "last_mb": mb1, "mb_per_h": round((mb1 - mb0) / hours, 1) if hours else None,
        "committed_steps_first": n0, "committed_steps_last": n1,
        "kb_per_step": round((mb1 - mb0) * 1000 / (n1 - n0), 2) if n1 > n0 else None,
    }


def device_fault_rows(records: list[dict], end_unix: float, grace_s: float) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        inj = float(r["injected_at"])
        row = dict(r)
        row["detection_s"] = None if r.get("detected_at") is None else round(float(r["detected_at"]) - inj, 2)
        row["recovery_s"] = None if r.get("recovered_at") is None else round(float(r["recovered_at"]) - inj, 2)
        # One injected shortly before the end may still be recovering: not held against the run.
        row["judged"] = end_unix - inj > grace_s
        row["pass"] = not row["judged"] or row["recovery_s"] is not None or bool(r.get("escalated"))
        rows.append(row)
    return rows


def build(*, args: argparse.Namespace, inject: list[str], samples: list[dict], faults: list[dict],
          device_faults: list[dict], instances: list[dict], unexpected: list[str], sampler_errors: list[str],
          chunk_steps: int, rate_hz: float, end_unix: float) -> dict[str, Any]:
    kill_bound = chunk_steps + int(rate_hz)  # one chunk buffered in the writer + 1 s of its queue
    for f in faults:
        if f["kind"] == "daemon_restart" and f["detail"]["signal"] == "SIGKILL":
            f["steps_lost_bound"] = kill_bound
        else:
            f["steps_lost_bound"] = 0
        f["pass"] = (f["recovery_s"] is not None and f["steps_lost"] is not None
                     and f["steps_lost"] <= f["steps_lost_bound"])
    lost_by_instance = [i["lost"] for i in instances]
    at_kill9 = sum(i["lost"] or 0 for i in instances if i["end_signal"] == "SIGKILL")
    known = all(v is not None for v in lost_by_instance)
    total = sum(v or 0 for v in lost_by_instance)
    # Steps the daemon took but the store lacks, whatever the cause, against those kill -9 explains.
    steps = {
        "total": total if known else None,
        "at_kill9": at_kill9,
        "outside_kill9": (total - at_kill9) if known else None,
        "per_kill9_bound": kill_bound,
        "by_daemon_instance": instances,
        "recorder_errors_during_other_faults": sum(f["steps_lost"] or 0 for f in faults
                                                   if f["kind"] != "daemon_restart"),
    }
    steps["pass"] = known and steps["outside_kill9"] == 0 and steps["recorder_errors_during_other_faults"] == 0
    health = tick_health(samples, args.health_window_min * 60)
    rss = rss_growth(samples, args.minutes, args.baseline_min, args.rss_growth)
    dev = device_fault_rows(device_faults, end_unix, args.recovery_timeout_s)
    kinds_seen = {f["kind"] for f in faults}
    checks = {
        "rss_growth": all(rss[r]["pass"] for r in ROLES),
        "tick_health": bool(health) and all(w["pass"] for w in health),
        "process_faults_recovered": bool(faults) and all(f["pass"] for f in faults),
        "every_process_fault_kind": kinds_seen >= {"learner_kill9", "daemon_restart", "network_cut"},
        "steps_lost": steps["pass"],
        "no_unexpected_exits": not unexpected,
        # Each injected kind must have fired and been judged at least once.
        "device_faults": (all(r["pass"] for r in dev)
                          and {k.split("@")[0] for k in inject} <= {r["kind"] for r in dev if r["judged"]})
        if args.device_faults else None,
    }
    return {
        "settings": _settings(args, inject, chunk_steps, rate_hz),
        "bounds": {
            "rss_growth": f"max RSS after the first {rss['baseline_end_s'] / 60:g} min < (1 + {args.rss_growth:g}) x "
                          f"max RSS in minutes {rss['baseline_end_s'] / 120:g}..{rss['baseline_end_s'] / 60:g}, "
                          "per process (daemon, render, learner)",
            "tick_health": f"per {args.health_window_min:g} min: late ticks <= {LATE_FRACTION_MAX:.0%} and period "
                           f"error p99 <= first window's + {P99_DRIFT_MS:g} ms",
            "steps_lost": f"0, except at a daemon kill -9: <= {kill_bound} (one {chunk_steps}-step chunk + 1 s queue)",
            "recovery": f"every fault recovered within {args.recovery_timeout_s:g} s",
        },
        "checks": checks,
        "pass": all(v for v in checks.values() if v is not None),
        "rss": rss,
        "tick_health": health,
        "store": store_growth(samples),
        "faults": faults,
        "device_faults": dev,
        "steps_lost": steps,
        "unexpected_exits": unexpected,
        "sampler_errors": sampler_errors,
        "samples": samples,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = np.array([s["t_s"] / 60 for s in samples])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for role in ROLES:
        v = np.array([np.nan if s["rss_mb"][role] is None else s["rss_mb"][role] for s in samples])
        ax1.plot(t, v, marker=".", label=role)
    ax1.set_ylabel("RSS, MB")
    ax1.legend(loc="upper left")
    p99 = np.array([np.nan if s["tick"] is None else s["tick"]["period_error_ms_p99"] for s in samples])
    ax2.plot(t, p99, marker=".", color="k", label="period error p99 (last 3,000 ticks)")
    ax2.set_ylabel("tick period error p99, ms")
    ax2.set_xlabel("minutes")
    colors = {"learner_kill9": "tab:red", "daemon_restart": "tab:purple", "network_cut": "tab:orange"}
    for f in result["faults"]:
        for ax in (ax1, ax2):
            ax.axvline(f["at_s"] / 60, color=colors.get(f["kind"], "grey"), alpha=0.5, lw=1)
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in colors.items()]
    ax2.legend(handles=[*ax2.get_legend_handles_labels()[0], *handles], loc="upper left", fontsize=8)
    verdict = "PASS" if result["pass"] else "FAIL"
    ax1.set_title(f"soak {result['settings']['minutes']:g} min: {verdict} (vertical lines: process faults)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(result: dict[str, Any]) -> None:
    for role in ROLES:
        r = result["rss"][role]
        if "growth" in r:
            print(f"RSS {role:8s} baseline {r['baseline_max_mb']:7.1f} MB  after {r['after_max_mb']:7.1f} MB  "
                  f"growth {r['growth']:+.1%}  {'ok' if r['pass'] else 'OVER BOUND'}")
        else:
            print(f"RSS {role:8s} {r['why']}")
    for w in result["tick_health"]:
        print(f"ticks {w['from_min']:4.0f}-{w['to_min']:3.0f} min: {w['ticks']} ticks, late {w['late']}, "
              f"p99 max {w['period_error_ms_p99_max']:.2f} ms  {'ok' if w['pass'] else 'FAIL'}")
    st = result["store"]
    if st:
        print(f"store {st['first_mb']:.1f} -> {st['last_mb']:.1f} MB ({st['mb_per_h']} MB/h), "
              f"{st['committed_steps_last']} committed steps")
    for f in result["faults"]:
        print(f"fault {f['kind']:15s} at {f['at_s']:6.0f} s: detection {f['detection_s']} s, recovery "
              f"{f['recovery_s']} s, steps lost {f['steps_lost']} (bound {f['steps_lost_bound']})")
    for d in result["device_faults"]:
        print(f"device {d['kind']:13s}: detection {d['detection_s']} s, recovery {d['recovery_s']} s, "
              f"escalated {d.get('escalated')}")
    s = result["steps_lost"]
    print(f"steps lost: total {s['total']}, at kill -9 {s['at_kill9']}, elsewhere {s['outside_kill9']}")
    print("checks: " + ", ".join(f"{k} {'-' if v is None else 'ok' if v else 'FAIL'}"
                                 for k, v in result["checks"].items()))
    print("PASS" if result["pass"] else "FAIL")
