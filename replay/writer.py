"""The one writer of a replay store: episodes are appended a whole chunk at a time, then committed.

Commit protocol (see DESIGN.md "The replay store"): for every write the arrays are resized and the
data written first; only then is the episode group's `length` attribute advanced. Readers trust
`length` alone. Every key write is atomic (atomic.AtomicLocalStore on disk, a PUT on an object
store: replay/location.py), so a kill -9 at any instant leaves the committed prefix whole, and
`repair.repair_store` trims the rest on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.array import AsyncArray
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync as zarr_sync
from zarr.storage import MemoryStore, StorePath

from replay.compat import compare_meta
from replay.event_log import EventLogWriter
from replay.location import S3Options, StoreLocation, open_location
from replay.lock import WriterLock
from replay.repair import close_at_committed, repair_store
from replay.schema import (
    EPISODES,
    KINDS,
    RESERVED_ATTRS,
    SCHEMA_VERSION,
    STORE_FORMAT,
    ArraySpec,
    EpisodeInfo,
    StoreError,
    StoreMeta,
    array_specs,
    episode_id,
    info_from_attrs,
    is_episode_id,
    jsonable,
)
from replay.space import StoreFullError, full_error, is_disk_full
from replay.step import StepValidator
from spec.direction import DIRECTIONS
from spec.files import PARTIAL_SUFFIX

# Low-dimensional arrays are tiny; a chunk of this many image chunks keeps the file count down.
# Their partial chunks are rewritten (read-modify-write) at each commit, which costs microseconds.
LOWDIM_CHUNK_FACTOR = 16

_IMAGE_CODEC = {"cname": "zstd", "clevel": 3, "shuffle": "bitshuffle"}
_LOWDIM_CODEC = {"cname": "zstd", "clevel": 3, "shuffle": "shuffle"}


def _free_attrs(attrs: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    attrs = jsonable(dict(attrs or {}), what)
    bad = sorted(set(attrs) & RESERVED_ATTRS)
    if bad:
        raise ValueError(f"{what} may not set {bad}: the store manages those itself")
    return attrs


def _write_error(path: Path | str, what: str, exc: OSError, after: str = "") -> StoreError:
    """StoreFullError for a full disk (the caller retries once space returns, or abandons the
    episode), else StoreError with `after`: what the caller may do next."""
    if is_disk_full(exc):
        return full_error(path, what, exc)
    return StoreError(f"{what} failed ({exc}){'; ' + after if after else ''}")


class ReplayWriter:
    """Exclusive writer of one store (a directory or an object-store prefix). Use `ReplayWriter.open(...)`;
    thread-safe."""

    def __init__(
        self,
        location: StoreLocation,
        store: Any,
        lock: Any,
        root_group: zarr.Group,
        chunk_steps: int,
        repairs: list[str],
    ) -> None:
        self.location = location
        self.path = location.path
        self.chunk_steps = chunk_steps
        self.repairs = repairs  # what was repaired at open, for the log
        self._store = store
        self._lock = lock
        self._root = root_group
        self._attrs = dict(root_group.attrs.asdict())
        self._specs = array_specs(self._attrs)
        self._mutex = threading.RLock()
        self._current: EpisodeWriter | None = None
        self._event_log = EventLogWriter(store, location)
        # Episodes given up mid-write (disk full) whose on-disk close is still owed: id -> end_reason.
        self._abandoned: dict[str, str] = {}
        existing = [int(n) for n in location.children(EPISODES) if is_episode_id(n)]
        self._next = max([int(self._attrs.get("next_episode", 0)), *[n + 1 for n in existing]])

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | StoreLocation,
        meta: StoreMeta,
        chunk_steps: int = 16,
        s3: S3Options | None = None,
    ) -> ReplayWriter:
        """Create or open the store at `path` (a directory, `s3://bucket/prefix` reached with `s3`, or a
        StoreLocation), take the writer lock and repair a killed writer's leftovers."""
        if not isinstance(meta, StoreMeta):
            raise TypeError(f"meta must be a StoreMeta, got {type(meta).__name__}")
        if not isinstance(chunk_steps, int) or isinstance(chunk_steps, bool) or chunk_steps < 1:
            raise ValueError(f"chunk_steps must be a positive int, got {chunk_steps!r}")
        location = open_location(path, s3)
        location.prepare()
        lock = location.writer_lock()
        try:
            store = location.zarr_store(read_only=False)
            root_group = _open_root(store, location, meta)
            repairs = repair_store(store, location)
            return cls(location, store, lock, root_group, chunk_steps, repairs)
        except BaseException:
            lock.release()
            raise

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._attrs)

    @property
    def current(self) -> EpisodeWriter | None:
        """The open episode, if any."""
        return self._current

    def begin_episode(self, kind: str, direction: str, attrs: Mapping[str, Any] | None = None) -> EpisodeWriter:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        free = _free_attrs(attrs, "episode attrs")
        with self._mutex:
            self._check_open()
            if self._current is not None:
                raise StoreError(f"episode {self._current.id} is still open; close or discard it first")
            self.tidy()
            number = self._next
            ep_id = episode_id(number)
            try:
                # Count first, so an id is never handed out twice even if this episode is later deleted.
                self._root.attrs.put({**self._attrs, "next_episode": number + 1})
                self._attrs["next_episode"] = number + 1
                self._next = number + 1
                ep_attrs = {
                    **free,
                    "kind": kind,
                    "direction": direction,
                    "closed": False,
                    "length": 0,
                    "success": None,
                    "started_at": time.time(),
                    "started_monotonic": time.monotonic(),
                    "ended_at": None,
                    "events": [],
                    "policy_versions": [],
                    "intervention_steps": 0,
                    "meta_revision": int(self._attrs.get("meta_revision", 0)),
                    "uid": uuid.uuid4().hex,
                    "writer_pid": os.getpid(),
                }
                group, arrays = _create_episode(self._store, f"{EPISODES}/{ep_id}", ep_attrs, self._specs,
                                                self.chunk_steps)
            except OSError as e:
                self.location.remove_tree(f"{EPISODES}/{ep_id}")  # holds no step yet; removing needs no space
                raise _write_error(self.path, f"starting episode {ep_id}", e) from e
            self._current = EpisodeWriter(self, ep_id, group, arrays, self._specs, ep_attrs, self.chunk_steps)
            return self._current

    def tidy(self) -> list[str]:
        """Close on disk the episodes given up mid-write (EpisodeWriter.abandon) at their committed
        length. Runs by itself at the next begin_episode; raises StoreFullError while the disk is
        still too full even for that (the next open's repair would also do it)."""
        notes = []
        with self._mutex:
            self._check_open()
            for ep_id, reason in list(self._abandoned.items()):
                attrs = self.location.attrs(f"{EPISODES}/{ep_id}")
                if attrs is not None and not attrs.get("closed"):
                    try:
                        notes.append(close_at_committed(self._store, self.location, ep_id, attrs, reason))
                    except OSError as e:
                        raise _write_error(self.path, f"closing abandoned episode {ep_id}", e) from e
                del self._abandoned[ep_id]
        return notes

    @property
    def untidy(self) -> list[str]:
        """Episodes given up mid-write whose on-disk close is still owed (see `tidy`)."""
        return sorted(self._abandoned)

    def append_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Add an event to the store's event log (replay.event_log), durable when this returns.

        `event` needs a string `type`; `time` defaults to now; the store adds `seq`. Returns the
        stored record."""
        with self._mutex:
            self._check_open()
            try:
                return self._event_log.append(event)
            except OSError as e:
                raise _write_error(self.path, "appending to the event log", e) from e

    def close(self) -> None:
        """Close the open episode (keeping its data) and release the lock. Idempotent."""
        with self._mutex:
            if not self._lock.held:
                return
            try:
                ep = self._current
                if ep is not None:
                    ep.close(**({} if "end_reason" in ep._attrs else {"end_reason": "writer_closed"}))
                if self._abandoned:
                    with contextlib.suppress(StoreFullError):
                        self.tidy()  # still full: the next open's repair closes them
            finally:
                self._current = None
                self._lock.release()

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._lock.held:
            raise StoreError(f"the writer of {self.path} is closed")

    def _episode_done(self, ep: EpisodeWriter) -> None:
        if self._current is ep:
            self._current = None


class EpisodeWriter:
    """One open episode. Steps are buffered in RAM and written a whole chunk at a time."""

    def __init__(
        self,
        owner: ReplayWriter,
        ep_id: str,
        group: zarr.Group,
        arrays: dict[str, zarr.Array],
        specs: dict[str, ArraySpec],
        attrs: dict[str, Any],
        chunk_steps: int,
    ) -> None:
        self.id = ep_id
        self._owner = owner
        self._mutex = owner._mutex
        self._group = group
        self._location = owner.location
        self._rel = f"{EPISODES}/{ep_id}"
        self._arrays = arrays
        self._specs = specs
        self._attrs = attrs
        self._chunk = chunk_steps
        self._grow = chunk_steps * LOWDIM_CHUNK_FACTOR
        self._validator = StepValidator(specs)
        # The buffer always starts at a chunk boundary: steps already written by a partial flush stay
        # in it, so the next write covers the whole chunk instead of re-reading it from disk.
        self._buf = {k: np.zeros((chunk_steps, *s.shape), dtype=s.dtype) for k, s in specs.items()}
        # Low-dim arrays have chunks of `_grow` steps: their current chunk is kept whole in RAM too, so
        # every write is of whole chunks and zarr never reads a chunk back to merge into it (on an
        # object store that read is a listing and a GET per array per commit).
        self._low = {k: np.zeros((self._grow, *s.shape), dtype=s.dtype) for k, s in specs.items() if not s.is_image}
        self._chunk_start = 0
        self._fill = 0
        self._committed = 0
        self._attrs_dirty = False
        self._versions: set[int] = set()
        self._state = "open"  # open | closed | deleted | discarded | abandoned

    @property
    def length(self) -> int:
        """Steps appended so far (written or still buffered)."""
        return self._chunk_start + self._fill

    @property
    def committed(self) -> int:
        """Steps readers can see."""
        return self._committed

    @property
    def closed(self) -> bool:
        return self._state != "open"

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    def append(self, step: Mapping[str, Any]) -> None:
        """Add one step. A full buffer (one chunk) is written and committed first.

        If this raises, the step was not taken and everything appended before it is kept
        (still buffered if the write failed, e.g. disk full), so the same step can be retried.
        """
        with self._mutex:
            self._check_open()
            values = self._validator.check(step)
            if self._fill == self._chunk:
                self._write_and_commit()
            for key, v in values.items():
                self._buf[key][self._fill] = v
            self._fill += 1
            self._validator.accepted(values)
            version = values["policy_version"]
            if version not in self._versions:
                self._versions.add(version)
                self._attrs["policy_versions"] = sorted(self._versions)
            if values["intervention"]:
                self._attrs["intervention_steps"] += 1

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Record an event (e.g. an intervention); `step` and `time` default to now. Saved at the next commit."""
        with self._mutex:
            self._check_open()
            ev = jsonable(dict(event), "event")
            ev.setdefault("step", self.length)
            ev.setdefault("time", time.time())
            self._attrs["events"] = [*self._attrs["events"], ev]
            self._attrs_dirty = True

    def update_attrs(self, **kv: Any) -> None:
        """Set free-form attrs (session id, phase, ...). Saved at the next commit."""
        with self._mutex:
            self._check_open()
            self._attrs.update(_free_attrs(kv, "update_attrs"))
            self._attrs_dirty = True

    def flush(self) -> None:
        """Write buffered steps (a partial chunk is fine) and commit them and pending attrs."""
        with self._mutex:
            self._check_open()
            self._write_and_commit()

    def close(self, success: bool | None = None, **attrs: Any) -> EpisodeInfo:
        """Flush, fsync and mark closed. An episode without steps is deleted (the result has length 0)."""
        if success is not None and not isinstance(success, bool | np.bool_):
            raise ValueError(f"success must be True, False or None, got {success!r}")
        free = _free_attrs(attrs, "close attrs")
        with self._mutex:
            self._check_open()
            if self.length == 0:
                self._location.remove_tree(self._rel)
                self._state = "deleted"
                self._owner._episode_done(self)
                info = info_from_attrs(self.id, {**self._attrs, **free, "closed": True, "deleted": True})
                info.ended_at = time.time()
                return info
            final = {**self._attrs, **free}
            final.setdefault("end_reason", "closed")
            final.update(closed=True, success=None if success is None else bool(success), ended_at=time.time())
            try:
                self._write_data()
                self._trim_arrays()
                self._location.make_durable(self._rel, tree=True)  # data is durable before the marker says "closed"
                self._commit(final)
            except OSError as e:
                raise _write_error(self._owner.path, f"closing episode {self.id}", e,
                                   "it stays open: retry close, or abandon it") from e
            self._state = "closed"
            self._owner._episode_done(self)
            self._location.make_durable(self._rel)
            return info_from_attrs(self.id, self._attrs)

    def abandon(self, reason: str) -> int:
        """Give up the steps not yet committed (e.g. the disk is full) and end the episode at its
        committed length, as readers already see it. Returns how many steps were dropped.

        The on-disk close (arrays cut back to the marker, end_reason=`reason`) is tried at once;
        if the disk cannot take even that, ReplayWriter.tidy does it at the next begin_episode
        and the next open's repair would too. Never raises for a full disk."""
        with self._mutex:
            self._check_open()
            dropped = self.length - self._committed
            self._state = "abandoned"
            self._owner._episode_done(self)
            self._owner._abandoned[self.id] = reason
            try:
                self._owner.tidy()
            except StoreError as e:
                if not is_disk_full(e):
                    raise
            return dropped

    def discard(self) -> None:
        """Delete this episode, open or closed (e.g. the operator threw a demonstration away)."""
        with self._mutex:
            if self._state in ("deleted", "discarded"):
                raise StoreError(f"episode {self.id} was already deleted")
            self._owner._check_open()  # only the lock holder changes the store
            self._location.remove_tree(self._rel)
            self._state = "discarded"
            self._owner._abandoned.pop(self.id, None)
            self._owner._episode_done(self)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"episode {self.id} is {self._state}; begin a new episode to record more steps")
        self._owner._check_open()

    def _write_and_commit(self) -> None:
        try:
            if self._write_data() or self._attrs_dirty:
                self._commit()
        except OSError as e:
            raise _write_error(
                self._owner.path, f"writing steps {self._chunk_start}..{self.length - 1} of episode {self.id}", e,
                "they stay buffered and the write is retried by the next append/flush/close",
            ) from e
        if self._fill == self._chunk:
            self._chunk_start += self._chunk
            self._fill = 0

    def _write_data(self) -> bool:
        end = self._chunk_start + self._fill
        if end <= self._committed:
            return False
        start, fill = self._chunk_start, self._fill
        # Arrays grow ahead in big steps (one metadata write per array per low-dim chunk) and are
        # cut to the exact length at close; readers go by `length`, never by array shapes.
        capacity = -(-end // self._grow) * self._grow

        writes = {}
        for key, buf in self._buf.items():
            buf[fill:] = 0  # the unwritten tail of a chunk holds the fill value, as zarr would store it
            if key in self._low:
                low_start = start // self._grow * self._grow
                low = self._low[key]
                low[start - low_start : end - low_start] = buf[:fill]
                low[end - low_start :] = 0
                writes[key] = (low_start, low)
            else:
                writes[key] = (start, buf)

        async def write_one(key: str, arr: AsyncArray[Any]) -> None:
            if arr.shape[0] < end:
                await arr.resize((capacity, *arr.shape[1:]))
            at, data = writes[key]
            await arr.setitem(slice(at, at + len(data)), data)  # whole chunks: capacity is a multiple of both

        async def write_all() -> None:
            await asyncio.gather(*(write_one(k, a.async_array) for k, a in self._arrays.items()))

        # One trip to zarr's event loop for all arrays: encodes and file writes overlap.
        zarr_sync(write_all())
        return True

    def _trim_arrays(self) -> None:
        end = self.length

        async def trim_all() -> None:
            arrays = [a.async_array for a in self._arrays.values() if a.shape[0] != end]
            # Nothing was written past `end`'s chunk, so there are no chunks to delete (on an object store
            # zarr would otherwise send a delete per chunk slot of the grown-ahead capacity).
            await asyncio.gather(*(a.resize((end, *a.shape[1:]), delete_outside_chunks=False) for a in arrays))

        zarr_sync(trim_all())

    def _commit(self, attrs: dict[str, Any] | None = None) -> None:
        """Advance the marker readers trust. Called only after the data it covers is written."""
        end = self._chunk_start + self._fill
        attrs = {**(self._attrs if attrs is None else attrs), "length": end, "committed_at": time.time()}
        self._group.attrs.put(attrs)
        self._attrs = attrs
        self._committed = end
        self._attrs_dirty = False


def _create_episode(
    store: Any, rel: str, attrs: dict[str, Any], specs: dict[str, ArraySpec], chunk_steps: int
) -> tuple[zarr.Group, dict[str, zarr.Array]]:
    """Write a new episode's group and empty arrays under `rel`; the group and arrays bound to `store`.

    The metadata documents are made in memory and written in two rounds (the group's record, then
    every array's document at once) instead of zarr's create calls, which check each parent with a
    read per level (over a hundred requests per episode on an object store).
    """
    docs: dict[str, Any] = {}
    mem = MemoryStore(docs)
    group = zarr.create_group(store=mem, attributes=attrs)
    obs = group.create_group("obs")
    made = {}
    for key, spec in specs.items():
        parent, name = (obs, key[4:]) if key.startswith("obs/") else (group, key)
        # Made as long as the first growth step (readers go by `length`): no resize at the first commit.
        made[key] = _create_array(parent, name, spec, chunk_steps, chunk_steps * LOWDIM_CHUNK_FACTOR)

    async def write_all() -> None:
        # The group's record is its first key: from here on repair knows this node is ours.
        await store.set(f"{rel}/zarr.json", docs["zarr.json"])
        await asyncio.gather(*(store.set(f"{rel}/{k}", v) for k, v in docs.items() if k != "zarr.json"))

    zarr_sync(write_all())
    bound = zarr.Group(AsyncGroup(metadata=group.metadata, store_path=StorePath(store, rel)))
    arrays = {
        key: zarr.Array(AsyncArray(metadata=a.metadata, store_path=StorePath(store, f"{rel}/{key}"),
                                   config=a.async_array.config))
        for key, a in made.items()
    }
    return bound, arrays


def _create_array(parent: zarr.Group, name: str, spec: ArraySpec, chunk_steps: int, steps: int) -> zarr.Array:
    if spec.is_image:
        chunks = (chunk_steps, *spec.shape)
        codec = BloscCodec(**_IMAGE_CODEC)
        dims = ("step", "y", "x", "rgb")
    else:
        chunks = (chunk_steps * LOWDIM_CHUNK_FACTOR, *spec.shape)
        codec = BloscCodec(**_LOWDIM_CODEC)
        dims = ("step", *(f"d{i}" for i in range(len(spec.shape))))
    return parent.create_array(
        name,
        shape=(steps, *spec.shape),
        chunks=chunks,
        dtype=spec.dtype,
        compressors=[codec],
        fill_value=spec.dtype.type(0),
        dimension_names=dims,
        # Always write chunks: skips zarr's scan of every chunk for "all zeros" (~5 ms per image
        # chunk) and a chunk file then exists for every written step, black frames included.
        config={"write_empty_chunks": True},
    )


def _open_root(store: Any, location: StoreLocation, meta: StoreMeta) -> zarr.Group:
    """Create the root group, or check `meta` against it and record compatible changes."""
    new = meta.to_attrs()
    existing = location.attrs()
    root = location.path
    if existing is None:
        ours = (PARTIAL_SUFFIX, "writer-lock.json")  # temp files; the object store's lock object
        others = sorted(n for n in location.children() if not n.endswith(ours))
        if others:
            raise StoreError(f"{root} is not a replay store (no zarr.json) but holds {others[:5]}; refusing to write")
        attrs = {
            "format": STORE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            **new,
            "created_at": time.time(),
            "meta_revision": 0,
            "meta_history": [],
            "next_episode": 0,
            "writer": WriterLock.holder_record(),
        }
        group = zarr.create_group(store=store, attributes=attrs)
    else:
        if existing.get("format") != STORE_FORMAT:
            raise StoreError(f"{root} is a zarr store but not a replay store (format={existing.get('format')!r})")
        if existing.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{root} has replay schema version {existing.get('schema_version')!r}; "
                f"this code reads version {SCHEMA_VERSION}"
            )
        problems, changes = compare_meta(existing, new)
        if problems:
            raise StoreError(f"store {root} was recorded with different, incompatible metadata: " + "; ".join(problems))
        group = zarr.open_group(store=store, mode="r+")
        attrs = {**existing, "writer": WriterLock.holder_record()}
        if changes:
            revision = int(existing.get("meta_revision", 0)) + 1
            history = [*existing.get("meta_history", []), {"revision": revision, "at": time.time(), "changes": changes}]
            attrs.update(new, meta_revision=revision, meta_history=history)
        group.attrs.put(attrs)
    if location.attrs(EPISODES) is None:
        zarr.create_group(store=store, path=EPISODES)
    location.make_durable("")
    return group
