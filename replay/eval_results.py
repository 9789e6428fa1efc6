"""Forward success per policy version, from the eval episodes the store keeps (every verdict)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from replay.store import EpisodeInfo


def success_by_version(episodes: Iterable[EpisodeInfo]) -> list[dict[str, Any]]:
    """One row per evaluated forward policy version, oldest version first. Only closed eval episodes
    with a verdict count (a stopped episode was discarded, a crashed one has success None)."""
    rows: dict[int, dict[str, Any]] = {}
    for e in episodes:
        version = e.attrs.get("policy_version")
        if e.kind != "eval" or not e.closed or e.success is None or not isinstance(version, int):
            continue
        row = rows.setdefault(version, {"version": version, "episodes": 0, "successes": 0, "last_at": None})
        row["episodes"] += 1
        row["successes"] += int(e.success)
        row["last_at"] = max(row["last_at"] or 0.0, e.ended_at or 0.0)
    for row in rows.values():
        row["success_rate"] = row["successes"] / row["episodes"]
    return [rows[v] for v in sorted(rows)]
