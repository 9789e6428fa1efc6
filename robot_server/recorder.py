"""The writer thread: takes transitions from the control thread and appends them to the replay store.

The tick only does `queue.put_nowait`, so disk and compression never delay it. Segment
boundaries (begin/end) travel through the same queue, so their order with the steps is exact.

A full disk (a write failing with ENOSPC/EDQUOT, or free space under `store.min_free_mb`) sets
`full` (robot_server.store_space): the open segment is ended at its committed length, steps that
arrive until practice has paused are counted in `stats.steps_lost`, store events wait in a bounded
queue, and free space is checked every `store.space_check_s` until the store can take steps again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from replay.store import EpisodeInfo, EpisodeWriter, ReplayWriter, StoreFullError
from robot_server.store_space import StoreFull, StoreSpace
from spec.config import StoreConfig

log = logging.getLogger(__name__)

# Store events kept while the disk is full, written when space returns (oldest dropped beyond this).
PENDING_EVENTS_MAX = 1000


@dataclass
class RecorderStats:
    steps: int = 0
    events_logged: int = 0
    episodes_closed: int = 0
    episodes_discarded: int = 0
    errors: int = 0
    last_error: str | None = None
    steps_lost: int = 0  # taken by the tick but never stored: in flight when the disk filled
    events_dropped: int = 0  # store events given up: more than PENDING_EVENTS_MAX waited for space
    last_episode: dict[str, Any] | None = None
    closed_by_kind: dict[str, int] = field(default_factory=dict)


class Recorder:
    def __init__(self, writer: ReplayWriter, cfg: StoreConfig | None = None) -> None:
        self.writer = writer
        self.stats = RecorderStats()
        self._count_lock = threading.Lock()  # events_logged is counted by the writer thread and API writes
        self.space = StoreSpace(cfg or StoreConfig(path=writer.path))
        self._pending_events: deque[dict[str, Any]] = deque()
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

    def append_event_now(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write an event to the store's log from the calling thread and return the stored record
        (with its `seq`): for an operator's write (a label) that answers only once it is durable,
        without waiting behind the steps queued for the writer thread. The store's writer is
        thread-safe; raises StoreFullError when the disk cannot take it."""
        stored = self.writer.append_event(event)
        with self._count_lock:
            self.stats.events_logged += 1
        return stored

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

    @property
    def full(self) -> StoreFull | None:
        """Why the store takes no steps now (None: it does). Safe to read from any thread."""
        return self.space.full

    def status(self) -> dict[str, Any]:
        """Space and loss figures for /status (read from any thread; plain values only)."""
        return {**self.space.status(), "steps_lost": self.stats.steps_lost,
                "events_pending": len(self._pending_events), "events_dropped": self.stats.events_dropped,
                "episodes_untidy": self.writer.untidy}

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
            try:
                kind, payload = self._queue.get(timeout=self.space.due_in())
            except queue.Empty:
                kind, payload = "", None  # only the space check is due
            try:
                if kind == "stop":
                    return
                if kind:
                    self._handle(kind, payload)
            except StoreFullError as exc:
                self._disk_full(exc, failed_step=kind == "step")
            except Exception as exc:  # a bad step must not kill the writer: count it and go on
                self.stats.errors += 1
                self.stats.last_error = f"{kind}: {exc}"
                log.exception("store writer: %s failed", kind)
            finally:
                if kind == "sync":
                    payload.set()
            self._check_space()

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "begin":
            if self._episode is not None:
                self._finish(None, {"end_reason": "new segment"})
            k, direction, attrs = payload
            if self.space.full is None:  # while full, the segment's steps are counted as lost
                self._episode = self.writer.begin_episode(k, direction, attrs)
        elif kind == "step":
            if self._episode is None:
                self.stats.steps_lost += 1  # its segment was ended by a full disk
            else:
                self._episode.append(payload)
                self.stats.steps += 1
        elif kind == "event":
            if self._episode is not None:
                self._episode.add_event(payload)
        elif kind == "log":
            if len(self._pending_events) >= PENDING_EVENTS_MAX:
                self._pending_events.popleft()
                self.stats.events_dropped += 1
            self._pending_events.append(payload)
            self._write_pending_events()
        elif kind == "end":
            success, attrs = payload
            self._finish(success, attrs)
        elif kind == "discard":
            if self._episode is not None:
                self._episode.discard()
                self._episode = None
                self.stats.episodes_discarded += 1
        elif kind == "sync" and self._episode is not None:
            self._episode.flush()

    def _write_pending_events(self) -> bool:
        """Write waiting store events, oldest first; False if the disk is (still) full."""
        while self._pending_events:
            try:
                self.writer.append_event(self._pending_events[0])
            except StoreFullError as exc:
                # Only the event log failed: the open segment goes on until its own write fails
                # (a few bytes may fit where a chunk does not), but practice pauses now.
                self.space.mark_full(str(exc), exc.free_bytes)
                return False
            self._pending_events.popleft()
            with self._count_lock:
                self.stats.events_logged += 1
        return True

    def _disk_full(self, exc: StoreFullError, failed_step: bool) -> None:
        """A write of the open segment failed for want of space: end it at its committed length."""
        lost = int(failed_step)
        ep, self._episode = self._episode, None
        if ep is not None and not ep.closed:
            lost += ep.abandon("store_full")
        self.stats.steps_lost += lost
        self.space.mark_full(str(exc), exc.free_bytes)
        log.error("store disk full: %s; %d steps in flight lost, segment ended at its committed length", exc, lost)

    def _check_space(self) -> None:
        """The periodic free-space check (writer thread): enter or leave the full state."""
        if self.space.due_in() > 0:
            return
        if self.space.full is None:
            if self.space.below_floor():
                log.error("%s", self.space.full.message if self.space.full else "store full")
            return
        if not self.space.room_to_resume():
            return
        try:
            for note in self.writer.tidy():  # the segment abandoned when the disk filled
                log.info("store: %s", note)
        except StoreFullError as exc:
            self.space.mark_full(str(exc), exc.free_bytes)
            return
        if self._write_pending_events():
            log.info("store disk has %.1f MB free again: recording resumes", self.space.free_mb or 0.0)
            self.space.clear()

    def _finish(self, success: bool | None, attrs: dict[str, Any]) -> None:
        ep, self._episode = self._episode, None
        if ep is None:
            return
        try:
            info: EpisodeInfo | None = ep.close(success=success, **attrs)
        except StoreFullError:
            self._episode = ep  # still open: _disk_full ends it at its committed length
            raise
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
