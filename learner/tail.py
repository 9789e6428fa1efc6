"""Follows the replay store: each poll returns the steps that appeared since the last one.

Closed episodes are delivered whole (or their remainder); the committed prefix of the open
practice segment is delivered as it grows when `include_open` is set, so a 200-step phase is
learnt from before it ends. Demos are only used once closed, because only then is their success
known. Eval episodes are deployment tests, not training data: they are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay.location import StoreLocation, open_location
from replay.store import EpisodeInfo, ReplayReader, StoreError

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    info: EpisodeInfo
    start: int  # index of data's first step within the episode
    data: dict[str, np.ndarray]
    closed: bool  # the episode is closed and this chunk reaches its end
    light: bool = False  # only the small per-step arrays were read (data the buffers would not keep)
    robot: str = ""  # which robot's store it came from (a fleet learner's; "" for the one robot)

    def __len__(self) -> int:
        return len(self.data["policy_version"]) if "policy_version" in self.data else 0


LIGHT_KEYS = ("policy_version", "intervention")


@dataclass(frozen=True)
class Read:
    """Steps [start, stop) of one episode; `light`: only its small per-step arrays."""

    info: EpisodeInfo
    start: int
    stop: int
    light: bool


class StoreTail:
    """`keep` (steps per direction) bounds what the first poll reads in full: older practice
    episodes than the newest `keep` steps of their direction would only be overwritten in the
    ring buffers, so only their small arrays are read (for step counting and seed routing). That
    keeps a restart on a long-running store from decoding every image ever recorded."""

    def __init__(
        self,
        path: str | Path | StoreLocation,
        keys: Sequence[str],
        include_open: bool = True,
        keep: int | None = None,
        robot: str = "",
    ) -> None:
        self.location = open_location(path)
        self.path = self.location.path
        self.robot = robot
        self.keys = list(keys)
        self.include_open = include_open
        self.keep = keep
        self._first = True
        self.reader: ReplayReader | None = None
        self.consumed: dict[str, int] = {}  # episode id -> steps delivered
        self.finished: set[str] = set()  # closed (or skipped) episodes fully delivered
        self.vanished: set[str] = set()

    def _open(self) -> ReplayReader | None:
        if self.reader is None and self.location.attrs() is not None:
            try:
                self.reader = ReplayReader(self.location)
            except StoreError as exc:
                log.warning("store %s not readable yet: %s", self.path, exc)
                return None
            missing = [k for k in self.keys if k not in self.reader.keys]
            if missing:
                raise StoreError(f"store {self.path} has no {missing}; it records {self.reader.keys}")
        return self.reader

    @property
    def meta(self) -> dict:
        r = self._open()
        return r.meta if r is not None else {}

    def poll(self) -> list[Chunk]:
        return self.read(self.plan())

    def plan(self) -> list[Read]:
        """The reads the next poll makes: each episode's new committed steps. Under torchrun rank 0
        plans and every rank `read()`s the same plan, so all ingest exactly the same steps."""
        reader = self._open()
        if reader is None:
            return []
        out: list[Read] = []
        every = reader.episodes(include_open=True)
        present = {i.id for i in every}
        for ep_id in set(self.consumed) - present - self.vanished:
            self.vanished.add(ep_id)
            log.warning("episode %s left the store after %d of its steps were learnt", ep_id, self.consumed[ep_id])
        infos = every if self.include_open else [i for i in every if i.closed]
        light = self._light_ids(infos) if self._first else set()
        self._first = False
        for info in infos:
            if info.id in self.finished:
                continue
            if info.kind == "eval" or (info.kind == "demo" and not info.closed):
                if info.closed:
                    self.finished.add(info.id)
                continue
            if not info.closed and info.kind != "practice":
                continue
            done = self.consumed.get(info.id, 0)
            if info.length > done:
                out.append(Read(info, done, info.length, info.id in light))
            elif info.closed:
                self.finished.add(info.id)
        return out

    def read(self, reads: Sequence[Read]) -> list[Chunk]:
        """Read planned steps (this tail's plan, or rank 0's) and count them as consumed."""
        reader = self._open()
        if reader is None:
            return []
        out: list[Chunk] = []
        for r in reads:
            info = r.info
            keys = [k for k in self.keys if k in LIGHT_KEYS] if r.light else self.keys
            try:
                data = reader.read(info.id, keys, start=r.start, stop=r.stop)
            except KeyError as exc:  # discarded while we read it
                log.warning("episode %s: %s", info.id, exc)
                continue
            got = len(next(iter(data.values()))) if data else 0
            out.append(Chunk(info, r.start, data, closed=info.closed and r.start + got >= info.length, light=r.light,
                             robot=self.robot))
            self.consumed[info.id] = r.start + got
            if info.closed and self.consumed[info.id] >= info.length:
                self.finished.add(info.id)
        return out

    def _light_ids(self, infos: list[EpisodeInfo]) -> set[str]:
        if self.keep is None:
            return set()
        room = {"forward": self.keep, "backward": self.keep}
        light = set()
        for info in reversed(infos):  # newest first
            if info.kind != "practice" or not info.closed:
                continue
            if room.get(info.direction, 0) <= 0:
                light.add(info.id)
            room[info.direction] = room.get(info.direction, 0) - info.length
        if light:
            log.info("store holds more practice data than the buffers keep: %d old episodes counted, not loaded",
                     len(light))
        return light
