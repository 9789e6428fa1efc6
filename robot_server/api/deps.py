"""Shared helpers for the route modules: the daemon, and running a command on the control thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from replay.store import ReplayReader
from robot_server.daemon import Daemon
from robot_server.supervisor import Supervisor
from robot_server.tick import CommandError

T = TypeVar("T")


def daemon_of(request: Request) -> Daemon:
    return request.app.state.daemon


def store_reader(request: Request) -> ReplayReader:
    """A reader of the daemon's store, kept on the app (its closed-episode cache stays warm)."""
    app = request.app
    if getattr(app.state, "reader", None) is None:
        app.state.reader = ReplayReader(daemon_of(request).writer.location)
    app.state.reader.refresh()
    return app.state.reader


async def command(request: Request, fn: Callable[[Supervisor], T], timeout: float = 5.0) -> T:
    """Run `fn` on the control thread at its next tick; a state conflict becomes a 409."""
    d = daemon_of(request)
    if not d.loop.running:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the control loop is not running")
    try:
        # The tick that runs the command publishes its status snapshot only after the command
        # returns: wait for that snapshot, so a /status read after this answer shows the change.
        result, tick = await run_in_threadpool(d.loop.submit, lambda s: (fn(s), d.loop.stats.ticks), timeout)
    except CommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except concurrent.futures.TimeoutError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the control loop did not answer") from None
    deadline = time.monotonic() + 1.0
    while d.loop.running and time.monotonic() < deadline:
        if (d.loop.snapshot.get("tick") or {}).get("ticks", 0) > tick:
            break
        await asyncio.sleep(0.002)
    return result


def ended(last: dict | None, what: str) -> dict:
    """The last ended session or eval as JSON, or a 404 naming what has not ended yet."""
    if last is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} has ended yet")
    return jsonable(last)


def still_running(last: dict | None, what: str) -> HTTPException:
    """The 404 for `/current` when nothing runs, saying how the last one ended."""
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        f"no {what} is running" + (f"; the last one ended: {last['end_reason']}" if last else ""),
    )


def jsonable(value: Any) -> Any:
    """Numpy scalars and arrays as plain JSON values."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value
