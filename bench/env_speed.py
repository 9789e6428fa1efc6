"""PushCube-v0 speed: env steps/s in state mode (random and expert actions) and in pixel mode.
Writes bench/results/env_speed.json.

MUJOCO_GL=egl .venv/bin/python bench/env_speed.py [--steps 1000] [--pixel-steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from sim.gym_env import PushCubeEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rate(env: PushCubeEnv, steps: int, policy: str) -> float:
    """Env steps per wall second, reset time included (resets happen at truncation)."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        action = env.expert_action() if policy == "expert" else rng.uniform(-1.0, 1.0, env.space.dim)
        _obs, _r, _term, truncated, _info = env.step(action)
        if truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pixel-steps", type=int, default=200)
    args = ap.parse_args()
    out: dict[str, object] = {"machine": platform.node(), "cpus": os.cpu_count(), "steps": args.steps}

    env = PushCubeEnv(start_jitter_m=0.05, start_jitter_yaw_deg=45)
    try:
        out["state_random_steps_per_s"] = round(rate(env, args.steps, "random"), 1)
        out["state_expert_steps_per_s"] = round(rate(env, args.steps, "expert"), 1)
        physics = env.world.stats()
        out["physics_steps_per_s"] = physics["steps_per_s"]
    finally:
        env.close()

    try:
        pix = PushCubeEnv(obs_mode="pixels")
    except Exception as exc:  # no EGL/OSMesa here: report, do not fail the state numbers
        out["pixels_error"] = f"{type(exc).__name__}: {exc}"
    else:
        try:
            pix.reset(seed=0)  # the first render pays for the GL context
            out["pixels_cameras"] = [c.name for c in pix.cfg.cameras]
            out["pixels_random_steps_per_s"] = round(rate(pix, args.pixel_steps, "random"), 1)
        finally:
            pix.close()

    for key, value in out.items():
        print(f"{key}: {value}")
    dest = ROOT / "bench" / "results" / "env_speed.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
