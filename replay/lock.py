"""The one-writer rule: an exclusive flock on the store directory, released when the holder dies.

The directory itself is locked (its inode never changes, unlike zarr.json which is replaced on every
write), so the store holds no extra file that zarr would trip over when listing the hierarchy. The
holder records its pid in the root attrs ("writer"), which is what a refused writer reports.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

from replay.schema import StoreLockedError, read_node_attrs


class WriterLock:
    def __init__(self, root: Path) -> None:
        self.root = root
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = (read_node_attrs(root) or {}).get("writer") or {}
            pid = holder.get("pid") if isinstance(holder.get("pid"), int) else None
            who = f"pid {pid} on {holder.get('host', '?')}" if pid is not None else "another process"
            raise StoreLockedError(
                f"replay store {root} is already open for writing by {who}; only one writer process is allowed",
                pid,
            ) from None
        self._fd: int | None = fd
        _held.add(self)

    @staticmethod
    def holder_record() -> dict[str, Any]:
        """What the holder writes into the root attrs once it has the lock."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "opened_at": time.time()}

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
            _held.discard(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _forget_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops only the child's reference: the parent keeps the lock
            self._fd = None
        _held.discard(self)


# A forked child shares the parent's locked descriptor and would keep the store locked after the
# parent died; it is not the writer, so it lets go (its writer object then reports "closed").
# Strong references: a writer dropped without close() keeps its lock until the process exits.
_held: set[WriterLock] = set()
os.register_at_fork(after_in_child=lambda: [lock._forget_in_child() for lock in list(_held)])
