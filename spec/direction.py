"""Which way the task runs: forward (do it) or backward (undo it). MEDAL++ has one agent per direction."""

from __future__ import annotations

from typing import Literal

Direction = Literal["forward", "backward"]
DIRECTIONS: tuple[Direction, Direction] = ("forward", "backward")


def check_direction(direction: str) -> Direction:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    return direction  # type: ignore[return-value]
