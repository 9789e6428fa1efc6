"""Random demonstrations shaped as the sim daemon records them (classifier positives in seconds)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from replay.store import ReplayWriter
from robot_server.daemon import store_meta
from sim.task import STATE_DIM
from spec.config import load_config
from spec.step import ActionSpace, ObsSpec


def write_random_demos(store: Path | str) -> None:
    """Two successful demos per direction, random but shaped as the sim daemon records them: the
    classifiers get positives without minutes of scripted demonstrations."""
    cfg = load_config("sim", env={})
    space = ActionSpace(cfg.action, cfg.workspace)
    spec = ObsSpec.from_config(cfg, "pixels", STATE_DIM)
    rng = np.random.default_rng(0)
    t = time.time() - 60
    with ReplayWriter.open(store, store_meta(cfg, space, spec), cfg.store.chunk_steps) as w:
        for direction in ("forward", "backward") * 2:
            ep = w.begin_episode("demo", direction, {})
            for _ in range(30):
                t += 0.1
                ep.append({**{f"obs/{c.name}": rng.integers(0, 256, (c.height, c.width, 3), np.uint8)
                              for c in spec.cameras},
                           "obs/proprio": rng.uniform(-1, 1, spec.proprio_dim).astype(np.float32),
                           "obs/state": rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
                           "action": rng.uniform(-1, 1, space.dim).astype(np.float32),
                           "timestamp": t, "policy_version": -1, "intervention": False})
            ep.close(success=True)
