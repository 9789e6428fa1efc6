"""Shared by the bench scripts (run as `python bench/<name>.py`, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], iters: int, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`, `iters` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out
