"""The control loop's own tick health, kept in the store for the morning report.

Every `control.tick_stats_s` the control thread closes a window of its timing (robot_server.timing:
appends and a queue put, never a write). This thread takes each window, computes its percentiles
and appends one `tick_stats` event to the store's event log through Recorder.append_event_now
(durable when it returns, so a restart loses at most the window being filled; stop() stores that
one too). While the store is full (robot_server.store_space) windows are dropped and counted, not
queued: the operator's events waiting for space must not be pushed out by timing figures.
"""

from __future__ import annotations

import logging
import threading

from replay.store import StoreFullError
from robot_server.events import Event
from robot_server.recorder import Recorder
from robot_server.timing import TickStats, TickWindow

log = logging.getLogger(__name__)

EVENT = Event.TICK_STATS.value


class TickStatsWriter:
    def __init__(self, stats: TickStats, recorder: Recorder) -> None:
        self.stats = stats
        self.recorder = recorder
        self.written = 0
        self.dropped = 0  # windows not stored: the store was full, or the write failed
        self._thread = threading.Thread(target=self._run, name="tick-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, loop_stopped: bool, timeout: float = 10.0) -> None:
        """Store the window being filled (when the control thread has stopped, so nothing adds to
        it any more) and what is queued, then end the thread."""
        if loop_stopped:
            self.stats.close_window()
        self.stats.windows.put(None)
        if self._thread.ident is not None:  # started (the daemon may stop before it starts)
            self._thread.join(timeout)

    def _run(self) -> None:
        while (w := self.stats.windows.get()) is not None:
            self.write(w)

    def write(self, w: TickWindow) -> bool:
        """Store one window's figures; False when it was dropped."""
        full = self.recorder.full
        if full is None:
            try:
                self.recorder.append_event_now({"type": EVENT, "time": w.end, **w.figures()})
                self.written += 1
                return True
            except StoreFullError as exc:
                why = str(exc)
            except Exception as exc:  # the writer closed, an S3 hiccup: the daemon goes on without it
                log.exception("tick stats: storing the window failed")
                why = str(exc)
        else:
            why = full.cause
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 60 == 0:
            log.warning("tick stats: %d windows not stored (%s)", self.dropped, why)
        return False
