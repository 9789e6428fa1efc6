"""Replay store (zarr v3): episodes written by one process, read by many, safe against kill -9.

The public API is `replay.store` (ReplayWriter, ReplayReader, EpisodeInfo, StoreMeta, errors).
"""
