"""Operator labels: verdicts on episodes and frames, kept in the store's event log.

A label is an event `{"type": "label", "episode": id, "verdict": ..., "start": s, "stop": e,
"who": name}` (the store adds `seq` and `time`). Labels never rewrite recorded data, and a later
label overrides an earlier one for the same frames (an operator may change their mind), so the
labelled set is a pure function of the event log: `LabelSet.from_events`.

Verdicts: "goal" / "not_goal" on a frame range `[start, stop)`; "success" / "failure" on a whole
episode (no range). The learner uses them as MEDALPP.md's classifier data: goal frames join the
goal classifier's positives, not-goal frames and the frames of failed episodes its negatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

LABEL_EVENT = "label"
FRAME_VERDICTS = ("goal", "not_goal")
EPISODE_VERDICTS = ("success", "failure")
VERDICTS = FRAME_VERDICTS + EPISODE_VERDICTS
Verdict = Literal["goal", "not_goal", "success", "failure"]


@dataclass(frozen=True)
class Label:
    episode: str
    verdict: str
    start: int | None = None  # frame range [start, stop) for frame verdicts; None for episode verdicts
    stop: int | None = None
    who: str = "operator"
    time: float = 0.0
    seq: int = -1

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict in FRAME_VERDICTS:
            if self.start is None or self.stop is None or not 0 <= self.start < self.stop:
                raise ValueError(f"a {self.verdict!r} label needs frames 0 <= start < stop, got [{self.start}, {self.stop})")
        elif self.start is not None or self.stop is not None:
            raise ValueError(f"a {self.verdict!r} label is about the whole episode: give no frame range")

    def event(self) -> dict[str, Any]:
        """The event to append to the store's log (the store numbers and times it)."""
        ev: dict[str, Any] = {"type": LABEL_EVENT, "episode": self.episode, "verdict": self.verdict, "who": self.who}
        if self.start is not None:
            ev |= {"start": self.start, "stop": self.stop}
        return ev

    @classmethod
    def from_event(cls, ev: Mapping[str, Any]) -> Label:
        return cls(str(ev["episode"]), str(ev["verdict"]), ev.get("start"), ev.get("stop"),
                   str(ev.get("who", "operator")), float(ev.get("time", 0.0)), int(ev.get("seq", -1)))

    def to_dict(self) -> dict[str, Any]:
        return {"episode": self.episode, "verdict": self.verdict, "start": self.start, "stop": self.stop,
                "who": self.who, "time": self.time, "seq": self.seq}


class LabelSet:
    """The current labels: per episode, its verdict and each frame's goal / not-goal mark."""

    def __init__(self) -> None:
        self.labels: list[Label] = []  # every label event, oldest first (the history)
        self.episode_verdicts: dict[str, str] = {}
        self.frames: dict[str, dict[int, bool]] = {}  # episode -> frame -> is goal

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> LabelSet:
        out = cls()
        for ev in sorted((e for e in events if e.get("type") == LABEL_EVENT), key=lambda e: e.get("seq", -1)):
            try:
                out.add(Label.from_event(ev))
            except (KeyError, TypeError, ValueError):
                continue  # a malformed event is not a label; the log itself is never rewritten
        return out

    def add(self, label: Label) -> None:
        self.labels.append(label)
        if label.verdict in EPISODE_VERDICTS:
            self.episode_verdicts[label.episode] = label.verdict
            return
        assert label.start is not None and label.stop is not None
        marks = self.frames.setdefault(label.episode, {})
        for i in range(label.start, label.stop):
            marks[i] = label.verdict == "goal"

    def for_episode(self, episode: str) -> list[Label]:
        return [lb for lb in self.labels if lb.episode == episode]

    def goal_frames(self, episode: str) -> list[int]:
        return sorted(i for i, goal in self.frames.get(episode, {}).items() if goal)

    def not_goal_frames(self, episode: str) -> list[int]:
        return sorted(i for i, goal in self.frames.get(episode, {}).items() if not goal)

    def episodes(self) -> list[str]:
        return sorted(set(self.frames) | set(self.episode_verdicts))

    def counts(self) -> dict[str, int]:
        marks = [g for m in self.frames.values() for g in m.values()]
        return {
            "goal_frames": sum(marks),
            "not_goal_frames": len(marks) - sum(marks),
            "success_episodes": sum(v == "success" for v in self.episode_verdicts.values()),
            "failure_episodes": sum(v == "failure" for v in self.episode_verdicts.values()),
        }
