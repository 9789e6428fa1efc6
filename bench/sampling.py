"""Pixel frames from the store's layout to the encoder's input, and one policy act().

Frames are channels last end to end (spec/step.py): "obs/<camera>" [H, W, 3] in the store, the
views stacked to [H, W, C] in the ring buffer and the batch, shifted and widened in that layout,
read by the convolutions as channels_last NCHW. For 2x64x64 and 2x100x100 views:

- ingest: a 200-step chunk as the tail delivers it (one [200, H, W, 3] array per view) stacked
  (spec.step.stack_views) into the ring buffer; per frame;
- sample: a 256-row batch (192 online + 64 demo rows, the robot's mix) into the preallocated
  batch, obs and s', as torch tensors (learner.buffers.sample_mixed, Agent's TorchBatch);
- shift: the uint8 random shift of obs and s' (learner.augment.random_shift, as Agent.augment);
- encoder input: x/255 - 0.5 of both (policies.networks.normalize_pixels) in the convolution's view;
- ring to encoder: the three in a row, i.e. one critic batch from the buffer to the first conv;
- bytes each stage writes per batch (frames only), from the arrays it produces;
- PolicyRunner.act() p50/p99 at robot network sizes, one thread, in its own process (as the daemon).

Timings are the median and the minimum over --iters runs (the minimum is the least disturbed by a
neighbour on a shared machine). malloc keeps freed memory as in `learner run`.

Writes bench/results/sampling.json.   Usage: python bench/sampling.py [--iters 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from stopwatch import timed

from learner.agent import TorchBatch
from learner.augment import random_shift
from learner.buffers import Batch, TransitionBuffer, sample_mixed
from learner.memory import keep_freed_memory
from learner.routing import layout_for
from policies.checkpoint import PolicyCheckpoint
from policies.networks import PRESETS, Policy, normalize_pixels
from policies.runner import PolicyRunner
from spec.step import CameraSpec, ObsSpec, policy_input

BATCH, DEMO_ROWS, ADIM, PDIM, CHUNK = 256, 64, 4, 4, 200
VIEWS = (64, 100)
CPU = torch.device("cpu")


def spec_for(size: int) -> ObsSpec:
    return ObsSpec("pixels", (CameraSpec("wrist", size, size), CameraSpec("front", size, size)), PDIM)


def chunk(spec: ObsSpec, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n steps as StoreTail delivers them: one array per key."""
    h, w = spec.image_size
    data = {f"obs/{c}": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8) for c in spec.camera_names}
    return data | {"obs/proprio": rng.uniform(-1, 1, (n, PDIM)).astype(np.float32),
                   "action": rng.uniform(-1, 1, (n, ADIM)).astype(np.float32)}


def ms(samples: list[float], scale: float = 1e3) -> dict[str, float]:
    return {"median": statistics.median(samples) * scale, "min": min(samples) * scale}


def bench_views(size: int, iters: int, rng: np.random.Generator) -> dict:
    spec = spec_for(size)
    layout = layout_for(spec, ADIM)
    online, demo = TransitionBuffer(2000, layout, "online"), TransitionBuffer(500, layout, "demo")
    chunks = [chunk(spec, CHUNK, rng) for _ in range(2)]
    written = [0]

    def ingest() -> None:  # as Router does for a practice chunk
        data = chunks[written[0] % 2]
        main, proprio = policy_input(data, spec)
        online.append(written[0], 0, main, proprio, data["action"])
        written[0] += 1

    ingest_s = timed(ingest, max(iters // 3, 10), warmup=2)  # 10 chunks fill the 2000-step ring; later ones wrap
    for seg in range(5):
        data = chunk(spec, 100, rng)
        main, proprio = policy_input(data, spec)
        demo.append(seg, 0, main, proprio, data["action"], terminal=True)

    batch = Batch.empty(BATCH, layout)

    def sample() -> TorchBatch:
        return TorchBatch.from_numpy(sample_mixed(online, demo, BATCH, DEMO_ROWS, rng, batch)[0], CPU)

    tb = sample()

    def shift() -> tuple[torch.Tensor, torch.Tensor]:
        return random_shift(tb.obs), random_shift(tb.next_obs)

    shifted = shift()

    def encoder_input() -> list[torch.Tensor]:
        return [normalize_pixels(x).permute(0, 3, 1, 2) for x in shifted]

    def ring_to_encoder() -> list[torch.Tensor]:
        b = sample()
        return [normalize_pixels(random_shift(x)).permute(0, 3, 1, 2) for x in (b.obs, b.next_obs)]

    x = encoder_input()[0]
    assert x.shape == (BATCH, spec.channels, size, size) and x.is_contiguous(memory_format=torch.channels_last)
    # Interleaved, so a neighbour's load hits every stage alike.
    stages: dict[str, list[float]] = {"sample": [], "shift": [], "encoder_input": [], "ring_to_encoder": []}
    fns = {"sample": sample, "shift": shift, "encoder_input": encoder_input, "ring_to_encoder": ring_to_encoder}
    for fn in fns.values():
        fn()
    for _ in range(iters):
        for name, fn in fns.items():
            stages[name] += timed(fn, 1, warmup=0)
    frame_bytes = int(np.prod(layout.main_shape))
    written_bytes = {
        "sample": batch.obs.nbytes + batch.next_obs.nbytes,
        "shift": sum(s.numel() * s.element_size() for s in shifted),
        "encoder_input": sum(s.numel() * s.element_size() for s in encoder_input()),
    }
    out = {
        "views": [2, size, size],
        "frame_bytes": frame_bytes,
        "ingest_us_per_frame": ms(ingest_s, 1e6 / CHUNK),
        **{f"{k}_ms": ms(v) for k, v in stages.items()},
        "bytes_written_per_batch": written_bytes | {"total": sum(written_bytes.values())},
        "frame_copies_ring_to_encoder": 3,  # gather into the batch, shift, widen (the float copy)
    }
    print(f"2x{size}x{size}: ingest {out['ingest_us_per_frame']['median']:.0f} us/frame; "
          + ", ".join(f"{k} {out[f'{k}_ms']['median']:.1f} ms (min {out[f'{k}_ms']['min']:.1f})" for k in stages)
          + f"; {written_bytes['sample'] / 1e6:.1f} + {written_bytes['shift'] / 1e6:.1f} + "
          f"{written_bytes['encoder_input'] / 1e6:.1f} MB written per batch")
    return out


def time_act(checkpoint: Path, size: int, iters: int) -> list[float]:
    """PolicyRunner.act() latencies in s for one observation of two size x size views."""
    rng = np.random.default_rng(0)
    runner = PolicyRunner(PolicyCheckpoint.from_bytes(checkpoint.read_bytes()), num_threads=1)
    obs = {"obs/wrist": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
           "obs/front": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
           "obs/proprio": np.zeros(PDIM, np.float32)}
    return timed(lambda: runner.act(obs), iters, warmup=10)


def bench_act(size: int, iters: int) -> dict:
    spec = spec_for(size)
    ckpt = PolicyCheckpoint.from_policy(Policy(spec, ADIM, PRESETS["robot"]), "forward", 1, spec, {"dim": ADIM},
                                        PRESETS["robot"])
    with tempfile.NamedTemporaryFile(suffix=".ckpt") as f:
        f.write(ckpt.to_bytes())
        f.flush()
        out = subprocess.run([sys.executable, __file__, "--act-only", f.name, "--size", str(size),
                              "--act-iters", str(iters)], capture_output=True, text=True, check=True)
    act = np.array(json.loads(out.stdout.splitlines()[-1])) * 1e3
    res = {"p50": float(np.percentile(act, 50)), "p99": float(np.percentile(act, 99)), "min": float(act.min()),
           "iters": iters}
    print(f"act() 2x{size}x{size}, robot sizes: p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms (1 thread, own process)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--act-iters", type=int, default=300)
    ap.add_argument("--act-only", type=Path, help=argparse.SUPPRESS)  # the child that times act()
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling.json")
    args = ap.parse_args()
    if args.act_only:
        print(json.dumps(time_act(args.act_only, args.size, args.act_iters)))
        return
    malloc_kept = keep_freed_memory()  # as `learner run` does (learner/memory.py)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, malloc keeps freed memory: {malloc_kept}; "
          f"batch {BATCH} ({BATCH - DEMO_ROWS} online + {DEMO_ROWS} demo rows), channels last")
    rng = np.random.default_rng(0)
    views = {str(s): bench_views(s, args.iters, rng) for s in VIEWS}
    act = {str(s): bench_act(s, args.act_iters) for s in VIEWS}
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": threads, "device": "cpu"},
        "layout": "channels last: [H, W, C] uint8 in the ring and the batch; channels_last NCHW at the convolutions",
        "batch": {"rows": BATCH, "demo_rows": DEMO_ROWS},
        "load_average_1min": os.getloadavg()[0],
        "malloc_keeps_freed_memory": malloc_kept,
        "views": views,
        "act_ms": act,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
