"""Replay store throughput: appends with two 100x100x3 cameras + proprio + action, and batch reads.

    python bench/store.py [--steps 1600] [--episode-steps 200] [--chunk-steps 16] [--batches 20]

Append: steps/s through EpisodeWriter.append (episodes closed every --episode-steps, so close and
fsync are included), per-append latency percentiles (an append that fills a chunk writes it), and
bytes on disk per step, for incompressible noise frames and for smooth moving frames (closer to
renders). Read: random 256-transition batches (obs at t and t+1, action, ...) straight from the
store with read_steps, and loading whole episodes into RAM (the learner's path) then sampling
from flat in-RAM arrays.
Writes bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.store import ReplayReader, ReplayWriter, StoreMeta  # noqa: E402

RATE_HZ = 10.0
TARGET_FACTOR = 20  # DESIGN.md: append >= 20x the 10 Hz need


def frames(kind: str, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "noise":
        return [rng.integers(0, 256, (100, 100, 3), dtype=np.uint8) for _ in range(n)]
    yy, xx = np.mgrid[0:100, 0:100]
    return [
        np.stack([(xx + 2 * i) % 256, (yy + i) % 256, ((xx + yy) // 2 + 3 * i) % 256], -1).astype(np.uint8)
        for i in range(n)
    ]


def bench_append(path: Path, kind: str, steps: int, episode_steps: int, chunk_steps: int) -> dict:
    rng = np.random.default_rng(0)
    imgs = frames(kind, 64, rng)
    lat = np.empty(steps)
    closes = []
    with ReplayWriter.open(
        path,
        StoreMeta(
            robot="bench",
            rate_hz=RATE_HZ,
            cameras=[{"name": n, "height": 100, "width": 100} for n in ("front", "wrist")],
            action_space={"dim": 4},
            proprio_dim=4,
        ),
        chunk_steps=chunk_steps,
    ) as w:
        ep = w.begin_episode("practice", "forward")
        t_start = time.perf_counter()
        for i in range(steps):
            step = {
                "obs/front": imgs[i % 64],
                "obs/wrist": imgs[(i + 7) % 64],
                "obs/proprio": rng.standard_normal(4).astype(np.float32),
                "action": rng.uniform(-1, 1, 4).astype(np.float32),
                "timestamp": float(i) / RATE_HZ,
                "policy_version": 3,
                "intervention": False,
            }
            t0 = time.perf_counter()
            ep.append(step)
            if ep.length == episode_steps:
                t1 = time.perf_counter()
                ep.close(success=False)
                closes.append(time.perf_counter() - t1)
                ep = w.begin_episode("practice", "backward")
            lat[i] = time.perf_counter() - t0
        if ep.length:
            ep.close()
        elapsed = time.perf_counter() - t_start
    disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    rate = steps / elapsed
    return {
        "frames": kind,
        "steps": steps,
        "steps_per_s": round(rate, 1),
        "x_10hz_need": round(rate / RATE_HZ, 1),
        "meets_20x_target": rate >= TARGET_FACTOR * RATE_HZ,
        "append_ms": {
            "p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "p99": round(float(np.percentile(lat, 99)) * 1e3, 3),
            "max": round(float(lat.max()) * 1e3, 3),
        },
        "close_ms_mean": round(float(np.mean(closes)) * 1e3, 2) if closes else None,
        "bytes_per_step": round(disk / steps),
        "raw_bytes_per_step": 2 * 100 * 100 * 3 + 4 * 4 * 2 + 8 + 4 + 1,
    }


def bench_read(path: Path, batches: int, batch: int = 256) -> dict:
    r = ReplayReader(path)
    eps = r.episodes()
    lengths = np.array([e.length for e in eps])
    rng = np.random.default_rng(1)

    def sample() -> tuple[np.ndarray, np.ndarray]:
        # transitions need t+1, so t < length - 1; episodes weighted by their length
        e = rng.choice(len(eps), size=batch, p=(lengths - 1) / (lengths - 1).sum())
        t = (rng.random(batch) * (lengths[e] - 1)).astype(np.int64)
        return e, t

    direct = []
    for _ in range(max(1, batches // 4)):  # slow: each batch decodes most chunks it touches
        e, t = sample()
        t0 = time.perf_counter()
        for ei in np.unique(e):
            ts = t[e == ei]
            r.read_steps(eps[ei].id, np.concatenate([ts, ts + 1]))
        direct.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    ram = [r.read(ep.id) for ep in eps]
    load_s = time.perf_counter() - t0
    # The learner's shape: episodes concatenated into flat arrays, a batch is two fancy indexings.
    flat = {k: np.concatenate([d[k] for d in ram]) for k in ram[0]}
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    in_ram = []
    for _ in range(batches):
        e, t = sample()
        t0 = time.perf_counter()
        idx = offsets[e] + t
        _ = {k: (v[idx], v[idx + 1]) for k, v in flat.items()}
        in_ram.append(time.perf_counter() - t0)
    total = int(lengths.sum())
    return {
        "episodes": len(eps),
        "steps": total,
        "batch": batch,
        "direct_batch_ms": {
            "median": round(float(np.median(direct)) * 1e3, 1),
            "max": round(float(np.max(direct)) * 1e3, 1),
        },
        "load_all_s": round(load_s, 3),
        "load_steps_per_s": round(total / load_s),
        "in_ram_batch_ms_median": round(float(np.median(in_ram)) * 1e3, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--episode-steps", type=int, default=200)
    ap.add_argument("--chunk-steps", type=int, default=16)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "store.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    results: dict = {"chunk_steps": args.chunk_steps, "episode_steps": args.episode_steps, "append": []}
    for kind in ("noise", "smooth"):
        res = bench_append(tmp / f"{kind}.zarr", kind, args.steps, args.episode_steps, args.chunk_steps)
        results["append"].append(res)
        print(
            f"append [{kind:6s}] {res['steps_per_s']:8.1f} steps/s = {res['x_10hz_need']}x the 10 Hz need "
            f"(target {TARGET_FACTOR}x: {'ok' if res['meets_20x_target'] else 'MISSED'}); append p50 "
            f"{res['append_ms']['p50']} ms p99 {res['append_ms']['p99']} ms max {res['append_ms']['max']} ms; "
            f"close {res['close_ms_mean']} ms; {res['bytes_per_step']} B/step on disk "
            f"(raw {res['raw_bytes_per_step']})"
        )
    rd = bench_read(tmp / "smooth.zarr", args.batches)
    results["read"] = rd
    print(
        f"read: random {rd['batch']}-transition batch straight from the store {rd['direct_batch_ms']['median']} ms "
        f"median ({rd['direct_batch_ms']['max']} max) over {rd['episodes']} episodes; loading all {rd['steps']} "
        f"steps {rd['load_all_s']} s ({rd['load_steps_per_s']} steps/s), then a batch from RAM "
        f"{rd['in_ram_batch_ms_median']} ms"
    )
    results["loadavg_1m"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
