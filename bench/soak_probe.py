"""What bench/soak.py measures from outside the processes: RSS from /proc, store size on disk, and
the steps a daemon instance committed to the store (counted by their timestamps)."""

from __future__ import annotations

import os
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MB, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[1]) * PAGE_KB / 1024.0


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def dir_size_mb(path: Path) -> float:
    """Bytes of all files under `path` (what the store costs on disk, without block rounding), in MB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:  # the writer replaced it meanwhile
                continue
    return total / 1e6


class CommittedSteps:
    """Counts the steps the daemon committed to a store, by timestamp (the daemon stamps steps with
    the host's monotonic clock, the same clock this process reads). Closed episodes never change, so
    their timestamps are read once."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._closed: dict[str, list[float]] = {}

    def timestamps(self) -> list[float]:
        """Timestamps of every committed non-demo step (demos carry wall-clock times of their own)."""
        import numpy as np

        from replay.store import ReplayReader

        reader = ReplayReader(self.store)
        out: list[np.ndarray] = []
        for e in reader.episodes(include_open=True):
            if e.kind == "demo":
                continue
            if e.id in self._closed:
                out.append(np.asarray(self._closed[e.id]))
                continue
            ts = reader.read(e.id, keys=["timestamp"], stop=e.length)["timestamp"] if e.length else np.zeros(0)
            if e.closed:
                self._closed[e.id] = ts.tolist()
            out.append(ts)
        return sorted(float(t) for t in (np.concatenate(out) if out else []))

    def between(self, start: float, stop: float = float("inf")) -> int:
        """Committed steps stamped in [start, stop) on the monotonic clock."""
        return sum(start <= t < stop for t in self.timestamps())
