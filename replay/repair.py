"""Undo what a killed writer left half-done, before a new writer appends.

Ordering in the writer makes this simple: data first, commit marker (the episode group's attrs)
second, so everything past `length` is garbage and everything before it is whole. Repair shrinks
the arrays of open episodes back to their committed length, marks them closed with
end_reason="writer_crashed", and deletes episodes that never committed a step. Closed episodes are
never touched. Repair is idempotent, so a kill during repair is repaired by the next start.
It works through the store's location (replay/location.py), a directory or an object-store prefix.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import zarr

from replay.event_log import repair_events
from replay.location import StoreLocation
from replay.schema import EPISODES, StoreError, is_episode_id, is_episode_record


def array_keys(ep_dir: Path) -> list[str]:
    """Keys ("obs/front", "action", ...) of the arrays under an episode directory."""
    keys = []
    for dirpath, _dirs, files in os.walk(ep_dir):
        if "zarr.json" not in files or Path(dirpath) == ep_dir:
            continue
        try:
            doc = json.loads((Path(dirpath) / "zarr.json").read_bytes())
        except (OSError, json.JSONDecodeError):
            continue
        if doc.get("node_type") == "array":
            keys.append(Path(dirpath).relative_to(ep_dir).as_posix())
    return sorted(keys)


def object_array_keys(store: Any, rel: str) -> list[str]:
    """array_keys for a store not on disk: the group's arrays as zarr lists them."""
    group = zarr.open_group(store=store, path=rel, mode="r")
    return sorted(name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array))


def repair_store(store: Any, location: StoreLocation) -> list[str]:
    """Repair every open episode; return one human-readable note per action taken."""
    notes = location.sweep([EPISODES, ""])
    notes += repair_events(location)
    for name in sorted(location.children(EPISODES)):
        if not is_episode_id(name):
            continue
        rel = f"{EPISODES}/{name}"
        attrs = location.attrs(rel)
        if not is_episode_record(attrs):
            # begin_episode writes the group's attrs before anything else (and a delete removes them
            # first), so a node without them holds no committed step; on disk it is only removed if
            # it holds no data at all.
            if location.holds_data(rel):
                notes.append(f"left episode directory {name} alone: no episode record but has files")
            else:
                location.remove_tree(rel)
                notes.append(f"removed episode {name}: created but never started, or its delete was cut short")
            continue
        assert attrs is not None
        if attrs["closed"]:
            continue
        notes.append(close_at_committed(store, location, name, attrs, "writer_crashed"))
    return notes


def close_at_committed(store: Any, location: StoreLocation, ep_id: str, attrs: dict[str, Any], end_reason: str) -> str:
    """Close an open episode at its committed length: what a killed writer left, or what a writer
    gave up mid-write (disk full). Each array's chunks past the marker are deleted before its
    metadata is rewritten (zarr's resize), so on a full disk this frees space before it needs any."""
    rel = f"{EPISODES}/{ep_id}"
    length = int(attrs["length"])
    if length == 0:
        location.remove_tree(rel)
        return f"removed episode {ep_id}: open with no committed step"
    location.sweep_node(rel)
    dropped = 0
    keys = array_keys(location.root / rel) if location.is_local else object_array_keys(store, rel)  # type: ignore[attr-defined]
    for key in keys:
        arr = zarr.open_array(store=store, path=f"{EPISODES}/{ep_id}/{key}", mode="r+")
        steps = arr.shape[0]
        if steps < length:
            raise StoreError(
                f"episode {ep_id} array {key!r} has {steps} steps but {length} are committed; "
                "the store was changed by something other than this writer"
            )
        if steps > length:
            arr.resize((length, *arr.shape[1:]))
            dropped = max(dropped, steps - length)
    location.make_durable(rel, tree=True)
    closed = dict(attrs)
    closed.update(
        closed=True,
        ended_at=attrs.get("committed_at", attrs["started_at"]),
        end_reason=end_reason,
        repaired={"at": time.time(), "uncommitted_steps_dropped": dropped},
    )
    group = zarr.open_group(store=store, path=f"{EPISODES}/{ep_id}", mode="r+")
    group.attrs.put(closed)
    location.make_durable(rel)
    return f"closed episode {ep_id} ({end_reason}) at {length} committed steps"
