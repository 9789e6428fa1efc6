"""What the store says happened, on one wall clock: every episode's per-step times, policy versions
and intervention flags, plus the store's event log. Images are never read.

Step timestamps are host monotonic seconds (spec.clock); each episode records the wall time and the
monotonic time at which it began, so a step's wall time is `started_at + (t - started_monotonic)`.
Only committed steps are read, so a store the daemon is writing is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replay.store import EpisodeInfo, ReplayReader, StoreError

# The per-step arrays the report needs (small: no camera views).
KEYS = ("timestamp", "policy_version", "intervention")


class ReportError(RuntimeError):
    """The store cannot be reported on (missing, not a store, or a corrupt chunk); says which."""


@dataclass
class Segment:
    """One recorded episode (segment) and its committed steps on the wall clock."""

    info: EpisodeInfo
    wall: np.ndarray  # float64 [T] epoch seconds of each step
    versions: np.ndarray  # int32 [T], -1 = no learned policy acted
    intervention: np.ndarray  # bool [T], a person (teleop) drove this step

    @property
    def session(self) -> str:
        """The practice/eval session it belongs to (the episode itself when none is recorded)."""
        return str(self.info.attrs.get("session") or f"episode {self.info.id}")


@dataclass
class Timeline:
    store: Path
    period_s: float  # the control period the store was recorded at (1 / rate_hz)
    segments: list[Segment]
    events: list[dict[str, Any]]  # the store's event log, oldest first

    def of_kind(self, kind: str) -> list[Segment]:
        return [s for s in self.segments if s.info.kind == kind and len(s.wall)]

    def events_of(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") in types and isinstance(e.get("time"), int | float)]


def read_timeline(store: Path) -> Timeline:
    """Read the store's episodes (the open one's committed part too) and event log."""
    if not (store / "zarr.json").is_file():
        raise ReportError(f"no replay store at {store} (no zarr.json)")
    try:
        reader = ReplayReader(store)
        infos = reader.episodes(include_open=True)
        events = reader.events()
    except (StoreError, OSError, ValueError) as exc:
        raise ReportError(f"cannot read the store {store}: {exc}") from None
    segments = []
    for info in infos:
        try:
            data = reader.read(info.id, keys=list(KEYS))
        except KeyError:
            continue  # discarded while we read (a demo thrown away): it is not part of the record
        except (RuntimeError, ValueError, OSError, IndexError) as exc:
            # zarr reports a damaged chunk as a codec error; name the episode so it can be found.
            raise ReportError(f"episode {info.id} in {store} is unreadable (corrupt chunk?): {exc}") from None
        segments.append(Segment(info, _wall_times(info, data["timestamp"]), data["policy_version"],
                                data["intervention"].astype(bool)))
    return Timeline(store=store, period_s=1.0 / float(reader.meta["rate_hz"]), segments=segments, events=events)


def _wall_times(info: EpisodeInfo, ts: np.ndarray) -> np.ndarray:
    ts = ts.astype(np.float64)
    anchor = info.attrs.get("started_monotonic")
    if not isinstance(anchor, int | float):
        anchor = float(ts[0]) if len(ts) else 0.0  # no anchor recorded: the first step is the start
    return info.started_at + (ts - anchor)
