"""Replay store (zarr v3): episodes written by one process, read by many, safe against kill -9."""

from replay.store import (
    EpisodeInfo,
    EpisodeWriter,
    ReplayReader,
    ReplayWriter,
    StoreError,
    StoreLockedError,
    StoreMeta,
)

__all__ = [
    "EpisodeInfo",
    "EpisodeWriter",
    "ReplayReader",
    "ReplayWriter",
    "StoreError",
    "StoreLockedError",
    "StoreMeta",
]
