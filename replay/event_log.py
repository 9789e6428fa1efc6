"""The store's event log: operator-relevant events (interventions, resets, help requests, ...)
that belong to no episode, kept append-only next to the episodes and read back after a restart.

Layout: `events/<block>/zarr.json`, one zarr group per block of up to EVENTS_PER_BLOCK events,
held in the group's `events` attribute, oldest first. Each event gets `seq` (0, 1, 2, ... over
the store's life) and `time`. Appending rewrites only the last block's zarr.json, and that write
is atomic (atomic.AtomicLocalStore, or a PUT on an object store): the file is both the data and its commit, so a reader or a
killed writer sees an event whole or not at all. Full blocks never change again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import zarr

from replay.location import StoreLocation
from replay.schema import EVENTS, is_episode_id, jsonable

EVENTS_PER_BLOCK = 256
_RESERVED = ("seq", "time")


def _block_name(number: int) -> str:
    return f"{number:06d}"


def _blocks(location: StoreLocation) -> list[str]:
    """Block directories in order (block names follow episode ids: zero-padded numbers)."""
    return sorted((n for n in location.children(EVENTS) if is_episode_id(n)), key=int)


def repair_events(location: StoreLocation) -> list[str]:
    """Remove what a killed writer left half-done: temp files and blocks without their zarr.json."""
    notes = [f"removed partial event file {n}" for n in location.sweep_partials(EVENTS)]
    for name in _blocks(location):
        rel = f"{EVENTS}/{name}"
        if location.attrs(rel) is None and not location.children(rel):
            location.remove_tree(rel)
            notes.append(f"removed empty event block {name}")
    return notes


class EventLogWriter:
    """Appends events; used by ReplayWriter (under its lock and mutex) only."""

    def __init__(self, store: Any, location: StoreLocation) -> None:
        self._store = store
        self._location = location
        self._per_block = per_block = EVENTS_PER_BLOCK
        if location.attrs(EVENTS) is None:
            zarr.create_group(store=store, path=EVENTS)
        self._group = zarr.open_group(store=store, path=EVENTS, mode="r+")
        blocks = _blocks(location)
        self._block = int(blocks[-1]) if blocks else 0
        last = (location.attrs(f"{EVENTS}/{blocks[-1]}") or {}) if blocks else {}
        self._events: list[dict[str, Any]] = list(last.get("events", []))
        self._next_seq = self._events[-1]["seq"] + 1 if self._events else self._block * per_block

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        ev = jsonable(dict(event), "event")
        if not isinstance(ev.get("type"), str) or not ev["type"]:
            raise ValueError(f"an event needs a non-empty string 'type', got {ev.get('type')!r}")
        if "seq" in ev:
            raise ValueError("an event may not set 'seq': the store numbers events itself")
        ev = {"seq": self._next_seq, "time": ev.pop("time", time.time()), **ev}
        if len(self._events) >= self._per_block:
            self._block += 1
            self._events = []
        events = [*self._events, ev]
        name = _block_name(self._block)
        if self._events:
            zarr.open_group(store=self._store, path=f"{EVENTS}/{name}", mode="r+").attrs.put({"events": events})
        else:
            self._group.create_group(name, attributes={"events": events})
        # Events are rare and precious (interventions are the product's cost metric): make each durable.
        self._location.make_durable(f"{EVENTS}/{name}")
        self._events = events
        self._next_seq += 1
        return dict(ev)


class EventLogReader:
    """Reads the event log; full blocks are cached (they never change)."""

    def __init__(self, location: StoreLocation) -> None:
        self._location = location
        self._full: dict[str, list[dict[str, Any]]] = {}

    def events(self, since_seq: int = 0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in _blocks(self._location):
            block = self._full.get(name)
            if block is None:
                attrs = self._location.attrs(f"{EVENTS}/{name}")
                if attrs is None:
                    continue  # being created
                block = list(attrs.get("events", []))
                if len(block) >= EVENTS_PER_BLOCK:
                    self._full[name] = block
            out.extend(dict(ev) for ev in block if ev.get("seq", -1) >= since_seq)
        return out
