"""Control-loop timing: the sim daemon for N ticks with 2 cameras, a policy and store writes.

    python bench/loop.py [--ticks 600] [--policy random|hold] [--config configs/sim.yaml]

Prints period error p50/p99/max, work per tick as % of the budget, late/skipped ticks, stale
frames and the sim's render cost (in its own process), and writes bench/results/loop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=600)
    ap.add_argument("--policy", default="random", choices=["random", "hold"])
    ap.add_argument("--config", default=str(ROOT / "spec" / "configs" / "sim.yaml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "loop.json"))
    args = ap.parse_args()
    sys.setswitchinterval(0.001)

    from robot_server.daemon import Daemon
    from robot_server.session import SessionParams
    from spec.config import load_config

    cfg = load_config(args.config)
    tmp = tempfile.mkdtemp(prefix="bench-loop-")
    cfg.store.path = Path(tmp) / "bench.zarr"
    cfg.server.checkpoint_dir = Path(tmp) / "policies"
    cfg.control.status_line = False
    d = Daemon(cfg)
    d.start()
    try:
        d.loop.submit(lambda s: s.start_session(SessionParams(policy=args.policy, max_steps=args.ticks,
                                                              phase_steps=200, home_every=0)))
        t0 = time.time()
        while d.supervisor.finished_sessions == 0 and time.time() - t0 < args.ticks / cfg.control.rate_hz * 3 + 30:
            time.sleep(0.2)
        tick = d.loop.stats.summary()
        cams = {n: round(c.stats.capture_ms, 3) for n, c in d.cameras.items()}
    finally:
        d.stop()
    result = {
        "ticks": tick["ticks"],
        "rate_hz": cfg.control.rate_hz,
        "cameras": [c.name for c in cfg.cameras],
        "policy": args.policy,
        "steps_stored": d.recorder.stats.steps,
        "loadavg_1m": os.getloadavg()[0],
        **{k: tick[k] for k in tick},
        "sim_render_ms_per_frame": cams,
    }
    print(f"{result['ticks']} ticks at {cfg.control.rate_hz:g} Hz, {result['steps_stored']} steps stored, "
          f"load {result['loadavg_1m']:.2f}")
    print(f"period error  p50 {tick['period_error_ms_p50']:.3f} ms  p99 {tick['period_error_ms_p99']:.3f} ms  "
          f"max {tick['period_error_ms_max']:.3f} ms")
    print(f"work per tick p50 {tick['work_ms_p50']:.2f} ms  p99 {tick['work_ms_p99']:.2f} ms  "
          f"({tick['work_pct_of_budget_mean']:.2f} % of budget mean, {tick['work_pct_of_budget_p99']:.2f} % p99)")
    print(f"late {tick['late']}  skipped {tick['skipped']}  overruns {tick['overruns']}  "
          f"stale frames {tick['stale_frames']}")
    print("sim render (own process): " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in cams.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
