"""The one host clock for frame, tick and arm-state timestamps (monotonic seconds)."""

from __future__ import annotations

import time


def now() -> float:
    return time.monotonic()
