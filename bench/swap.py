"""Checkpoint swap: how long from a pushed checkpoint to acting with it, and does the tick notice?

    python bench/swap.py [--preset robot|sim|tiny] [--pushes 3] [--ticks 400]

Runs the sim daemon in-process with a learned-policy session, then pushes checkpoints through the
same code path as `PUT /policies/forward` (validation, smoke inference, staging) from another
thread while the loop runs. Prints receive-to-active latency, late ticks and work per tick with
the policy in the loop; writes bench/results/swap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="robot", choices=["robot", "sim", "tiny"])
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "swap.json"))
    args = ap.parse_args()
    sys.setswitchinterval(0.001)

    from policies.checkpoint import PolicyCheckpoint
    from policies.networks import NetworkSizes, Policy
    from robot_server.daemon import Daemon
    from robot_server.session import SessionParams
    from spec.config import NetworkConfig, load_config
    from spec.step import ObsSpec

    cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml")
    tmp = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    cfg.store.path = tmp / "bench.zarr"
    cfg.server.checkpoint_dir = tmp / "policies"
    cfg.control.status_line = False
    d = Daemon(cfg)
    d.start()
    spec = ObsSpec.from_config(cfg, "pixels")
    sizes = NetworkSizes.from_config(NetworkConfig(preset=args.preset))
    blobs = [
        PolicyCheckpoint.from_policy(Policy(spec, d.space.dim, sizes), "forward", v + 1, spec, d.space.spec(),
                                     sizes).to_bytes()
        for v in range(args.pushes)
    ]
    results = []
    try:
        d.loop.submit(lambda s: s.start_session(SessionParams(policy="learned", phase_steps=100_000,
                                                              home_at_start=False)))
        time.sleep(3.0)
        for raw in blobs:
            late_before = d.loop.stats.late + d.loop.stats.skipped
            t0 = time.monotonic()
            out: dict = {}
            th = threading.Thread(target=lambda r=raw, o=out: o.update(d.accept_checkpoint("forward", r)))
            th.start()
            th.join(60)
            results.append({
                "version": out.get("version"),
                "size_mb": round(len(raw) / 1e6, 2),
                "call_s": round(time.monotonic() - t0, 3),
                "receive_to_active_ms": out.get("swap_latency_ms"),
                "late_ticks_during": d.loop.stats.late + d.loop.stats.skipped - late_before,
            })
            time.sleep(2.0)
        t_end = time.monotonic() + args.ticks / cfg.control.rate_hz
        while time.monotonic() < t_end:
            time.sleep(0.2)
        tick = d.loop.stats.summary()
        acting = d.policies.active("forward")
    finally:
        d.stop()
    summary = {"preset": args.preset, "pushes": results, "active_version": acting.version if acting else None,
               "tick": tick, "loadavg_1m": os.getloadavg()[0]}
    for r in results:
        print(f"v{r['version']} ({r['size_mb']} MB): accept call {r['call_s'] * 1e3:.0f} ms, receive->active "
              f"{r['receive_to_active_ms']} ms, late ticks during {r['late_ticks_during']}")
    print(f"with the {args.preset} policy in the loop: work p50 {tick['work_ms_p50']:.2f} ms p99 "
          f"{tick['work_ms_p99']:.2f} ms; period error p99 {tick['period_error_ms_p99']:.3f} ms; "
          f"late {tick['late']} skipped {tick['skipped']} (load {summary['loadavg_1m']:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
