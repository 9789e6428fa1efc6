"""Read-only access to a replay store, safe while the writer process appends.

Only committed steps are returned: an episode's `length` attribute is written after its data, so
any step below it is stored whole (see writer.py). No lock is taken. The store may be a directory or
an `s3://bucket/prefix` (replay/location.py).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from replay.chunks import ChunkedArray
from replay.event_log import EventLogReader
from replay.location import S3Options, StoreLocation, open_location
from replay.schema import (
    EPISODES,
    STORE_FORMAT,
    ArraySpec,
    EpisodeInfo,
    StoreError,
    array_specs,
    info_from_attrs,
    is_episode_id,
    is_episode_record,
)

# Open zarr array handles kept (a few KB each); enough for every key of dozens of episodes.
ARRAY_CACHE = 512


class ReplayReader:
    """Lists and reads episodes. `episodes()` and `read()` always look at the store as it is now;
    `refresh()` re-reads the root metadata (it changes when a writer records a compatible change)."""

    def __init__(self, path: str | os.PathLike[str] | StoreLocation, s3: S3Options | None = None) -> None:
        self.location = open_location(path, s3)
        self.path = self.location.path
        self._store: Any = None  # opened at the first zarr read
        self._closed: dict[str, EpisodeInfo] = {}  # closed episodes never change
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._direct: dict[tuple[str, str], ChunkedArray | None] = {}  # None: read with zarr
        self._meta: dict[str, Any] = {}
        self._specs: dict[str, ArraySpec] = {}
        self._event_log = EventLogReader(self.location)
        self.refresh()

    @property
    def meta(self) -> dict[str, Any]:
        return copy.deepcopy(self._meta)

    @property
    def keys(self) -> list[str]:
        """Every per-step array key, in store order ("obs/<camera>"..., "action", ...)."""
        return list(self._specs)

    def refresh(self) -> None:
        attrs = self.location.attrs()
        if attrs is None or attrs.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path} is not a replay store (missing or foreign zarr.json)")
        self._meta = attrs
        self._specs = array_specs(attrs)
        self._arrays.clear()
        self._direct.clear()

    def episodes(self, include_open: bool = False) -> list[EpisodeInfo]:
        """Episodes sorted by id; open ones (with their committed length) only if asked."""
        names = sorted((n for n in self.location.children(EPISODES) if is_episode_id(n)), key=int)
        for gone in set(self._closed) - set(names):  # discarded since we last looked
            del self._closed[gone]
        # Records not cached yet (open episodes, new ones) are read in one round: concurrent GETs on an
        # object store, where one at a time a long store's first listing would take minutes.
        fresh = self.location.attrs_many([f"{EPISODES}/{n}" for n in names if n not in self._closed])
        out = []
        for name in names:
            info = self._closed.get(name)
            if info is None:
                attrs = fresh[f"{EPISODES}/{name}"]
                if not is_episode_record(attrs):
                    continue  # being created, or deleted under our feet
                assert attrs is not None
                info = info_from_attrs(name, attrs)
                if info.closed:
                    self._closed[name] = info
            if info.closed or include_open:
                out.append(dataclasses.replace(info, attrs=copy.deepcopy(info.attrs)))
        return out

    def episode(self, episode_id: str) -> EpisodeInfo:
        """The current record of one episode (KeyError if there is none)."""
        info = self._closed.get(episode_id)
        if info is None:
            info = info_from_attrs(episode_id, self._attrs(episode_id))
        return dataclasses.replace(info, attrs=copy.deepcopy(info.attrs))

    def events(self, since_seq: int = 0) -> list[dict[str, Any]]:
        """The store's event log (replay.event_log), oldest first, from sequence number `since_seq`."""
        return self._event_log.events(since_seq)

    def read(
        self,
        episode_id: str,
        keys: Sequence[str] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Steps [start, stop) of `keys` (default: all), clipped to the committed length."""
        keys = self._check_keys(keys)
        for name, v in (("start", start), ("stop", stop)):
            if v is not None and (not isinstance(v, int | np.integer) or v < 0):
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        length = self._length(episode_id)
        stop = length if stop is None else min(int(stop), length)
        start = min(int(start), stop)
        if start == stop:
            return {k: np.empty((0, *self._specs[k].shape), self._specs[k].dtype) for k in keys}
        return self._guarded(episode_id, lambda: self._read_range(episode_id, keys, start, stop))

    def read_steps(
        self, episode_id: str, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Arbitrary committed steps of one episode (e.g. for random batches), in the order given."""
        keys = self._check_keys(keys)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        length = self._length(episode_id)
        if idx.size and (idx.min() < 0 or idx.max() >= length):
            raise IndexError(f"episode {episode_id} has {length} committed steps; asked for {idx.min()}..{idx.max()}")
        if idx.size == 0:
            return {k: np.empty((0, *self._specs[k].shape), self._specs[k].dtype) for k in keys}
        need = int(idx.max()) + 1
        # zarr's orthogonal selection wants increasing indices; sort, read once, restore the order.
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._guarded(
            episode_id,
            lambda: {k: self._array(episode_id, k, need).get_orthogonal_selection((uniq,))[inverse] for k in keys},
        )

    # -- internals --------------------------------------------------------------------------

    def _check_keys(self, keys: Sequence[str] | None) -> list[str]:
        if keys is None:
            return list(self._specs)
        if isinstance(keys, str):
            raise ValueError(f"keys must be a list of keys, got the string {keys!r}")
        unknown = [k for k in keys if k not in self._specs]
        if unknown:
            raise KeyError(f"unknown keys {unknown}; the store has {list(self._specs)}")
        return list(keys)

    def _attrs(self, episode_id: str) -> dict[str, Any]:
        if not isinstance(episode_id, str) or not is_episode_id(episode_id):
            raise KeyError(f"{episode_id!r} is not an episode id (expected digits like '000042')")
        attrs = self.location.attrs(f"{EPISODES}/{episode_id}")
        if not is_episode_record(attrs):
            raise KeyError(f"no episode {episode_id} in {self.path}")
        assert attrs is not None
        return attrs

    def _length(self, episode_id: str) -> int:
        info = self._closed.get(episode_id)
        return info.length if info is not None else int(self._attrs(episode_id)["length"])

    def _read_range(self, episode_id: str, keys: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Steps [start, stop) of `keys`: from their chunks if replay.chunks reads the layout (a chunk's
        layout never changes as the array grows, so the handle is kept), else via zarr. On an object
        store all keys' chunks are fetched in one concurrent round."""
        direct = self._direct_arrays(episode_id, keys)
        rel = f"{EPISODES}/{episode_id}"
        if self.location.is_local:
            raws: dict[str, bytes | None] = {}
        else:
            wanted = [f"{rel}/{k}/{c}" for k, arr in direct.items() if arr is not None for c in arr.chunk_keys(start, stop)]
            raws = self.location.read_many(wanted)
        out = {}
        for k in keys:
            arr = direct[k]
            if arr is None:
                out[k] = self._array(episode_id, k, stop)[start:stop]
            elif self.location.is_local:
                out[k] = arr.read(start, stop)
            else:
                out[k] = arr.assemble(start, stop, {c: raws[f"{rel}/{k}/{c}"] for c in arr.chunk_keys(start, stop)})
        return out

    def _direct_arrays(self, episode_id: str, keys: list[str]) -> dict[str, ChunkedArray | None]:
        missing = [k for k in keys if (episode_id, k) not in self._direct]
        if missing:
            rel = f"{EPISODES}/{episode_id}"
            if self.location.is_local:
                root = self.location.root  # type: ignore[attr-defined]
                opened = {k: ChunkedArray.open(root / rel / k) for k in missing}
            else:
                docs = self.location.read_many([f"{rel}/{k}/zarr.json" for k in missing])
                if any(docs[f"{rel}/{k}/zarr.json"] is None for k in missing):
                    raise FileNotFoundError(f"{self.path}: an array of episode {episode_id} is missing")
                opened = {k: ChunkedArray.from_document(f"{self.path}/{rel}/{k}", docs[f"{rel}/{k}/zarr.json"])
                          for k in missing}
            for k, arr in opened.items():
                self._direct[(episode_id, k)] = arr
            while len(self._direct) > ARRAY_CACHE:
                del self._direct[next(iter(self._direct))]
        return {k: self._direct.get((episode_id, k)) for k in keys}

    def _array(self, episode_id: str, key: str, need: int) -> zarr.Array:
        arr = self._arrays.pop((episode_id, key), None)
        if arr is None or arr.shape[0] < need:  # handle opened before the writer grew the array
            if self._store is None:
                self._store = self.location.zarr_store(read_only=True)
            arr = zarr.open_array(store=self._store, path=f"{EPISODES}/{episode_id}/{key}", mode="r")
        self._arrays[(episode_id, key)] = arr  # most recently used last
        while len(self._arrays) > ARRAY_CACHE:
            del self._arrays[next(iter(self._arrays))]
        return arr

    def _guarded(self, episode_id: str, fn: Any) -> dict[str, np.ndarray]:
        """Run a read; fail loudly if the episode was deleted meanwhile.

        zarr returns the fill value (zeros) for a missing chunk, so a read racing a discard could
        otherwise hand back zeros as if they were data. Deletion renames the directory (on an object
        store: removes the record) first, so checking it is still the same node after the read is enough.
        """
        rel = f"{EPISODES}/{episode_id}"
        before = self.location.identity(rel)
        try:
            out = fn() if before is not None else None
        except FileNotFoundError:
            out = None
        after = self.location.identity(rel)
        if out is None or before != after:
            self._closed.pop(episode_id, None)
            self._arrays = {k: v for k, v in self._arrays.items() if k[0] != episode_id}
            self._direct = {k: v for k, v in self._direct.items() if k[0] != episode_id}
            raise KeyError(f"episode {episode_id} was deleted while it was being read")
        return out
