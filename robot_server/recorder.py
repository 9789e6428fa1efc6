"""The writer thread: takes transitions from the control thread and appends them to the replay store.

The tick only does `queue.put_nowait`, so disk and compression never delay it. Segment
boundaries (begin/end) travel through the same queue, so their order with the steps is exact.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from replay.store import EpisodeInfo, EpisodeWriter, ReplayWriter

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    steps: int = 0
    events_logged: int = 0
    episodes_closed: int = 0
    episodes_discarded: int = 0
    errors: int = 0
    last_error: str | None = None
    last_episode: dict[str, Any] | None = None
    closed_by_kind: dict[str, int] = field(default_factory=dict)


class Recorder:
    def __init__(self, writer: ReplayWriter) -> None:
        self.writer = writer
        self.stats = RecorderStats()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._episode: EpisodeWriter | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._closed = threading.Event()
        self._open = False  # as seen by the control thread
        self._thread.start()

    # --- called from the control thread (never blocks) ---
    @property
    def recording(self) -> bool:
        return self._open

    def begin(self, kind: str, direction: str, attrs: dict[str, Any] | None = None) -> None:
        if self._open:
            self.end(reason="new segment")
        self._open = True
        self._queue.put(("begin", (kind, direction, dict(attrs or {}))))

    def step(self, step: dict[str, Any]) -> None:
        if self._open:
            self._queue.put(("step", step))

    def event(self, event: dict[str, Any]) -> None:
        """An event of the open segment (dropped when none is open: see log_event)."""
        if self._open:
            self._queue.put(("event", event))

    def log_event(self, event: dict[str, Any]) -> None:
        """An event for the store's own event log, kept whether or not a segment is open."""
        self._queue.put(("log", event))

    def end(self, success: bool | None = None, **attrs: Any) -> None:
        if self._open:
            self._open = False
            self._queue.put(("end", (success, attrs)))

    def discard(self) -> None:
        if self._open:
            self._open = False
            self._queue.put(("discard", None))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the open segment, drain the queue and release the store."""
        self.end(reason="shutdown")
        self._queue.put(("stop", None))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("store writer did not drain within %.0f s; closing anyway", timeout)
        self.writer.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is on disk (tests and shutdown)."""
        done = threading.Event()
        self._queue.put(("sync", done))
        return done.wait(timeout)

    # --- the writer thread ---
    def _run(self) -> None:
        while True:
            kind, payload = self._queue.get()
            try:
                if kind == "stop":
                    return
                self._handle(kind, payload)
            except Exception as exc:  # a bad step must not kill the writer: count it and go on
                self.stats.errors += 1
                self.stats.last_error = f"{kind}: {exc}"
                log.exception("store writer: %s failed", kind)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "begin":
            if self._episode is not None:
                self._finish(None, {"end_reason": "new segment"})
            k, direction, attrs = payload
            self._episode = self.writer.begin_episode(k, direction, attrs)
        elif kind == "step":
            if self._episode is not None:
                self._episode.append(payload)
                self.stats.steps += 1
        elif kind == "event":
            if self._episode is not None:
                self._episode.add_event(payload)
        elif kind == "log":
            self.writer.append_event(payload)
            self.stats.events_logged += 1
        elif kind == "end":
            success, attrs = payload
            self._finish(success, attrs)
        elif kind == "discard":
            if self._episode is not None:
                self._episode.discard()
                self._episode = None
                self.stats.episodes_discarded += 1
        elif kind == "sync":
            if self._episode is not None:
                self._episode.flush()
            payload.set()

    def _finish(self, success: bool | None, attrs: dict[str, Any]) -> None:
        ep, self._episode = self._episode, None
        if ep is None:
            return
        info: EpisodeInfo | None = ep.close(success=success, **attrs)
        if info is not None and info.length > 0:
            self.stats.episodes_closed += 1
            self.stats.closed_by_kind[info.kind] = self.stats.closed_by_kind.get(info.kind, 0) + 1
            self.stats.last_episode = {
                "id": info.id,
                "kind": info.kind,
                "direction": info.direction,
                "length": info.length,
                "success": info.success,
            }
