"""A full disk, told apart from other write failures: the typed error and the free-space probe.

A full disk (ENOSPC, or EDQUOT for a quota) is not a bug in the data: the writer stops cleanly,
keeps what is committed, and the caller may try again once space returns (robot_server pauses
practice and resumes it by itself). Any other OSError stays a plain StoreError.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from replay.schema import StoreError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MB = 1024 * 1024


class StoreFullError(StoreError):
    """A write failed because the store's disk (or quota) is full. Committed steps are intact."""

    def __init__(self, message: str, path: Path, free_bytes: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.free_bytes = free_bytes  # at the time of the failure; None if it could not be read


def is_disk_full(exc: BaseException) -> bool:
    """True if `exc`, or an error it was raised from, is ENOSPC/EDQUOT."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, StoreFullError) or (isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path` (one statvfs)."""
    return shutil.disk_usage(path).free


def free_text(path: Path) -> tuple[int | None, str]:
    """The free space of `path`'s filesystem, as bytes and as text for a message."""
    try:
        free = free_bytes(path)
    except OSError as e:
        return None, f"free space unknown ({e.strerror})"
    return free, f"{free / MB:.1f} MB free"


def full_error(path: Path, what: str, exc: OSError) -> StoreFullError:
    """The StoreFullError for a disk-full `exc` raised while doing `what` in the store at `path`."""
    free, text = free_text(path)
    return StoreFullError(f"{what} failed: the disk holding {path} is full ({exc.strerror or exc}; {text})",
                          path, free)
