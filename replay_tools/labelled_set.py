"""The report's labelled set: frames whose truth is known, to score the goal classifier against.

Three sources, later ones overriding earlier ones for the same frame:
- eval verdicts (the task in sim, the operator on the robot): the episode's last frame;
- the operator's whole-episode labels (success / failure, from the review page): the last frame;
- the operator's frame labels (goal / not_goal): each labelled frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.labels import LabelSet
from replay_tools.timeline import Timeline

SOURCES = ("eval_verdict", "operator_verdict", "operator_frames")


@dataclass(frozen=True)
class LabelledFrame:
    episode: str
    frame: int
    goal: bool  # the truth: the frame shows the task done
    source: str  # one of SOURCES


def labelled_frames(tl: Timeline) -> list[LabelledFrame]:
    """Every labelled frame of the store's committed episodes, one entry per (episode, frame)."""
    lengths = {s.info.id: s.info.length for s in tl.segments}
    found: dict[tuple[str, int], LabelledFrame] = {}

    def put(episode: str, frame: int, goal: bool, source: str) -> None:
        if 0 <= frame < lengths.get(episode, 0):  # committed frames only (an open episode grows)
            found[(episode, frame)] = LabelledFrame(episode, frame, goal, source)

    for s in tl.of_kind("eval"):
        if s.info.closed and s.info.success is not None:
            put(s.info.id, s.info.length - 1, bool(s.info.success), "eval_verdict")
    labels = LabelSet.from_events(tl.events)
    for episode, verdict in labels.episode_verdicts.items():
        put(episode, lengths.get(episode, 0) - 1, verdict == "success", "operator_verdict")
    for episode in labels.episodes():
        for frame in labels.goal_frames(episode):
            put(episode, frame, True, "operator_frames")
        for frame in labels.not_goal_frames(episode):
            put(episode, frame, False, "operator_frames")
    return sorted(found.values(), key=lambda f: (f.episode, f.frame))
