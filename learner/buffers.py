"""In-RAM replay buffers: rings of steps whose transitions never cross a segment boundary.

A transition is (s_i, a_i, s_{i+1}) with both steps in the same stored segment. The last step of a
segment has no next step in that segment, so it is never sampled as a transition (it is dropped;
it still serves as a frame for classifier negatives). Online steps never terminate
(not_done = 1, infinite bootstrapping); the transition into a successful demo's final frame is
terminal (not_done = 0).

Frames are stored once, in the store's layout: channels last ([H, W, C] uint8, the views stacked
along the last axis; spec.step.stack_views), or [S] float32 state. Sampling is index arithmetic
plus one gather per array into a batch the caller allocates once and reuses (`Batch.empty`), so
sampling neither allocates nor page-faults batch-sized arrays, and the batch goes to the
augmentation and the encoder as it is (torch.from_numpy shares its memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Shapes of one step: main observation (image [H, W, C] uint8 or state [S] float32), proprio, action."""

    main_shape: tuple[int, ...]
    main_dtype: np.dtype
    proprio_dim: int
    action_dim: int


@dataclass
class Batch:
    obs: np.ndarray
    proprio: np.ndarray
    action: np.ndarray
    not_done: np.ndarray
    next_obs: np.ndarray
    next_proprio: np.ndarray

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def empty(cls, n: int, layout: Layout) -> Batch:
        """n rows to sample into, again and again (a sample overwrites the previous one)."""
        main = (n, *layout.main_shape)
        return cls(
            obs=np.empty(main, layout.main_dtype),
            proprio=np.empty((n, layout.proprio_dim), np.float32),
            action=np.empty((n, layout.action_dim), np.float32),
            not_done=np.empty(n, np.float32),
            next_obs=np.empty(main, layout.main_dtype),
            next_proprio=np.empty((n, layout.proprio_dim), np.float32),
        )

    def rows(self, start: int, stop: int) -> Batch:
        """Rows [start, stop) as views: sampling into them fills this batch."""
        return Batch(*(getattr(self, f)[start:stop] for f in Batch.__dataclass_fields__))


class TransitionBuffer:
    """A ring of `capacity` steps. Segments are appended whole or extended while they grow."""

    def __init__(self, capacity: int, layout: Layout, name: str = "buffer") -> None:
        if capacity < 2:
            raise ValueError(f"{name}: capacity must be >= 2, got {capacity}")
        self.name = name
        self.capacity = int(capacity)
        self.layout = layout
        # np.zeros maps pages lazily: unused capacity costs no RAM until it is written.
        self.main = np.zeros((capacity, *layout.main_shape), layout.main_dtype)
        self.proprio = np.zeros((capacity, layout.proprio_dim), np.float32)
        self.action = np.zeros((capacity, layout.action_dim), np.float32)
        self.has_next = np.zeros(capacity, bool)  # step i → i+1 (mod capacity) is a transition
        self.not_done = np.ones(capacity, np.float32)
        self.serial = np.full(capacity, -1, np.int64)  # write order, to find data not yet trained on
        self.ptr = 0
        self.size = 0
        self.written = 0
        self.segments = 0
        self._open_key: object = None
        self._open_stop = -1
        self._valid: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def num_transitions(self) -> int:
        return int(len(self.valid_indices()))

    def append(
        self,
        key: object,
        start: int,
        main: np.ndarray,
        proprio: np.ndarray,
        action: np.ndarray,
        terminal: bool = False,
    ) -> None:
        """Steps [start, start+n) of segment `key`. If they continue the segment written last, the
        segment grows (the previous last step gains its transition); otherwise a new one begins.
        `terminal` marks the transition into the final step as terminal (a successful demo)."""
        n = len(main)
        if not (len(proprio) == len(action) == n):
            raise ValueError(f"{self.name}: main/proprio/action lengths differ ({n}, {len(proprio)}, {len(action)})")
        if n == 0:
            return
        if main.shape[1:] != self.layout.main_shape:
            raise ValueError(f"{self.name}: frames of shape {main.shape[1:]}, expected {self.layout.main_shape}")
        continues = key is not None and key == self._open_key and start == self._open_stop and self.size > 0
        if n > self.capacity:  # keep the newest part; it starts a segment of its own
            main, proprio, action = main[-self.capacity :], proprio[-self.capacity :], action[-self.capacity :]
            start, n, continues = start + (n - self.capacity), self.capacity, False
        prev = (self.ptr - 1) % self.capacity
        if continues:
            self.has_next[prev] = True
        else:
            self.segments += 1
        idx = (self.ptr + np.arange(n)) % self.capacity
        # Frames go in as one or two contiguous block copies (the ring wraps at most once); a
        # fancy-indexed scatter of a 200-step pixel chunk costs ~1.5x as much.
        for dst, src in ((self.main, main), (self.proprio, proprio), (self.action, action)):
            first = min(n, self.capacity - self.ptr)
            dst[self.ptr : self.ptr + first] = src[:first]
            dst[: n - first] = src[first:]
        self.has_next[idx[:-1]] = True
        self.has_next[idx[-1]] = False  # no next step (yet) in this segment
        self.not_done[idx] = 1.0
        if terminal and n >= 2:
            self.not_done[idx[-2]] = 0.0
        elif terminal and continues:
            self.not_done[prev] = 0.0
        self.serial[idx] = self.written + np.arange(n)
        self.written += n
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        self._open_key, self._open_stop = key, start + n
        self._valid = None

    def valid_indices(self) -> np.ndarray:
        if self._valid is None:
            self._valid = np.flatnonzero(self.has_next[: self.size])
        return self._valid

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        valid = self.valid_indices()
        if len(valid) == 0:
            raise ValueError(f"{self.name} has no transitions to sample")
        return valid[rng.integers(0, len(valid), size=n)]

    def gather(self, idx: np.ndarray, out: Batch | None = None) -> Batch:
        """Transitions idx → idx+1 into `out` (len(idx) rows; a new batch if None)."""
        out = Batch.empty(len(idx), self.layout) if out is None else out
        if len(out) != len(idx):
            raise ValueError(f"{self.name}: {len(idx)} indices for a batch of {len(out)} rows")
        nxt = (idx + 1) % self.capacity
        # mode="clip": the indices are in range, and the default "raise" gathers into a temporary first.
        for src, i, dst in (
            (self.main, idx, out.obs),
            (self.proprio, idx, out.proprio),
            (self.action, idx, out.action),
            (self.not_done, idx, out.not_done),
            (self.main, nxt, out.next_obs),
            (self.proprio, nxt, out.next_proprio),
        ):
            np.take(src, i, axis=0, out=dst, mode="clip")
        return out

    def sample(self, n: int, rng: np.random.Generator, out: Batch | None = None) -> Batch:
        return self.gather(self.sample_indices(n, rng), out)

    def sample_frames(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Any stored frames (classifier negatives)."""
        if self.size == 0:
            raise ValueError(f"{self.name} is empty")
        return self.main[rng.integers(0, self.size, size=n)]

    def fresh_frames(self, after_serial: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to n frames written after `after_serial` (data a classifier has not trained on)."""
        fresh = np.flatnonzero(self.serial[: self.size] > after_serial)
        if len(fresh) > n:
            fresh = rng.choice(fresh, size=n, replace=False)
        return self.main[fresh]

    @property
    def last_serial(self) -> int:
        return self.written - 1


class FrameSet:
    """A growing set of frames (classifier positives)."""

    def __init__(self, main_shape: tuple[int, ...], dtype: np.dtype, name: str = "frames") -> None:
        self.name = name
        self.main_shape = main_shape
        self.dtype = dtype
        self._parts: list[np.ndarray] = []
        self._all: np.ndarray | None = None

    def add(self, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        if frames.shape[1:] != self.main_shape:
            raise ValueError(f"{self.name}: frames of shape {frames.shape[1:]}, expected {self.main_shape}")
        self._parts.append(np.ascontiguousarray(frames))
        self._all = None

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    @property
    def frames(self) -> np.ndarray:
        if self._all is None:
            self._all = np.concatenate(self._parts) if self._parts else np.zeros((0, *self.main_shape), self.dtype)
            self._parts = [self._all] if self._parts else []
        return self._all

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        frames = self.frames
        if len(frames) == 0:
            raise ValueError(f"{self.name} is empty")
        return frames[rng.integers(0, len(frames), size=n)]


def sample_mixed(
    online: TransitionBuffer,
    demo: TransitionBuffer,
    batch_size: int,
    demo_rows: int,
    rng: np.random.Generator,
    out: Batch | None = None,
) -> tuple[Batch, int]:
    """(batch_size − k) online rows + k demo rows; k = demo_rows, or 0 when the demo buffer has no
    transitions yet. Returns the batch (online rows first; `out` if given) and k."""
    k = demo_rows if demo.num_transitions > 0 else 0
    out = Batch.empty(batch_size, online.layout) if out is None else out
    if len(out) != batch_size:
        raise ValueError(f"a batch of {batch_size} rows cannot go into one of {len(out)}")
    online.sample(batch_size - k, rng, out.rows(0, batch_size - k))
    if k:
        demo.sample(k, rng, out.rows(batch_size - k, batch_size))
    return out, k
