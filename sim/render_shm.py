"""Shared-memory blocks between the sim (physics, in the daemon) and its render process.

Two kinds of block, both created (and unlinked) by the daemon side, attached by the renderer:

- `StateBlock`: what rendering needs from MjData (qpos, mocap poses), written by the physics after
  every control period and every direct edit, under a sequence counter (seqlock: odd while being
  written), so the renderer copies a consistent state without any lock shared between processes.
- `FrameSlot`, one per camera: two image buffers (the renderer writes the one readers are not
  told about, then flips `latest`), each with its own seqlock and the frame's index, host
  timestamp, render time and a CRC-32 of its pixels. A reader copies the newest buffer and keeps
  the copy only if the sequence number did not move and the CRC matches, so a frame handed out is
  never torn, whatever the CPU's memory ordering. zlib computes the CRC without holding the GIL.

Every field is 8-byte aligned, so single loads and stores of counters are atomic on x86-64 and
arm64. Names carry the creating process id (`rsim<pid>_...`), which lets tests find leftovers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from camera.base import Frame

log = logging.getLogger(__name__)

NAME_PREFIX = "rsim"
_ERROR_BYTES = 400
_STATE_HEADER = np.dtype([("seq", "<u8"), ("nq", "<i8"), ("nmocap", "<i8")])
_SLOT_HEADER = np.dtype(
    [
        ("latest", "<i8"),  # buffer 0 or 1 holding the newest frame; -1 before the first
        ("frames", "<i8"),  # frames rendered since the camera was added
        ("capture_ms", "<f8"),  # mean render time, first frame (GL start-up) excluded
        ("error_seq", "<u8"),  # seqlock over the two error fields; errors = error_seq // 2
        ("error_text", f"S{_ERROR_BYTES}"),  # the latest render error
    ]
)
_META = np.dtype(
    [("seq", "<u8"), ("index", "<i8"), ("timestamp", "<f8"), ("render_ms", "<f8"), ("crc", "<u8")]
)
_META_OFFSET = 512
_IMAGE_OFFSET = 1024


@dataclass(frozen=True)
class CameraSpec:
    """One camera as the render process needs it (sent over the pipe with "add")."""

    key: str  # unique within the render process
    name: str
    cam_id: int
    height: int
    width: int
    period_s: float  # wall seconds between frames
    slot_name: str
    first_index: int = 0  # a restarted render process continues the slot's frame numbering


def new_name(kind: str) -> str:
    """A fresh segment name: prefix, creator pid, random part, kind."""
    return f"{NAME_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_{kind}"


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    """Python < 3.13 registers every *attach* with the resource tracker, which then removes the
    segment when the attaching process exits (cpython gh-82300), and would start a tracker process
    in the render process. The creator owns the lifetime here, so the attaching side opts out (the
    render process is single-threaded, so swapping the functions there is safe)."""
    saved = resource_tracker.register, resource_tracker.unregister
    resource_tracker.register = resource_tracker.unregister = lambda name, rtype: None  # type: ignore[assignment]
    try:
        yield
    finally:
        resource_tracker.register, resource_tracker.unregister = saved


def _attach(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    with _untracked():
        return shared_memory.SharedMemory(name=name)


def _release(shm: shared_memory.SharedMemory, unlink: bool, owner: bool) -> None:
    if unlink:
        # FileNotFoundError: the other side (or the resource tracker) removed it already.
        with contextlib.suppress(FileNotFoundError):
            if owner:
                shm.unlink()
            else:
                with _untracked():
                    shm.unlink()
    try:
        shm.close()
    except BufferError:
        # A view is still alive in another thread; the mapping goes when it is collected.
        log.debug("shared memory %s still referenced at close", shm.name)


class StateBlock:
    """qpos and mocap poses of the world's MjData under a seqlock. One writer (the world, holding
    its lock), any number of readers."""

    def __init__(self, shm: shared_memory.SharedMemory, nq: int, nmocap: int, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.nq, self.nmocap = nq, nmocap
        buf = shm.buf
        self._hdr = np.ndarray((), dtype=_STATE_HEADER, buffer=buf)
        off = _STATE_HEADER.itemsize
        self._qpos = np.ndarray((nq,), dtype="<f8", buffer=buf, offset=off)
        off += 8 * nq
        self._mpos = np.ndarray((nmocap, 3), dtype="<f8", buffer=buf, offset=off)
        off += 24 * nmocap
        self._mquat = np.ndarray((nmocap, 4), dtype="<f8", buffer=buf, offset=off)
        self._seq = self._hdr["seq"]
        self.closed = False

    @staticmethod
    def size(nq: int, nmocap: int) -> int:
        return _STATE_HEADER.itemsize + 8 * (nq + 7 * nmocap)

    @classmethod
    def create(cls, nq: int, nmocap: int) -> StateBlock:
        shm = shared_memory.SharedMemory(name=new_name("state"), create=True, size=cls.size(nq, nmocap))
        block = cls(shm, nq, nmocap, owner=True)
        block._hdr["nq"] = nq
        block._hdr["nmocap"] = nmocap
        return block

    @classmethod
    def attach(cls, name: str) -> StateBlock:
        shm = _attach(name)
        hdr = np.ndarray((), dtype=_STATE_HEADER, buffer=shm.buf)
        nq, nmocap = int(hdr["nq"]), int(hdr["nmocap"])
        del hdr
        return cls(shm, nq, nmocap, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def seq(self) -> int:
        return int(self._seq)

    def write(self, qpos: np.ndarray, mocap_pos: np.ndarray, mocap_quat: np.ndarray) -> None:
        """Publish a state (single writer only: the world calls this with its lock held)."""
        if self.closed:
            return
        seq = int(self._seq)
        self._seq[...] = seq + 1  # odd: being written
        self._qpos[:] = qpos
        if self.nmocap:
            self._mpos[:] = mocap_pos
            self._mquat[:] = mocap_quat
        self._seq[...] = seq + 2

    def read(self, qpos: np.ndarray, mocap_pos: np.ndarray, mocap_quat: np.ndarray, wait_s: float = 0.02) -> int:
        """Copy a consistent state into the given arrays; returns its sequence number, or -1 (the
        arrays untouched) if the writer held it for longer than `wait_s` (it was descheduled)."""
        q = np.empty_like(self._qpos)
        mp = np.empty_like(self._mpos)
        mq = np.empty_like(self._mquat)
        deadline = time.monotonic() + wait_s
        while True:
            s1 = int(self._seq)
            if not s1 & 1:
                q[:] = self._qpos
                mp[:] = self._mpos
                mq[:] = self._mquat
                if int(self._seq) == s1:
                    qpos[:] = q
                    if self.nmocap:
                        mocap_pos[:] = mp
                        mocap_quat[:] = mq
                    return s1
            if time.monotonic() > deadline:
                return -1
            time.sleep(0.0002)

    def close(self, unlink: bool | None = None) -> None:
        """Detach; removes the segment too if `unlink` (default: if this side created it)."""
        if self.closed:
            return
        self.closed = True
        self._hdr = self._qpos = self._mpos = self._mquat = self._seq = None  # type: ignore[assignment]
        _release(self.shm, self.owner if unlink is None else unlink, self.owner)


class FrameSlot:
    """One camera's double-buffered frames. One writer (the render process), many readers."""

    def __init__(self, shm: shared_memory.SharedMemory, height: int, width: int, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.height, self.width = height, width
        self.image_bytes = height * width * 3
        buf = shm.buf
        self._hdr = np.ndarray((), dtype=_SLOT_HEADER, buffer=buf)
        self._meta = np.ndarray((2,), dtype=_META, buffer=buf, offset=_META_OFFSET)
        stride = _align(self.image_bytes)
        self._images = [
            np.ndarray((height, width, 3), dtype=np.uint8, buffer=buf, offset=_IMAGE_OFFSET + k * stride)
            for k in (0, 1)
        ]
        # Field views (not copies): every read below loads the shared memory at that moment.
        self._latest = self._hdr["latest"]
        self._seq = self._meta["seq"]
        self._index = self._meta["index"]
        self._stamp = self._meta["timestamp"]
        self._render_ms = self._meta["render_ms"]
        self._crc = self._meta["crc"]
        self.torn_reads = 0  # reads that found a buffer being rewritten (reader side, diagnostics)
        self.closed = False
        self._final: tuple[int, float, int, str] = (0, 0.0, 0, "")  # counters() once closed

    @staticmethod
    def size(height: int, width: int) -> int:
        return _IMAGE_OFFSET + 2 * _align(height * width * 3)

    @classmethod
    def create(cls, height: int, width: int) -> FrameSlot:
        shm = shared_memory.SharedMemory(name=new_name("cam"), create=True, size=cls.size(height, width))
        slot = cls(shm, height, width, owner=True)
        slot._hdr["latest"] = -1
        return slot

    @classmethod
    def attach(cls, name: str, height: int, width: int) -> FrameSlot:
        return cls(_attach(name), height, width, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    # --- the render process ---------------------------------------------------------------------
    def write(self, image: np.ndarray, index: int, timestamp: float, render_ms: float, capture_ms: float) -> None:
        latest = int(self._latest)
        k = 0 if latest < 0 else 1 - latest
        seq = int(self._seq[k])
        self._seq[k] = seq + 1  # odd: being written
        np.copyto(self._images[k], image)
        self._index[k] = index
        self._stamp[k] = timestamp
        self._render_ms[k] = render_ms
        self._crc[k] = zlib.crc32(self._images[k])
        self._seq[k] = seq + 2
        self._latest[...] = k
        self._hdr["frames"] = index + 1
        self._hdr["capture_ms"] = capture_ms

    def report_error(self, text: str) -> None:
        seq = int(self._hdr["error_seq"])
        self._hdr["error_seq"] = seq + 1
        self._hdr["error_text"] = text.encode("utf-8", "replace")[:_ERROR_BYTES]
        self._hdr["error_seq"] = seq + 2

    # --- the daemon -----------------------------------------------------------------------------
    def read(self, previous: Frame | None = None) -> Frame | None:
        """The newest complete frame; `previous` (the same object) if it is still the newest or if
        the newest is being rewritten twice in a row. Never waits."""
        # Local references: a close() on another thread cannot unmap memory this read still uses.
        latest, seqs, indices, stamps, crcs, images = (
            self._latest, self._seq, self._index, self._stamp, self._crc, self._images
        )
        if latest is None or seqs is None or indices is None or stamps is None or crcs is None or not images:
            return previous  # closed
        for _ in range(2):
            k = int(latest)
            if k < 0:
                return previous
            s1 = int(seqs[k])
            if s1 & 1:
                self.torn_reads += 1
                continue
            index = int(indices[k])
            if previous is not None and index == previous.index:
                return previous
            image = images[k].copy()
            timestamp, crc = float(stamps[k]), int(crcs[k])
            if int(seqs[k]) == s1 and zlib.crc32(image) == crc:
                return Frame(image=image, timestamp=timestamp, index=index)
            self.torn_reads += 1
        return previous

    def counters(self) -> tuple[int, float, int, str]:
        """frames rendered, mean render ms, errors reported, latest error text."""
        hdr = self._hdr
        if hdr is None:
            return self._final
        frames, capture_ms = int(hdr["frames"]), float(hdr["capture_ms"])
        s1 = 0
        for _ in range(3):
            s1 = int(hdr["error_seq"])
            text = bytes(hdr["error_text"][()]).decode("utf-8", "replace")  # [()]: NUL padding dropped
            if s1 == int(hdr["error_seq"]) and not s1 & 1:
                return frames, capture_ms, s1 // 2, text
        return frames, capture_ms, s1 // 2, "(error text being written)"

    def close(self, unlink: bool | None = None) -> None:
        """Detach; removes the segment too if `unlink` (default: if this side created it)."""
        if self.closed:
            return
        self._final = self.counters()
        self.closed = True
        self._hdr = self._meta = self._latest = None  # type: ignore[assignment]
        self._seq = self._index = self._stamp = self._render_ms = self._crc = None  # type: ignore[assignment]
        self._images = []
        _release(self.shm, self.owner if unlink is None else unlink, self.owner)
