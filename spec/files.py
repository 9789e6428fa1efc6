"""Crash-safe files: every write lands whole or not at all, and fsync when durability matters.

A kill -9 during a plain `open(..., "wb").write()` leaves a truncated file; a write to a temp file
in the same directory and a rename cannot.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

# Temp files end in this suffix; the store writer deletes leftovers from a killed process on start.
PARTIAL_SUFFIX = ".partial"


def atomic_write_bytes(
    path: Path, data: bytes | memoryview, exclusive: bool = False, fsync: bool = False, mode: int | None = None
) -> bool:
    """Write `data` to `path` via a temp file in the same directory and a rename.

    With `exclusive`, an existing `path` is left alone and False is returned. `mode` sets the
    file's permission bits (e.g. to keep those of the file it replaces).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if exclusive:
            try:
                os.link(tmp, path)  # fails if path exists, unlike rename
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
        return True
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> int:
    """fsync every file and directory under `root` (files first, then their directories)."""
    count = 0
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(dirpath, name))
            count += 1
        fsync_dir(Path(dirpath))
        count += 1
    return count
