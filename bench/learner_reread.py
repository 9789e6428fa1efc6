"""How fast a restarted learner re-reads the replay store, in stored steps per second.

A store laid out as the sim daemon writes it (configs/sim.yaml: two 64x64 views, proprio, the
sim's state vector; 2+2 demos, then 200-step practice phases alternating forward/backward) is
written once. Then, per mode (state, pixels), a learner saves its training state and a second one
restarts from it as `learner run` does (Trainer.setup(): networks, state load, then one poll of
the whole store). Reported per mode: the re-read rate (steps / (store read + routing into the
buffers)), its two parts, and the whole restart. Frames are smooth moving patterns (they
compress like renders, unlike noise). The store is in the page cache (written just before), as
on a learner restarted on the machine that holds the store.

    python bench/learner_reread.py [--steps 30000] [--modes state pixels] [--profile] [--keep DIR]

Writes bench/results/learner_reread.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.core import LearningCore  # noqa: E402
from learner.memory import keep_freed_memory  # noqa: E402
from learner.tail import StoreTail  # noqa: E402
from learner.trainer import Trainer  # noqa: E402
from replay.store import ReplayWriter, StoreMeta  # noqa: E402
from sim.task import STATE_DIM  # noqa: E402
from spec.config import Config, parse_config  # noqa: E402
from spec.step import ActionSpace, ObsSpec  # noqa: E402

PHASE = 200
DEMO = 60
TARGET = 10_000  # issue 12: a restarted learner re-reads the store at >= 10k steps/s


def config(workdir: Path, mode: str) -> Config:
    tree = yaml.safe_load((ROOT / "spec" / "configs" / "sim.yaml").read_text())
    tree["store"]["path"] = str(workdir / "store.zarr")
    tree["learner"] |= {"mode": mode, "network": {"preset": "tiny"}, "device": "cpu", "seed_steps": 1000,
                        "run_dir": str(workdir / f"run-{mode}")}
    return parse_config(tree, "bench", env={})


def write_store(cfg: Config, steps: int) -> int:
    """Demos, then practice phases up to `steps` practice steps; returns the steps written."""
    space = ActionSpace(cfg.action, cfg.workspace)
    spec = ObsSpec.from_config(cfg, "pixels", STATE_DIM)
    meta = StoreMeta(robot="bench", rate_hz=10.0, cameras=[c.to_dict() for c in spec.cameras],
                     action_space=space.spec(), proprio_dim=space.proprio_dim, state_dim=STATE_DIM)
    rng = np.random.default_rng(0)
    h, w = spec.image_size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([(xx + 2 * i) % 256, (yy + i) % 256, ((xx + yy) // 2 + 3 * i) % 256], -1).astype(np.uint8)
              for i in range(64)]
    total, t = 0, 0.0

    def episode(kind: str, direction: str, n: int, success: bool | None) -> None:
        nonlocal total, t
        ep = w_.begin_episode(kind, direction, {})
        for _ in range(n):
            t += 0.1
            ep.append({
                **{f"obs/{c.name}": frames[(total + j) % 64] for j, c in enumerate(spec.cameras)},
                "obs/proprio": rng.uniform(-1, 1, space.proprio_dim).astype(np.float32),
                "obs/state": rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
                "action": rng.uniform(-1, 1, space.dim).astype(np.float32),
                "timestamp": t, "policy_version": -1 if kind == "demo" else 0, "intervention": False,
            })
            total += 1
        ep.close(success=success)

    with ReplayWriter.open(cfg.store.path, meta, cfg.store.chunk_steps) as w_:
        for direction in ("forward", "backward", "forward", "backward"):
            episode("demo", direction, DEMO, True)
        total = 0
        for i in range(steps // PHASE):
            episode("practice", "forward" if i % 2 == 0 else "backward", PHASE, None)
    return total


@contextlib.contextmanager
def timing(into: dict[str, float]) -> Iterator[None]:
    """Seconds spent in StoreTail.poll (store read) and LearningCore.ingest (routing into buffers)."""
    poll, ingest = StoreTail.poll, LearningCore.ingest

    def timed_poll(self, *a, **k):
        t = time.perf_counter()
        try:
            return poll(self, *a, **k)
        finally:
            into["read_s"] += time.perf_counter() - t

    def timed_ingest(self, *a, **k):
        t = time.perf_counter()
        try:
            return ingest(self, *a, **k)
        finally:
            into["route_s"] += time.perf_counter() - t

    StoreTail.poll, LearningCore.ingest = timed_poll, timed_ingest  # type: ignore[method-assign]
    try:
        yield
    finally:
        StoreTail.poll, LearningCore.ingest = poll, ingest  # type: ignore[method-assign]


def restart(cfg: Config, practice_steps: int, profile: bool) -> dict:
    mock = httpx.MockTransport(lambda r: httpx.Response(200, json={}))
    first = Trainer(cfg, transport=mock, tensorboard=False)
    first.poll(force=True)
    first.save()
    first.close()
    parts = {"read_s": 0.0, "route_s": 0.0}
    prof = cProfile.Profile() if profile else None
    tr = Trainer(cfg, transport=mock, tensorboard=False)
    t0 = time.perf_counter()
    with timing(parts):
        if prof:
            prof.enable()
        tr.setup()  # builds the networks, loads the state, re-reads the store
        if prof:
            prof.disable()
    total_s = time.perf_counter() - t0
    assert tr.router.env_steps == practice_steps, (tr.router.env_steps, practice_steps)
    buffered = sum(len(b) for b in tr.buffers.online.values())
    tr.close()
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    reread = parts["read_s"] + parts["route_s"]
    return {
        "practice_steps": practice_steps,
        "steps_buffered": buffered,  # online rings, seed copies included
        "read_s": round(parts["read_s"], 3),
        "route_s": round(parts["route_s"], 3),
        "reread_steps_per_s": round(practice_steps / reread),
        "restart_s": round(total_s, 3),
        "meets_10k": practice_steps / reread >= TARGET,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30_000, help="practice steps in the store")
    ap.add_argument("--modes", nargs="+", default=["state", "pixels"], choices=["state", "pixels"])
    ap.add_argument("--profile", action="store_true", help="print a cProfile of each restart")
    ap.add_argument("--keep", type=Path, help="write the store into this directory once and reuse it after")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "learner_reread.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as `learner run` does
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "load_average_1m": os.getloadavg()[0],  # a shared box: the rates scale with what is left
                     "code": commit, "phase_steps": PHASE, "target_steps_per_s": TARGET}
    with tempfile.TemporaryDirectory(prefix="reread-") as tmp:
        work = args.keep or Path(tmp)
        for old in work.glob("run-*"):
            shutil.rmtree(old)
        written = work / "practice_steps"
        if written.is_file() and int(written.read_text()) == args.steps // PHASE * PHASE:
            steps = int(written.read_text())
        else:
            shutil.rmtree(work / "store.zarr", ignore_errors=True)
            t = time.perf_counter()
            steps = write_store(config(work, "state"), args.steps)
            written.write_text(str(steps))
            print(f"wrote {steps} practice steps in {time.perf_counter() - t:.1f} s")
        for mode in args.modes:
            r = restart(config(work, mode), steps, args.profile)
            results[mode] = r
            print(f"{mode}: re-read {r['reread_steps_per_s']} steps/s (read {r['read_s']} s, route {r['route_s']} s), "
                  f"restart {r['restart_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
