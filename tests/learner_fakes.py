"""Small fake replay stores and configs for the learner and policy tests (tiny networks, 32x32 views)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replay.store import ReplayWriter, StoreMeta
from spec.config import Config, parse_config
from spec.step import ActionSpace, ObsSpec

SIZE = 32
STATE_DIM = 6


def tiny_config(tmp: Path, setting: str = "sim", view: tuple[int, int] = (SIZE, SIZE), **learner: Any) -> Config:
    """`view`: (height, width) of both camera views."""
    h, w = view
    cams = [
        {"name": n, "backend": "sim", "width": w, "height": h, "output": {"width": w, "height": h}}
        for n in ("wrist", "front")
    ]
    lc = {
        "setting": setting,
        "mode": "pixels",
        "network": {"preset": "tiny"},
        "device": "cpu",
        "batch_size": 16,
        "demo_rows": 4,
        "seed_steps": 20,
        "capacity": 2000,
        "push_every": 5,
        "save_every": 1000,
        "poll_s": 0.05,
        "run_dir": str(tmp / "run"),
        # v2's per-sample crop + colour jitter costs ~10x a shift on the CPU; tests/test_clf_augment.py
        # covers it (train_step included), the trainer tests keep CI's time budget with the shift.
        "classifier_augment": "shift",
    } | learner
    tree = {
        "cameras": cams,
        "store": {"path": str(tmp / "store.zarr")},
        "server": {"token": "test-token-123"},
        "learner": lc,
    }
    return parse_config(tree, "test", env={})


def store_meta(cfg: Config) -> StoreMeta:
    space = ActionSpace(cfg.action, cfg.workspace)
    return StoreMeta(
        robot="test",
        rate_hz=10.0,
        # As the daemon writes it: the views of the config's observation spec (crop included).
        cameras=[c.to_dict() for c in ObsSpec.from_config(cfg, "pixels", STATE_DIM).cameras],
        action_space=space.spec(),
        proprio_dim=space.proprio_dim,
        state_dim=STATE_DIM,
    )


def fake_step(cfg: Config, t: float, rng: np.random.Generator, version: int = -1, level: int | None = None,
              intervention: bool = False) -> dict[str, Any]:
    """One step; `level` fills the images with a constant (so tests can tell steps apart)."""
    space = ActionSpace(cfg.action, cfg.workspace)
    step: dict[str, Any] = {}
    for c in cfg.cameras:
        if level is None:
            step[f"obs/{c.name}"] = rng.integers(0, 256, (c.output.height, c.output.width, 3), dtype=np.uint8)
        else:
            step[f"obs/{c.name}"] = np.full((c.output.height, c.output.width, 3), level % 256, np.uint8)
    step["obs/proprio"] = rng.uniform(-1, 1, space.proprio_dim).astype(np.float32)
    step["obs/state"] = rng.uniform(-1, 1, STATE_DIM).astype(np.float32)
    step["action"] = rng.uniform(-1, 1, space.dim).astype(np.float32)
    step["timestamp"] = float(t)
    step["policy_version"] = int(version)
    step["intervention"] = bool(intervention)
    return step


class FakeStore:
    """Writes episodes with ReplayWriter, the way the daemon does."""

    def __init__(self, cfg: Config, seed: int = 0, path: Path | None = None) -> None:
        self.cfg = cfg
        self.path = Path(path or cfg.store.path)
        self.writer = ReplayWriter.open(self.path, store_meta(cfg), chunk_steps=8)
        self.rng = np.random.default_rng(seed)
        self.t = 0.0

    def episode(self, kind: str, direction: str, n: int, success: bool | None = None, version: int = -1,
                levels: list[int] | None = None, versions: list[int] | None = None,
                interventions: list[bool] | None = None, close: bool = True) -> Any:
        ep = self.writer.begin_episode(kind, direction, {})
        for i in range(n):
            self.t += 0.1
            ep.append(fake_step(
                self.cfg, self.t, self.rng,
                version=versions[i] if versions else version,
                level=levels[i] if levels else None,
                intervention=interventions[i] if interventions else False,
            ))
        if close:
            return ep.close(success=success)
        ep.flush()
        return ep

    def append(self, ep: Any, n: int, version: int = -1) -> None:
        for _ in range(n):
            self.t += 0.1
            ep.append(fake_step(self.cfg, self.t, self.rng, version=version))

    def close(self) -> None:
        self.writer.close()
