"""Where a replay store lives: a local directory or an S3-compatible object-store prefix.

The writer, reader, repair and event log reach the store only through a StoreLocation, so the
commit rule is the same in both places: data first, then the episode's `length` marker; readers
trust only the marker; a restarted writer shrinks open episodes back to it (replay/repair.py).

What each place provides for that rule:

- Local (`LocalLocation`): every key is written to a temp file and renamed (replay/atomic.py),
  fsync makes closes and events durable, a delete renames the directory away first, and the
  one-writer rule is an flock (replay/lock.py).
- S3 (`S3Location`, `s3://bucket/prefix`): a PUT is atomic (an object is whole or absent) and
  durable when it returns, so no temp files and no fsync. There is no rename: a delete removes the
  episode's record (its zarr.json) first, so a prefix without a record never holds a committed step
  and repair removes it. The one-writer rule is a lock object with owner and heartbeat, taken and
  renewed with conditional PUTs (replay/s3_lock.py).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.storage import LocalStore

from replay.atomic import AtomicLocalStore, remove_partials, remove_tree, sweep_trash
from spec.files import fsync_dir, fsync_file, fsync_tree

if TYPE_CHECKING:
    from spec.config import StoreConfig

S3_SCHEME = "s3://"
DEFAULT_LEASE_S = 30.0


def is_s3_url(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and path.startswith(S3_SCHEME)


def _doc_attrs(raw: bytes | None) -> dict[str, Any] | None:
    """The attributes of a zarr v3 node document; None if absent or not a zarr document."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class StoreLocation(ABC):
    """One store's place. `rel` arguments are keys relative to the store root ("episodes/000003")."""

    is_local: bool
    path: Path | str  # a Path for a directory, the URL for an object store (what messages show)

    def __str__(self) -> str:
        return str(self.path)

    @abstractmethod
    def zarr_store(self, read_only: bool) -> Store:
        """The zarr store over this location (writes land whole or not at all)."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """One key's bytes, None if it does not exist."""

    def read_many(self, keys: list[str]) -> dict[str, bytes | None]:
        """Several keys' bytes (None for a missing one); an object store fetches them concurrently."""
        return {k: self.read_bytes(k) for k in keys}

    def attrs(self, rel: str = "") -> dict[str, Any] | None:
        """The attributes in node `rel`'s zarr.json, None if it is missing or not a zarr document."""
        return _doc_attrs(self.read_bytes(_join(rel, "zarr.json")))

    def attrs_many(self, rels: list[str]) -> dict[str, dict[str, Any] | None]:
        """`attrs` of several nodes, read in one round."""
        raw = self.read_many([_join(rel, "zarr.json") for rel in rels])
        return {rel: _doc_attrs(raw[_join(rel, "zarr.json")]) for rel in rels}

    @abstractmethod
    def children(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (sub-groups, arrays and keys)."""

    @abstractmethod
    def remove_tree(self, rel: str) -> None:
        """Delete node `rel` and all under it; a kill mid-way never leaves a half node under its record."""

    @abstractmethod
    def identity(self, rel: str) -> Hashable | None:
        """Something that changes if node `rel` is deleted (and a new one appears); None if absent."""

    @abstractmethod
    def make_durable(self, rel: str, tree: bool = False) -> None:
        """Make node `rel`'s zarr.json (or with `tree`, everything under it) survive a power cut."""

    @abstractmethod
    def prepare(self) -> None:
        """Make the location exist, before the writer takes its lock."""

    @abstractmethod
    def writer_lock(self) -> Any:
        """Take the one-writer lock (StoreLockedError if another process holds it); has .held and .release()."""

    @abstractmethod
    def sweep(self, rels: list[str]) -> list[str]:
        """Remove leftovers of a killed writer's file operations directly under `rels`; notes of what went."""

    @abstractmethod
    def sweep_partials(self, rel: str) -> list[str]:
        """Remove temp files anywhere under `rel`; their names."""

    @abstractmethod
    def sweep_node(self, rel: str) -> None:
        """Remove leftovers of a killed writer's file operations anywhere under node `rel`."""

    @abstractmethod
    def holds_data(self, rel: str) -> bool:
        """Whether anything (other than temp files) lies under `rel`."""


class LocalLocation(StoreLocation):
    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = self.root = Path(root)

    def zarr_store(self, read_only: bool) -> Store:
        return LocalStore(self.root, read_only=True) if read_only else AtomicLocalStore(self.root)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def children(self, rel: str = "") -> list[str]:
        try:
            return os.listdir(self.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove_tree(self, rel: str) -> None:
        remove_tree(self.root / rel)

    def identity(self, rel: str) -> Hashable | None:
        try:
            return (self.root / rel).stat().st_ino  # a delete renames the directory away first
        except FileNotFoundError:
            return None

    def make_durable(self, rel: str, tree: bool = False) -> None:
        node = self.root / rel
        if tree:
            fsync_tree(node)
        else:
            fsync_file(node / "zarr.json")
            fsync_dir(node)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def writer_lock(self) -> Any:
        from replay.lock import WriterLock

        return WriterLock(self.root)

    def sweep(self, rels: list[str]) -> list[str]:
        notes = []
        for rel in rels:
            notes += [f"removed leftover of an interrupted delete: {p.name}" for p in sweep_trash(self.root / rel)]
            notes += [f"removed partial file {p.name}" for p in remove_partials(self.root / rel, recursive=False)]
        return notes

    def sweep_partials(self, rel: str) -> list[str]:
        return [p.name for p in remove_partials(self.root / rel, recursive=True)]

    def sweep_node(self, rel: str) -> None:
        remove_partials(self.root / rel, recursive=True)

    def holds_data(self, rel: str) -> bool:
        from spec.files import PARTIAL_SUFFIX

        return any(p.is_file() and not p.name.endswith(PARTIAL_SUFFIX) for p in (self.root / rel).rglob("*"))


@dataclass(frozen=True)
class S3Options:
    """How to reach the object store. Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY env vars, ~/.aws, an instance role); `endpoint_url` (also AWS_ENDPOINT_URL)
    points at MinIO, moto or another S3-compatible server."""

    endpoint_url: str | None = None
    region: str | None = None
    lock_lease_s: float = DEFAULT_LEASE_S

    def storage_options(self) -> dict[str, Any]:
        # A reader must see new episodes at once: no listings cache. Objects here are small, so one
        # GET each (s3fs's default first asks the size with a HEAD, to split big objects up).
        opts: dict[str, Any] = {"use_listings_cache": False, "max_concurrency": 1}
        if self.endpoint_url:
            opts["endpoint_url"] = self.endpoint_url
        if self.region:
            opts["client_kwargs"] = {"region_name": self.region}
        return opts


class S3Location(StoreLocation):
    is_local = False

    def __init__(self, url: str, options: S3Options | None = None) -> None:
        if not is_s3_url(url):
            raise ValueError(f"an object-store location must look like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[len(S3_SCHEME):].partition("/")
        if not bucket or not prefix.strip("/"):
            raise ValueError(f"store URL {url!r} needs a bucket and a prefix (s3://bucket/prefix): one prefix per robot")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.path = self.url = f"{S3_SCHEME}{bucket}/{self.prefix}"
        self.options = options or S3Options()
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        """A synchronous s3fs filesystem for the non-zarr calls (lists, deletes, the lock object)."""
        if self._fs is None:
            import s3fs

            self._fs = s3fs.S3FileSystem(**self.options.storage_options())
        return self._fs

    def key(self, rel: str) -> str:
        """The object key of `rel` within the bucket."""
        return _join(self.prefix, rel)

    def _full(self, rel: str) -> str:
        return _join(self.bucket, self.key(rel))

    def zarr_store(self, read_only: bool) -> Store:
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, storage_options=self.options.storage_options(), read_only=read_only)

    def read_bytes(self, key: str) -> bytes | None:
        return self.read_many([key])[key]

    def read_many(self, keys: list[str]) -> dict[str, bytes | None]:
        if not keys:
            return {}
        paths = [self._full(k) for k in keys]
        got = self.fs.cat(paths, on_error="return")  # concurrent GETs; errors come back as values
        out: dict[str, bytes | None] = {}
        for key, path in zip(keys, paths, strict=True):
            value = got.get(path)
            if isinstance(value, FileNotFoundError):
                value = None
            elif isinstance(value, BaseException):
                raise value
            out[key] = None if value is None else bytes(value)
        return out

    def children(self, rel: str = "") -> list[str]:
        try:
            entries = self.fs.ls(self._full(rel), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def remove_tree(self, rel: str) -> None:
        # The record first: from then on readers and repair see no episode here, so a kill before
        # the rest is gone leaves only unreachable objects, which the next repair deletes.
        self.fs.rm_file(self._full(_join(rel, "zarr.json")))
        if self.fs.exists(self._full(rel)):
            self.fs.rm(self._full(rel), recursive=True)

    def identity(self, rel: str) -> Hashable | None:
        attrs = self.attrs(rel)
        return None if attrs is None else attrs.get("uid", "")  # episodes carry a fresh uid each

    def make_durable(self, rel: str, tree: bool = False) -> None:
        """A PUT is durable when it returns."""

    def prepare(self) -> None:
        """Buckets are made by whoever runs the object store; prefixes need no creating."""
        if not self.fs.exists(self.bucket):
            raise FileNotFoundError(f"bucket {self.bucket!r} of {self.url} does not exist (or these credentials cannot see it)")

    def writer_lock(self) -> Any:
        from replay.s3_lock import S3WriterLock

        return S3WriterLock(self)

    def sweep(self, rels: list[str]) -> list[str]:
        return []  # no temp files or trash on an object store

    def sweep_partials(self, rel: str) -> list[str]:
        return []  # PUTs leave no partial objects

    def sweep_node(self, rel: str) -> None:
        """Nothing: PUTs leave no partial objects."""

    def holds_data(self, rel: str) -> bool:
        return False  # without its record a prefix holds no committed step (see remove_tree)


def open_location(path: str | os.PathLike[str] | StoreLocation, options: S3Options | None = None) -> StoreLocation:
    """A location from a directory path, an `s3://bucket/prefix` URL, or an existing location."""
    if isinstance(path, StoreLocation):
        return path
    if is_s3_url(path):
        assert isinstance(path, str)
        return S3Location(path, options)
    return LocalLocation(path)


def store_location(cfg: StoreConfig) -> StoreLocation:
    """The location a config's `store` section names (store.path plus its object-store settings)."""
    options = S3Options(endpoint_url=cfg.endpoint_url, region=cfg.region, lock_lease_s=cfg.lock_lease_s)
    return open_location(cfg.path, options)
