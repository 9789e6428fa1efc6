"""Whether the replay store's disk can take more steps, as the writer thread sees it.

The store is "full" after a write failed with ENOSPC/EDQUOT, or when a periodic check (every
`store.space_check_s`, on the writer thread, never the tick) finds less than `store.min_free_mb`
free. It is "ready" again once `store.resume_free_mb` are free. The control thread reads `full`
(one immutable record, replaced whole) to pause practice and ask for help.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from replay.store import free_bytes
from spec.config import StoreConfig

MB = 1024 * 1024


@dataclass(frozen=True)
class StoreFull:
    """Why the store takes no steps now, for /status, the event log and the help request."""

    cause: str  # what failed, or how little space is left
    path: str
    free_mb: float | None
    resume_free_mb: float
    since: float  # wall time

    @property
    def message(self) -> str:
        return (f"the replay store cannot take more steps: {self.cause}. Free space on the disk holding "
                f"{self.path}: practice paused for it resumes by itself once {self.resume_free_mb:g} MB are free")

    def as_dict(self) -> dict[str, object]:
        return {"message": self.message, "cause": self.cause, "path": self.path, "free_mb": self.free_mb,
                "resume_free_mb": self.resume_free_mb, "since": self.since}


class StoreSpace:
    def __init__(self, cfg: StoreConfig) -> None:
        self.path = cfg.path  # a directory, or an s3:// URL (no disk to watch: probes answer None)
        self.min_free_mb = cfg.min_free_mb
        self.resume_free_mb = cfg.resume_free_mb
        self.every_s = cfg.space_check_s
        self.full: StoreFull | None = None
        self.free_mb: float | None = None  # at the last check
        self.checks = 0
        self.pauses = 0  # times the store became full
        self._next = 0.0

    def due_in(self) -> float:
        """Seconds until the next check is due (0: now)."""
        return max(0.0, self._next - time.monotonic())

    def probe(self) -> float | None:
        """Measure free space now (MB), or None if the filesystem cannot be asked."""
        self._next = time.monotonic() + self.every_s
        self.checks += 1
        try:
            self.free_mb = free_bytes(self.path) / MB
        except OSError:
            self.free_mb = None
        return self.free_mb

    def below_floor(self) -> bool:
        """While not full: is free space under `store.min_free_mb`? Marks the store full if so."""
        free = self.probe()
        if free is None or free >= self.min_free_mb:
            return False
        self.mark_full(f"only {free:.1f} MB are free on the disk holding {self.path}, "
                       f"below store.min_free_mb={self.min_free_mb:g}")
        return True

    def room_to_resume(self) -> bool:
        """While full: is there `store.resume_free_mb` of free space again?"""
        free = self.probe()
        return free is not None and free >= self.resume_free_mb

    def mark_full(self, cause: str, free_bytes_now: int | None = None) -> None:
        if free_bytes_now is not None:
            self.free_mb = free_bytes_now / MB
        free = None if self.free_mb is None else round(self.free_mb, 1)
        if self.full is None:
            self.pauses += 1
            self.full = StoreFull(cause, str(self.path), free, self.resume_free_mb, time.time())
        else:  # keep what filled it (the operator's message stays put); later failures follow from it
            self.full = dataclasses.replace(self.full, free_mb=free)
        self._next = time.monotonic() + self.every_s

    def clear(self) -> None:
        self.full = None

    def status(self) -> dict[str, object]:
        return {
            "full": None if self.full is None else self.full.as_dict(),
            "free_mb": None if self.free_mb is None else round(self.free_mb, 1),
            "min_free_mb": self.min_free_mb,
            "resume_free_mb": self.resume_free_mb,
            "space_checks": self.checks,
            "space_pauses": self.pauses,
        }
