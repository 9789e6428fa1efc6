"""Interventions and human minutes per practice hour: how much a person was needed while the robot
practised. The definition (DEFINITION below) is printed in the report beside the figures."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from replay_tools.intervals import (
    HOUR_S,
    Interval,
    bin_label,
    bin_of,
    bins_between,
    intersect,
    seconds_per_bin,
    total,
    union,
)
from replay_tools.timeline import Timeline

# Help requests only a person can resolve: the robot is blocked on a human while one is open.
# (homing, object and *_no_progress requests can clear by themselves, so they are not counted; an
# eval_verdict request belongs to an eval session, never to practice time.)
HUMAN_HELP_SOURCES = ("manual_reset", "arm")

DEFINITION = (
    "Practice time: for each practice session, from its first recorded step to its last recorded step "
    "plus one control period (pauses inside a session count); sessions never overlap. "
    "Human time: the union of (a) takeover steps, each practice step recorded with the intervention flag "
    "(a teleop device drove it) counting one control period; (b) open help requests a person must resolve "
    f"({', '.join(HUMAN_HELP_SOURCES)}), from help_requested to the help_resolved of the same source "
    "(a manual reset on the robot is the manual_reset request); (c) e-stops, from estop to estop_released; "
    "clipped to practice time, overlaps counted once. Operator-recorded interventions have no duration: "
    "they are counted, not timed. Human minutes per practice hour = human minutes / practice hours. "
    "Interventions per practice hour count the store's intervention events (operator, takeover, "
    "manual_reset) whose time falls in practice time. Demonstrations happen outside sessions: their "
    "teleop minutes are reported on their own. The bins split the same figures by wall-clock time (bin "
    "length in `bin`; a bin's rate is its human minutes / its practice hours)."
)


def practice_spans(tl: Timeline) -> list[Interval]:
    """Practice time as intervals, one per practice session."""
    sessions: dict[str, Interval] = {}
    for seg in tl.of_kind("practice"):
        start, end = float(seg.wall[0]), float(seg.wall[-1]) + tl.period_s
        old = sessions.get(seg.session)
        sessions[seg.session] = (start, end) if old is None else (min(old[0], start), max(old[1], end))
    return union(sessions.values())


def takeover_intervals(tl: Timeline) -> list[Interval]:
    return union((float(t), float(t) + tl.period_s)
                 for seg in tl.of_kind("practice") for t in seg.wall[seg.intervention])


def paired_intervals(events: Iterable[dict[str, Any]], opened: str, closed: str, key: str | None = None,
                     still_open_until: float = math.inf) -> dict[str, list[Interval]]:
    """Intervals from each `opened` event to the next `closed` one with the same `key` field, per key;
    a request never closed lasts until `still_open_until`."""
    open_at: dict[str, float] = {}
    out: dict[str, list[Interval]] = {}
    for ev in sorted(events, key=lambda e: (e["time"], e.get("seq", 0))):
        k = str(ev.get(key, "")) if key else ""
        if ev["type"] == opened:
            open_at.setdefault(k, float(ev["time"]))
        elif ev["type"] == closed and k in open_at:
            out.setdefault(k, []).append((open_at.pop(k), float(ev["time"])))
    for k, start in open_at.items():
        out.setdefault(k, []).append((start, still_open_until))
    return out


def _in(intervals: list[Interval], t: float) -> bool:
    return any(start <= t < end for start, end in intervals)


def human_time(tl: Timeline, bin_s: float = HOUR_S) -> dict[str, Any]:
    """The practice figures, with per-bin rows (`bins`, each `bin_s` seconds from its `start`)."""
    practice = practice_spans(tl)
    interventions = tl.events_of("intervention")
    demos = tl.of_kind("demo")
    demo_minutes = sum(float(s.wall[-1] - s.wall[0]) + tl.period_s for s in demos) / 60.0
    base: dict[str, Any] = {
        "definition": DEFINITION,
        "interventions_total": len(interventions),
        "interventions_total_by_kind": dict(Counter(str(e.get("kind", "?")) for e in interventions)),
        "demos": len(demos),
        "demo_teleop_minutes": round(demo_minutes, 3),
    }
    if not practice:
        return {"recorded": False, "why": "no practice segment with a committed step in the store", **base}

    help_iv = paired_intervals(tl.events_of("help_requested", "help_resolved"), "help_requested",
                               "help_resolved", key="source")
    estop_iv = paired_intervals(tl.events_of("estop", "estop_released"), "estop", "estop_released")
    parts: dict[str, list[Interval]] = {"takeover": takeover_intervals(tl)}
    for source in HUMAN_HELP_SOURCES:
        parts[f"help:{source}"] = help_iv.get(source, [])
    parts["estop"] = estop_iv.get("", [])
    parts = {k: intersect(v, practice) for k, v in parts.items()}
    human = union(iv for v in parts.values() for iv in v)

    in_practice = [e for e in interventions if _in(practice, float(e["time"]))]
    practice_h = total(practice) / 3600.0
    human_min = total(human) / 60.0
    per_bin_practice, per_bin_human = seconds_per_bin(practice, bin_s), seconds_per_bin(human, bin_s)
    per_bin_iv = Counter(bin_of(float(e["time"]), bin_s) for e in in_practice)
    bins = []
    for b in bins_between(practice[0][0], practice[-1][1] - 1e-9, bin_s):
        p_min, h_min = per_bin_practice.get(b, 0.0) / 60.0, per_bin_human.get(b, 0.0) / 60.0
        bins.append({
            "start": b, "practice_minutes": round(p_min, 3),
            "interventions": per_bin_iv.get(b, 0), "human_minutes": round(h_min, 3),
            "human_minutes_per_practice_hour": round(h_min / (p_min / 60.0), 3) if p_min > 0 else None,
        })
    return {
        "recorded": True,
        **base,
        "sessions": len({s.session for s in tl.of_kind("practice")}),
        "practice_hours": round(practice_h, 4),
        "interventions": len(in_practice),
        "interventions_by_kind": dict(Counter(str(e.get("kind", "?")) for e in in_practice)),
        "interventions_per_practice_hour": round(len(in_practice) / practice_h, 3),
        "human_minutes": round(human_min, 3),
        "human_minutes_by_source": {k: round(total(v) / 60.0, 3) for k, v in parts.items()},
        "human_minutes_per_practice_hour": round(human_min / practice_h, 3),
        "bin": bin_label(bin_s), "bin_s": bin_s,
        "bins": bins,
    }
