"""The replay store's public API: one writer process, many readers (see DESIGN.md "The replay store").

    with ReplayWriter.open("data/sim.zarr", meta, chunk_steps=16) as w:   # takes the writer lock
        ep = w.begin_episode("practice", "forward", {"session": sid})
        ep.append({"obs/front": img, ..., "action": a, "timestamp": t, "policy_version": v, "intervention": False})
        ep.close(success=None, end_reason="phase_done")
        w.append_event({"type": "intervention", "reason": "cube fell off"})   # the store's event log

    r = ReplayReader("data/sim.zarr")                 # no lock; safe while the writer appends
    for info in r.episodes(include_open=True):
        data = r.read(info.id, keys=["obs/front", "action"])   # committed steps only
    r.events()                                        # [{"seq": 0, "time": ..., "type": "intervention", ...}]

Guarantees: a step is visible to readers once its chunk is written (every chunk_steps appends, or
at flush/close); kill -9 of the writer loses at most the last chunk_steps appended steps of the
open episode and never changes a closed one; the next ReplayWriter.open closes what a killed
writer left open (attrs end_reason="writer_crashed", success=None; a crashed demo is therefore
recognisable and may be incomplete) and deletes open episodes with no committed step.
Events in the store's event log are durable once append_event returns, and never change.
A full disk (ENOSPC/EDQUOT) raises StoreFullError: committed steps stay intact, buffered ones stay
buffered for a retry, or `ep.abandon(reason)` gives them up and ends the episode at its committed
length (on disk at once, or at the next begin_episode if the disk cannot take even that).
Episode ids are never reused. Readers trust each episode's `length` attr, not array shapes: the
arrays of an open episode are grown ahead of the data.
"""

from replay.reader import ReplayReader
from replay.schema import EpisodeInfo, StoreError, StoreLockedError, StoreMeta
from replay.space import StoreFullError, free_bytes, is_disk_full
from replay.writer import EpisodeWriter, ReplayWriter

__all__ = [
    "EpisodeInfo",
    "EpisodeWriter",
    "ReplayReader",
    "ReplayWriter",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreMeta",
    "free_bytes",
    "is_disk_full",
]
