"""The operator's morning report as data: every figure of `replay report`, gathered from the store
(and, when given, the learner's run dir). plots.py and page.py draw and write it; report.json is this
dict as is.

Every section has `title`, `recorded` and, when the store holds no data for it, `why`; a section
with data says how each number is defined, so the page and the JSON read the same.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replay.eval_results import success_by_version
from replay_tools.human_time import human_time, paired_intervals
from replay_tools.intervals import HOUR_S, bin_label, bin_of, bins_between, choose_bin_s
from replay_tools.labelled_set import SOURCES, labelled_frames
from replay_tools.timeline import Timeline

GOAL_THRESHOLD = 0.5  # the goal classifier says "success" at p_goal >= this
LATE_FRACTION = 0.1  # as the control loop counts a late tick: more than 10 % of a period late


# What fills the learner's sections when no run dir was found (the CLI's options; page and console say it).
NO_RUN_DIR = ("no learner run dir: give --learner-run RUN_DIR (e.g. runs/learner), or --config CONFIG whose "
              "learner.run_dir exists")
NO_RUN_DIR_TO_SCORE = ("no learner run dir to score the labelled frames: give --config CONFIG (the config the "
                       "learner ran with; its learner.run_dir is used when it exists), or --learner-run RUN_DIR "
                       "with --config CONFIG")


@dataclass
class LearnerFigures:
    """What the learner's run dir adds (learner_figures.py reads it); empty when none was found."""

    scalars: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # tag -> [{time, step, value}]
    scalars_why: str = NO_RUN_DIR
    goal_scores: dict[tuple[str, int], float] = field(default_factory=dict)  # (episode, frame) -> p_goal
    goal_scores_why: str = NO_RUN_DIR_TO_SCORE
    goal_scores_source: str = ""
    run_dir: str = ""  # the run dir read and how it was chosen ("" when none)


def _binned_counts(things: list[tuple[float, str]], bin_s: float, span: tuple[float, float] | None = None
                   ) -> list[dict[str, Any]]:
    """[{start, <kind>: count, ...}] for every bin over `span` (the recording), widened to the first and
    last thing (zeros too), so one count stands at its place in the night, not alone across the plot."""
    if not things:
        return []
    counts: dict[float, Counter] = {}
    for t, kind in things:
        counts.setdefault(bin_of(t, bin_s), Counter())[kind] += 1
    times = [t for t, _ in things] + list(span or ())
    return [{"start": b, **counts.get(b, {})} for b in bins_between(min(times), max(times), bin_s)]


def _bins(bin_s: float) -> dict[str, Any]:
    """The bin fields of a binned section: its rows are in `bins`, each `bin_s` seconds from its `start`."""
    return {"bin": bin_label(bin_s), "bin_s": bin_s}


def recorded_span(tl: Timeline) -> tuple[float, float] | None:
    """First to last recorded step of any kind (the events' times when the store has no step)."""
    times = [float(t) for s in tl.segments if len(s.wall) for t in (s.wall[0], s.wall[-1])]
    times = times or [float(e["time"]) for e in tl.events if isinstance(e.get("time"), int | float)]
    return (min(times), max(times)) if times else None


def report_bin_s(tl: Timeline) -> float:
    """One bin length for every binned figure, from the length of the recording."""
    span = recorded_span(tl)
    return choose_bin_s(span[1] - span[0]) if span else HOUR_S


def _not_recorded(title: str, why: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "recorded": False, "why": why, **extra}


def eval_success(tl: Timeline) -> dict[str, Any]:
    title = "Forward success per policy version (eval sessions)"
    rows = success_by_version(s.info for s in tl.segments)
    if not rows:
        return _not_recorded(title, "no closed eval episode with a verdict in the store")
    return {"title": title, "recorded": True, "rows": rows,
            "definition": "closed eval episodes with a verdict (task or operator), grouped by the forward "
                          "policy version that acted; success rate = successes / episodes"}


def recoveries(tl: Timeline, bin_s: float = HOUR_S) -> dict[str, Any]:
    title = "Recoveries and reflexes"
    practice = tl.of_kind("practice")
    if not practice:
        return _not_recorded(title, "no practice segment in the store")
    cuts = [s for s in practice if s.info.closed and str(s.info.attrs.get("end_reason", "")).startswith("arm ")]
    arm_help = [e for e in tl.events_of("help_requested") if e.get("source") == "arm"]
    return {
        "title": title, "recorded": True,
        "definition": "practice segments cut because the arm left READY (reflex, recovering, paused, ...), by "
                      "the arm mode seen first; arm help requests (the arm paused itself after repeated "
                      "reflexes); e-stops. The arm's own reflex and recovery counters are not stored, so "
                      "errors outside practice segments (homing, evals, demos) are not seen here.",
        "arm_cuts": len(cuts),
        "arm_cuts_by_mode": dict(Counter(str(s.info.attrs["end_reason"])[4:] for s in cuts)),
        "arm_help_requests": len(arm_help),
        "estops": len(tl.events_of("estop")),
        **_bins(bin_s),
        "bins": _binned_counts([(float(s.wall[-1]), str(s.info.attrs["end_reason"])[4:]) for s in cuts], bin_s,
                               recorded_span(tl)),
        "cuts": [{"episode": s.info.id, "at": float(s.wall[-1]), "reason": s.info.attrs["end_reason"]} for s in cuts],
    }


def help_requests(tl: Timeline, bin_s: float = HOUR_S) -> dict[str, Any]:
    title = "Help requests"
    asked = tl.events_of("help_requested")
    spans = paired_intervals(tl.events_of("help_requested", "help_resolved"), "help_requested", "help_resolved",
                             key="source", still_open_until=np.nan)
    by_source = {}
    for source, count in sorted(Counter(str(e.get("source", "?")) for e in asked).items()):
        waits = [end - start for start, end in spans.get(source, []) if not np.isnan(end)]
        by_source[source] = {
            "requests": count, "resolved": len(waits), "still_open": int(sum(np.isnan(e) for _, e in spans.get(source, []))),
            "median_wait_s": round(float(np.median(waits)), 1) if waits else None,
            "max_wait_s": round(max(waits), 1) if waits else None,
        }
    return {
        "title": title, "recorded": True, "requests": len(asked), "by_source": by_source,
        "definition": "help_requested events of the store's event log, by source; wait = time to the "
                      "help_resolved of the same source",
        **_bins(bin_s),
        "bins": _binned_counts([(float(e["time"]), str(e.get("source", "?"))) for e in asked], bin_s,
                               recorded_span(tl)),
        "requests_list": [{"at": e["time"], "source": e.get("source"), "reason": e.get("reason")} for e in asked],
    }


TICK_STATS = "tick_stats"  # the daemon's store event of its loop's own timing (robot_server.tick_stats)
_WINDOW_KEYS = ("start", "end", "ticks", "late", "skipped", "overruns", "period_error_ms_p50",
                "period_error_ms_p99", "period_error_ms_max", "work_ms_p99")


def tick_health(tl: Timeline, bin_s: float = HOUR_S) -> dict[str, Any]:
    """From the loop's own tick_stats events when the store has them, else from step timestamps."""
    windows = [e for e in tl.events_of(TICK_STATS)
               if all(isinstance(e.get(k), int | float) for k in _WINDOW_KEYS) and e["ticks"] > 0]
    return _tick_health_loop(tl, windows, bin_s) if windows else _tick_health_steps(tl, bin_s)


def _tick_health_loop(tl: Timeline, windows: list[dict[str, Any]], bin_s: float) -> dict[str, Any]:
    bins: dict[float, list[dict[str, Any]]] = {}
    for w in windows:
        bins.setdefault(bin_of(float(w["end"]), bin_s), []).append(w)

    def figures(ws: list[dict[str, Any]]) -> dict[str, Any]:
        return {"windows": len(ws), "ticks": sum(int(w["ticks"]) for w in ws),
                "p99_error_ms": round(max(float(w["period_error_ms_p99"]) for w in ws), 3),
                "max_error_ms": round(max(float(w["period_error_ms_max"]) for w in ws), 3),
                "work_p99_ms": round(max(float(w["work_ms_p99"]) for w in ws), 3),
                **{k: sum(int(w[k]) for w in ws) for k in ("late", "skipped", "overruns")}}

    return {
        "title": "Tick health", "recorded": True, "source": "loop",
        "definition": "from the control loop's own timing (tick_stats events the daemon stores every "
                      "control.tick_stats_s, all ticks whatever the mode): period error = |tick start - its "
                      f"deadline|; late = a tick starting more than {LATE_FRACTION:.0%} of a period after its "
                      "deadline; skipped = deadlines dropped after an overrun; overrun = a tick whose work took "
                      "longer than a period. A window falls in the bin of its end; a bin's p99 (and max, work "
                      "p99) is the largest of its windows' p99s, counts are summed. Time the daemon was not "
                      "running has no window.",
        "period_ms": round(tl.period_s * 1e3, 3),
        **figures(windows),
        "p50_error_ms": round(float(np.median([float(w["period_error_ms_p50"]) for w in windows])), 3),
        **_bins(bin_s),
        "bins": [{"start": b, **figures(ws)} for b, ws in sorted(bins.items())],
    }


def _tick_health_steps(tl: Timeline, bin_s: float) -> dict[str, Any]:
    title = "Tick health"
    practice = [s for s in tl.of_kind("practice") if len(s.wall) > 1]
    if not practice:
        return _not_recorded(title, "no tick_stats event of the loop's own timing and no practice segment "
                             "with two or more committed steps")
    period = tl.period_s
    dt = np.concatenate([np.diff(s.wall) for s in practice])
    at = np.concatenate([s.wall[1:] for s in practice])
    err_ms = np.abs(dt - period) * 1e3
    late = dt > period * (1 + LATE_FRACTION)
    missed = np.maximum(np.rint(dt / period) - 1, 0).astype(int)
    bins = []
    for b in sorted({bin_of(float(t), bin_s) for t in at}):  # bins without a practice tick are left out
        m = (at >= b) & (at < b + bin_s)
        bins.append({"start": b, "intervals": int(m.sum()), "p99_error_ms": round(float(np.percentile(err_ms[m], 99)), 3),
                      "late": int(late[m].sum()), "missed_ticks": int(missed[m].sum())})
    return {
        "title": title, "recorded": True, "source": "step timestamps",
        "definition": f"from the recorded step timestamps of practice segments (consecutive ticks), as this "
                      f"store has no tick_stats event of the loop's own timing: period error = |interval - "
                      f"{period * 1e3:.0f} ms|; late = an interval more than {LATE_FRACTION:.0%} of a period "
                      "long; missed ticks = round(interval / period) - 1. A step's timestamp is taken after "
                      "the policy ran, so these errors include the tick's work time and overstate the loop's "
                      "own period error.",
        "period_ms": round(period * 1e3, 3), "intervals": int(len(dt)),
        "p50_error_ms": round(float(np.percentile(err_ms, 50)), 3),
        "p99_error_ms": round(float(np.percentile(err_ms, 99)), 3),
        "max_error_ms": round(float(err_ms.max()), 3),
        "late": int(late.sum()), "missed_ticks": int(missed.sum()),
        **_bins(bin_s), "bins": bins,
    }


def checkpoint_swaps(tl: Timeline) -> dict[str, Any]:
    title = "Checkpoint swaps"
    if not any(s.info.kind in ("practice", "eval") for s in tl.segments):
        return _not_recorded(title, "no practice or eval segment in the store")
    swaps: list[dict[str, Any]] = []
    last_at: dict[str, float] = {}  # the last step a learned policy acted, per direction: where the plot ends
    for direction in ("forward", "backward"):
        segs = [s for s in tl.segments if s.info.kind in ("practice", "eval") and s.info.direction == direction
                and len(s.wall)]
        if not segs:
            continue
        wall = np.concatenate([s.wall for s in segs])
        versions = np.concatenate([s.versions for s in segs])
        owner = np.concatenate([np.full(len(s.wall), i) for i, s in enumerate(segs)])
        order = np.argsort(wall, kind="stable")
        learned = order[versions[order] >= 0]  # -1: random, hold or teleop steps
        previous: int | None = None
        if len(learned):
            last_at[direction] = float(wall[learned[-1]])
        for i in learned:
            v = int(versions[i])
            if v != previous:
                swaps.append({"direction": direction, "from": previous, "to": v, "at": float(wall[i]),
                              "episode": segs[owner[i]].info.id})
                previous = v
    swaps.sort(key=lambda s: s["at"])
    return {"title": title, "recorded": True, "swaps": swaps, "count": len(swaps), "last_acted_at": last_at,
            "definition": "from the policy version recorded with every practice and eval step: a swap is the "
                          "first step a version acts after another (per direction; steps without a learned "
                          "policy are skipped). A version pushed but never acting in a recorded step is not seen."}


def classifier_scores(tl: Timeline, learner: LearnerFigures) -> dict[str, Any]:
    title = "Classifier scores over time"
    stored = [{"time": float(s.wall[-1]), "episode": s.info.id, "value": float(s.info.attrs["goal_score"])}
              for s in tl.of_kind("eval") if isinstance(s.info.attrs.get("goal_score"), int | float)]
    series: dict[str, list[dict[str, float]]] = dict(learner.scalars)
    if stored:
        series["eval/goal_score (store)"] = stored
    if not series:
        return _not_recorded(title, "the store records no classifier score (eval episodes have goal_score None); "
                             f"learner TensorBoard scalars: {learner.scalars_why}")
    return {"title": title, "recorded": True, "series": series,
            **({"learner_run": learner.run_dir} if learner.scalars else {}),
            "definition": "the learner's TensorBoard scalars clf_<direction>/* (mean probability on demo "
                          "positives, on online negatives and on fresh online frames; train accuracy, loss) "
                          "against wall time, plus any goal_score the store keeps with an eval verdict"}


def labelled_fp_fn(tl: Timeline, learner: LearnerFigures) -> dict[str, Any]:
    title = "Labelled set: goal classifier false positives / negatives"
    labelled = labelled_frames(tl)
    if not labelled:
        return _not_recorded(title, "no labelled frame in the store: no eval verdict and no operator label")
    stored = {(s.info.id, s.info.length - 1): s.info.attrs.get("goal_score") for s in tl.of_kind("eval")}
    items = []
    for f in labelled:
        kept = stored.get((f.episode, f.frame)) if f.source == "eval_verdict" else None
        score, source = ((float(kept), "store") if isinstance(kept, int | float)
                         else (learner.goal_scores.get((f.episode, f.frame)), learner.goal_scores_source))
        if score is not None:
            items.append({"episode": f.episode, "frame": f.frame, "label_source": f.source, "goal": f.goal,
                          "score": round(float(score), 4), "source": source})
    counts = {src: sum(f.source == src for f in labelled) for src in SOURCES}
    if not items:
        return _not_recorded(title, f"{len(labelled)} labelled frames, but no goal-classifier score: the store keeps "
                             f"none, and {learner.goal_scores_why}", labelled=len(labelled), by_source=counts)
    return {
        "title": title, "recorded": True,
        "definition": f"the labelled set is every frame whose truth is known: the last frame of each closed eval "
                      f"episode with a verdict (by the task or the operator) and of each episode the operator "
                      f"labelled success or failure, and every frame the operator marked goal or not-goal (the "
                      f"newest label wins). The goal classifier says goal when p_goal >= {GOAL_THRESHOLD}. "
                      "FP = says goal on a not-goal frame, FN = says not-goal on a goal frame; "
                      "FP rate = FP / not-goal frames, FN rate = FN / goal frames.",
        **({"learner_run": learner.run_dir} if learner.goal_scores else {}),
        "threshold": GOAL_THRESHOLD, "labelled": len(labelled), "scored": len(items), "by_source": counts,
        **_confusion(items),
        "per_source": {src: _confusion([i for i in items if i["label_source"] == src]) for src in SOURCES
                       if any(i["label_source"] == src for i in items)},
        "items": items,
    }


def _confusion(items: list[dict[str, Any]]) -> dict[str, Any]:
    said = [i["score"] >= GOAL_THRESHOLD for i in items]
    tp = sum(s and i["goal"] for s, i in zip(said, items, strict=True))
    fp = sum(s and not i["goal"] for s, i in zip(said, items, strict=True))
    fn = sum(not s and i["goal"] for s, i in zip(said, items, strict=True))
    tn = len(items) - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "fp_rate": round(fp / (fp + tn), 4) if fp + tn else None,
            "fn_rate": round(fn / (fn + tp), 4) if fn + tp else None}


def _overview(tl: Timeline) -> dict[str, Any]:
    starts = [float(s.wall[0]) for s in tl.segments if len(s.wall)]
    ends = [float(s.wall[-1]) for s in tl.segments if len(s.wall)]
    open_eps = [s.info.id for s in tl.segments if not s.info.closed]
    kinds = {s.info.kind for s in tl.segments}
    return {
        "episodes": dict(Counter(s.info.kind for s in tl.segments)),
        "steps": {k: sum(len(s.wall) for s in tl.segments if s.info.kind == k) for k in sorted(kinds)},
        "events": len(tl.events),
        "first_step_at": min(starts) if starts else None,
        "last_step_at": max(ends) if ends else None,
        "open_episode": open_eps[0] if open_eps else None,
    }


def gather(tl: Timeline, learner: LearnerFigures | None = None) -> dict[str, Any]:
    """Every figure of the report, as plain JSON values."""
    learner = learner or LearnerFigures()
    bin_s = report_bin_s(tl)
    practice = {"title": "Interventions and human minutes per practice hour", **human_time(tl, bin_s)}
    return {
        "store": str(tl.store),
        "generated_at": time.time(),
        "bin": bin_label(bin_s), "bin_s": bin_s,  # of every section's `bins` rows
        "overview": _overview(tl),
        "sections": {
            "eval_success": eval_success(tl),
            "practice": practice,
            "recoveries": recoveries(tl, bin_s),
            "help_requests": help_requests(tl, bin_s),
            "tick_health": tick_health(tl, bin_s),
            "checkpoint_swaps": checkpoint_swaps(tl),
            "classifier_scores": classifier_scores(tl, learner),
            "labelled_fp_fn": labelled_fp_fn(tl, learner),
        },
    }

