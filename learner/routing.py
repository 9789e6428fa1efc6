"""Where each stored step goes (MEDALPP.md, "Buffers" and "Classifier training").

- Practice steps go to the acting direction's online buffer.
- Seed data — practice steps with policy_version −1 (no learned policy, not an intervention)
  before that direction's first learned-policy step — goes to both online buffers.
- Successful demos only: forward demos → forward demo buffer; backward demos → backward demo
  buffer; in sim the backward demo buffer also holds forward demos.
- Classifier positives: C_f = last 21 frames of each forward demo; C_b = first 51 frames of each
  forward demo + last 21 of each backward demo (robot), or every forward-demo frame (sim); the
  FBRL baseline's C_b: only the first `backward_positives_initial` frames of each forward demo.
- Eval episodes are not training data.

It also counts env steps: `env_steps` (all practice steps, in store order) and, per direction,
the steps collected after the seed phase ended — what the update schedule owes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from learner.buffers import FrameSet, Layout, TransitionBuffer
from learner.settings import BACKWARD_POSITIVE_FIRST, BACKWARD_POSITIVE_LAST, FORWARD_POSITIVE_LAST, Settings
from learner.tail import Chunk
from spec.direction import DIRECTIONS
from spec.step import ObsSpec, policy_input

log = logging.getLogger(__name__)


def other(direction: str) -> str:
    return "backward" if direction == "forward" else "forward"


def layout_for(spec: ObsSpec, action_dim: int) -> Layout:
    if spec.mode == "state":
        return Layout((int(spec.state_dim or 0),), np.dtype(np.float32), spec.proprio_dim, action_dim)
    h, w = spec.image_size
    return Layout((h, w, spec.channels), np.dtype(np.uint8), spec.proprio_dim, action_dim)


@dataclass
class Buffers:
    online: dict[str, TransitionBuffer]
    demo: dict[str, TransitionBuffer]
    positives: dict[str, FrameSet]

    @classmethod
    def create(cls, layout: Layout, capacity: int) -> Buffers:
        # Demo buffers are small and fixed; they get the same ring so they share the sampling code.
        return cls(
            online={d: TransitionBuffer(capacity, layout, f"online/{d}") for d in DIRECTIONS},
            demo={d: TransitionBuffer(capacity, layout, f"demo/{d}") for d in DIRECTIONS},
            positives={d: FrameSet(layout.main_shape, layout.main_dtype, f"positives/{d}") for d in DIRECTIONS},
        )

    def sizes(self) -> dict[str, int]:
        out = {f"buffer/{b.name}": len(b) for b in [*self.online.values(), *self.demo.values()]}
        out |= {f"buffer/{p.name}": len(p) for p in self.positives.values()}
        return out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a boolean array."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass
class Router:
    settings: Settings
    spec: ObsSpec
    buffers: Buffers
    env_steps: int = 0
    post_seed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    has_policy: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, False))
    seed_copies: int = 0
    demos_used: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    demos_skipped: int = 0
    dropped_last_steps: int = 0  # segment ends: stored as frames, never sampled as transitions

    def ingest(self, chunk: Chunk) -> None:
        n = len(chunk)
        if n == 0:
            return
        kind = chunk.info.kind
        if kind == "practice":
            self._practice(chunk, n)
        elif kind == "demo":
            self._demo(chunk)

    def _arrays(self, data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Frames stay in the store's layout ([n, H, W, C]); the buffers copy them into their rings.
        main, proprio = policy_input(data, self.spec)
        return main, proprio, np.asarray(data["action"], np.float32)

    def _practice(self, chunk: Chunk, n: int) -> None:
        d = chunk.info.direction
        version = np.asarray(chunk.data["policy_version"])
        intervention = np.asarray(chunk.data["intervention"], bool)
        # Episode ids repeat across a fleet's stores: a segment is (robot, id).
        key = (chunk.robot, chunk.info.id) if chunk.robot else chunk.info.id
        if not chunk.light:
            main, proprio, action = self._arrays(chunk.data)
            self.buffers.online[d].append(key, chunk.start, main, proprio, action)
            if chunk.closed:
                self.dropped_last_steps += 1
        # Seed data: before this direction's first learned-policy step, uniform-random steps
        # (version −1, not a human intervention) also go to the other agent's buffer.
        before = np.ones(n, bool)
        if self.has_policy[d]:
            before[:] = False
        else:
            learned = np.flatnonzero(version >= 0)
            if len(learned):
                before[learned[0] :] = False
                self.has_policy[d] = True
        seed = before & (version == -1) & ~intervention
        for a, b in [] if chunk.light else runs(seed):
            self.buffers.online[other(d)].append(("seed", key), chunk.start + a, main[a:b], proprio[a:b], action[a:b])
            self.seed_copies += b - a
        # Schedule counting: practice steps in store order; those past seed_steps are owed updates.
        g = self.env_steps + np.arange(n)
        self.post_seed[d] += int((g >= self.settings.seed_steps).sum())
        self.env_steps += n

    def _demo(self, chunk: Chunk) -> None:
        info = chunk.info
        if info.success is not True:
            self.demos_skipped += 1
            log.info("demo %s (%s) not marked successful: not used", info.id, info.direction)
            return
        main, proprio, action = self._arrays(chunk.data)
        key = ("demo", chunk.robot, info.id) if chunk.robot else ("demo", info.id)
        targets = [info.direction]
        if info.direction == "forward" and self.settings.backward_demos_from_both:
            targets.append("backward")
        for t in targets:
            self.buffers.demo[t].append(key, 0, main, proprio, action, terminal=True)
        self.demos_used[info.direction] += 1
        pos = self.buffers.positives
        initial = self.settings.backward_positives_initial
        if info.direction == "forward":
            pos["forward"].add(main[-FORWARD_POSITIVE_LAST:])
            if initial > 0:
                pos["backward"].add(main[:initial])
            elif self.settings.backward_positives_pre_goal:
                pos["backward"].add(main[:-FORWARD_POSITIVE_LAST])
            else:
                pos["backward"].add(main if self.settings.backward_positives_all_forward else main[:BACKWARD_POSITIVE_FIRST])
        elif not self.settings.backward_positives_all_forward and initial == 0:
            pos["backward"].add(main[-BACKWARD_POSITIVE_LAST:])
