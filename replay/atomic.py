"""The store's crash-safe keys and directory removal (the file primitives are in spec.files).

zarr 3.1.6's LocalStore
happens to write through a temp file, but older 3.1.x releases did not, so the store wraps it and
makes every key (metadata and chunks alike) a write-temp-then-rename. Rewriting a partial chunk at
the next flush then can never tear data that was already committed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from spec.files import PARTIAL_SUFFIX, atomic_write_bytes


def remove_partials(root: Path, recursive: bool) -> list[Path]:
    """Delete temp files a killed writer left behind (ours and zarr's own use the same suffix)."""
    if not root.is_dir():
        return []
    found = list(root.rglob(f"*{PARTIAL_SUFFIX}") if recursive else root.glob(f"*{PARTIAL_SUFFIX}"))
    for p in found:
        if p.is_file():
            p.unlink(missing_ok=True)
    return found


class AtomicLocalStore(LocalStore):
    """A zarr LocalStore whose every write is atomic with respect to a process kill."""

    def _atomic_put(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"value for {key!r} must be a zarr Buffer, got {type(value).__name__}")
        atomic_write_bytes(self.root / key, value.as_buffer_like(), exclusive=exclusive)

    async def set(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        await asyncio.to_thread(self._atomic_put, key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        await asyncio.to_thread(self._atomic_put, key, value, True)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        self._atomic_put(key, value)


TRASH_PREFIX = ".trash-"


def remove_tree(path: Path) -> None:
    """Delete a directory so that a kill mid-way never leaves half of it under its own name.

    It is first renamed to a hidden trash name (atomic), then removed; leftovers of a killed
    removal are swept by `sweep_trash`.
    """
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def sweep_trash(parent: Path) -> list[Path]:
    found = [p for p in parent.glob(f"{TRASH_PREFIX}*") if p.is_dir()] if parent.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


