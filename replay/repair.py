"""Undo what a killed writer left half-done, before a new writer appends.

Ordering in the writer makes this simple: data first, commit marker (the episode group's attrs)
second, so everything past `length` is garbage and everything before it is whole. Repair shrinks
the arrays of open episodes back to their committed length, marks them closed with
end_reason="writer_crashed", and deletes episodes that never committed a step. Closed episodes are
never touched. Repair is idempotent, so a kill during repair is repaired by the next start.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import zarr

from replay.atomic import AtomicLocalStore, remove_partials, remove_tree, sweep_trash
from replay.event_log import repair_events
from replay.schema import EPISODES, StoreError, is_episode_id, is_episode_record, read_node_attrs
from spec.files import PARTIAL_SUFFIX, fsync_dir, fsync_file, fsync_tree


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


def repair_store(store: AtomicLocalStore, root: Path) -> list[str]:
    """Repair every open episode; return one human-readable note per action taken."""
    notes: list[str] = []
    ep_root = root / EPISODES
    for p in sweep_trash(ep_root):
        notes.append(f"removed leftover of an interrupted delete: {p.name}")
    for p in remove_partials(root, recursive=False) + remove_partials(ep_root, recursive=False):
        notes.append(f"removed partial file {p.name}")
    notes += repair_events(root)
    if not ep_root.is_dir():
        return notes
    for child in sorted(ep_root.iterdir(), key=lambda p: p.name):
        if not child.is_dir() or not is_episode_id(child.name):
            continue
        attrs = read_node_attrs(child)
        if not is_episode_record(attrs):
            # begin_episode writes the group's attrs before anything else, so a directory without
            # them holds no committed step; only remove it if it holds no data at all.
            leftovers = [p for p in child.rglob("*") if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)]
            if leftovers:
                notes.append(f"left episode directory {child.name} alone: no episode record but has files")
            else:
                remove_tree(child)
                notes.append(f"removed episode {child.name}: created but never started")
            continue
        assert attrs is not None
        if attrs["closed"]:
            continue
        notes.append(close_at_committed(store, child, attrs, "writer_crashed"))
    return notes


def close_at_committed(store: AtomicLocalStore, ep_dir: Path, attrs: dict[str, Any], end_reason: str) -> str:
    """Close an open episode at its committed length: what a killed writer left, or what a writer
    gave up mid-write (disk full). Each array's chunks past the marker are deleted before its
    metadata is rewritten (zarr's resize), so on a full disk this frees space before it needs any."""
    ep_id = ep_dir.name
    length = int(attrs["length"])
    if length == 0:
        remove_tree(ep_dir)
        return f"removed episode {ep_id}: open with no committed step"
    remove_partials(ep_dir, recursive=True)
    dropped = 0
    for key in array_keys(ep_dir):
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
    fsync_tree(ep_dir)
    closed = dict(attrs)
    closed.update(
        closed=True,
        ended_at=attrs.get("committed_at", attrs["started_at"]),
        end_reason=end_reason,
        repaired={"at": time.time(), "uncommitted_steps_dropped": dropped},
    )
    group = zarr.open_group(store=store, path=f"{EPISODES}/{ep_id}", mode="r+")
    group.attrs.put(closed)
    fsync_file(ep_dir / "zarr.json")
    fsync_dir(ep_dir)
    return f"closed episode {ep_id} ({end_reason}) at {length} committed steps"
