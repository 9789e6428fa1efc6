"""Sim costs: render ms per camera, physics steps/s, arm read time. Writes bench/results/sim_render.json.

MUJOCO_GL=egl .venv/bin/python bench/sim_render.py [--config configs/sim.yaml] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim import ScriptedExpert, SimArm, SimWorld, build_sim  # noqa: E402
from spec.config import load_config  # noqa: E402
from spec.step import ActionSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3)


def render_alone(world: SimWorld, name: str, width: int, height: int, frames: int) -> dict[str, float]:
    """One renderer on its own thread (EGL contexts are thread-bound), nothing else rendering."""
    out: dict[str, float] = {}

    def run() -> None:
        cam = world.cfg.camera(name)
        renderer = mujoco.Renderer(world.model, height, width)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            renderer.scene.flags[flag] = 0
        times = []
        t0 = time.perf_counter()
        renderer.update_scene(world.data, camera=cam.sim_camera or cam.name)
        renderer.render()
        out["first_ms"] = round(1e3 * (time.perf_counter() - t0), 1)
        for _ in range(frames):
            t = time.perf_counter()
            with world.lock:
                renderer.update_scene(world.data, camera=cam.sim_camera or cam.name)
            renderer.render()
            times.append(1e3 * (time.perf_counter() - t))
        renderer.close()
        out.update(mean_ms=round(float(np.mean(times)), 3), p50_ms=pct(times, 50), p95_ms=pct(times, 95))

    th = threading.Thread(target=run)
    th.start()
    th.join(120)
    return out


def physics_unthrottled(cfg, seconds: float) -> dict[str, float]:
    """Steps/s with the controller (the sim as used) and raw mj_step, while the expert pushes."""
    world = SimWorld(cfg)
    arm = SimArm(world)
    arm.connect()
    space = ActionSpace(cfg.action, cfg.workspace)
    expert = ScriptedExpert(world, space)
    world.task.reset_scene("forward", np.random.default_rng(0))
    ticks = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        arm.send_target(space.target(expert.act("forward"), arm.read()))
        world.advance(0.1)
        ticks += 1
    wall = time.perf_counter() - t0
    steps = ticks * round(0.1 / world.model.opt.timestep)
    raw_n = 20000
    t1 = time.perf_counter()
    for _ in range(raw_n):
        mujoco.mj_step(world.model, world.data)
    raw_wall = time.perf_counter() - t1
    reads = []
    for _ in range(2000):
        t = time.perf_counter()
        arm.read()
        reads.append(1e6 * (time.perf_counter() - t))
    return {
        "timestep_s": world.model.opt.timestep,
        "controlled_steps_per_s": round(steps / wall, 1),
        "realtime_multiple": round(ticks * 0.1 / wall, 2),
        "raw_mj_step_per_s": round(raw_n / raw_wall, 1),
        "arm_read_us_p50": pct(reads, 50),
        "arm_read_us_p99": pct(reads, 99),
    }


def threaded(cfg, seconds: float) -> dict[str, object]:
    """The daemon's configuration: physics thread in real time plus every camera's render thread."""
    rig = build_sim(cfg)
    space = ActionSpace(cfg.action, cfg.workspace)
    expert = ScriptedExpert(rig.world, space)
    try:
        rig.start()
        rig.world.task.reset_scene("forward", np.random.default_rng(0))
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            rig.arm.send_target(space.target(expert.act("forward"), rig.arm.read()))
            time.sleep(0.1 / cfg.sim.realtime_factor)
        stats = rig.world.stats()
        cams = {name: cam.stats.as_dict() for name, cam in rig.cameras.items()}
        frames_per_s = {name: round(cam.stats.frames / seconds, 1) for name, cam in rig.cameras.items()}
    finally:
        rig.close()
    return {"physics": stats, "cameras": cams, "camera_frames_per_s": frames_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "spec" / "configs" / "sim.yaml"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    cfg = load_config(args.config)

    world = SimWorld(cfg)
    world.task.reset_scene("forward", np.random.default_rng(0))
    render = {}
    for cam in cfg.cameras:
        render[f"{cam.name}_{cam.width}x{cam.height}"] = render_alone(
            world, cam.name, cam.width, cam.height, args.frames
        )
        render[f"{cam.name}_640x480"] = render_alone(world, cam.name, 640, 480, args.frames // 4)
    for key, r in render.items():
        print(
            f"render {key:>18}: mean {r['mean_ms']:.2f} ms  p50 {r['p50_ms']:.2f}  p95 {r['p95_ms']:.2f}  first {r['first_ms']} ms"
        )

    physics = physics_unthrottled(cfg, args.seconds)
    print(
        f"physics: {physics['controlled_steps_per_s']:.0f} steps/s with the controller "
        f"({physics['realtime_multiple']}x real time), raw mj_step {physics['raw_mj_step_per_s']:.0f}/s, "
        f"arm.read p50 {physics['arm_read_us_p50']} us"
    )
    live = threaded(cfg, args.seconds)
    print(f"threaded (rf {cfg.sim.realtime_factor}): physics {live['physics']}")
    for name, st in live["cameras"].items():
        print(f"  camera {name}: capture {st['capture_ms']} ms, {live['camera_frames_per_s'][name]} frames/s")

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "mujoco": mujoco.__version__,
            "gl": os.environ.get("MUJOCO_GL"),
            "load_avg": os.getloadavg(),
        },
        "render_alone": render,
        "physics_unthrottled": physics,
        "threaded": live,
    }
    out = ROOT / "bench" / "results" / "sim_render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
