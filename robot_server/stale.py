"""Stale camera frames in a session: hold and count every late tick, react only to a long spell.

A late frame holds the arm for its tick and its view is not stored, but the open segment (demo,
eval episode) stays open and goes on at the next fresh frame: on a loaded machine a frame a tick
or two late is common, and ending the segment there left 1- and 13-step episodes (issue 12).
Only frames stale for `session.stale_pause_s` without a break mean a stuck camera: then the stale
cameras are reset (practice also pauses, see robot_server.practice). If no fresh frame follows
within `session.stale_help_s`, the operator is asked for help instead of resetting again forever.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from robot_server.events import Event
from robot_server.help import HelpSource
from robot_server.observation import Stale
from robot_server.tick import ModeContext

log = logging.getLogger(__name__)


class StaleFrames:
    """The stale spells of one session (practice, eval or demo; a demo has no session id)."""

    def __init__(self, ctx: ModeContext, session: str | None) -> None:
        self.ctx = ctx
        self.session = session
        self.pause_after_s = ctx.cfg.session.stale_pause_s
        self.help_after_s = ctx.cfg.session.stale_help_s
        self.ticks = 0  # ticks held for want of a fresh frame
        self.spells = 0  # runs of consecutive stale ticks
        self.resets = 0  # spells long enough to reset the cameras
        self._since: float | None = None  # start of the current spell
        self._reset_at: float | None = None  # when this spell's cameras were reset

    @property
    def spell_s(self) -> float:
        """How long the current spell has lasted (0 while frames are fresh)."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    @property
    def after_reset(self) -> bool:
        """The current spell was long enough to reset the cameras."""
        return self._reset_at is not None

    def late(self, stale: Stale) -> bool:
        """Count one stale tick (the caller holds the arm and records nothing). True once the spell
        has lasted `stale_pause_s` and the cameras are due for a reset (the caller calls `reset`)."""
        t = time.monotonic()
        self.ticks += 1
        if self._since is None:
            self._since = t
            self.spells += 1
        if self._reset_at is None:
            return t - self._since >= self.pause_after_s
        requests = self.ctx.help
        if t - self._reset_at >= self.help_after_s and not requests.is_open(HelpSource.CAMERAS):
            requests.ask(HelpSource.CAMERAS, f"no fresh frame {self.help_after_s:.0f} s after resetting cameras "
                     f"{', '.join(stale.cameras)} ({stale.reason}): check their cables and drivers")
        return False

    def fresh(self) -> bool:
        """A fresh observation ends the spell; True if it ends one that reset the cameras."""
        recovered = self._reset_at is not None
        self._since = self._reset_at = None
        if recovered:
            self.ctx.help.resolve(HelpSource.CAMERAS)
        return recovered

    def reset(self, stale: Stale) -> None:
        """Reset the stale cameras (each returns at once) and store the event."""
        ctx = self.ctx
        spell_s = self.spell_s
        self._reset_at = time.monotonic()
        self.resets += 1
        ctx.counters.stale_camera_resets += 1
        failed: dict[str, str] = {}
        for name in stale.cameras:
            try:
                ctx.cameras[name].reset()
            except Exception as exc:  # a failing driver must not stop the loop; the help request follows
                failed[name] = f"{type(exc).__name__}: {exc}"
                log.exception("camera %s: reset failed", name)
        log.warning("frames stale for %.1f s (%s): cameras %s reset", spell_s, stale.reason, list(stale.cameras))
        extra: dict[str, Any] = {"failed": failed} if failed else {}
        ctx.events.add(Event.CAMERA_RESET, session=self.session, cameras=list(stale.cameras),
                       stale_s=round(spell_s, 2), reason=stale.reason, **extra)

    def summary(self) -> dict[str, Any]:
        return {
            "stale_ticks": self.ticks,
            "stale_spells": self.spells,
            "stale_camera_resets": self.resets,
            "stale_s": round(self.spell_s, 2),
        }
