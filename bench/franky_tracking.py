"""FrankyArm against franka-sim: tracking strategies, command latency, recovery time, CPU.

    python bench/franky_tracking.py [--ticks 200] [--recoveries 3] [--strategies impedance cartesian]

For each tracking strategy (cfg.arm.tracking) it drives the arm at 10 Hz through
- a random walk of ActionSpace deltas (the policy's kind of input): lag = distance from the
  measured position to the previous tick's target;
- a circle (r = 5 cm, 4 s a lap, 7.9 cm/s): lag to the previous target and radial error;
- a steady state: a target 3 cm away held for 3 s: final error and time to within 1 mm;
and times `send_target()` and `read()` (p50/p99). Planner failures and reflexes are counted
(the arm recovers and the bench goes on). Then, on a server with --enforce-comm-constraints, it
pauses a client process for 0.3 s (SIGSTOP) and times the recovery. Also reports the CPU used by
franka-sim and by this process, and which threads run SCHED_FIFO. Needs .venv-franka-sim
(scripts/setup_franka_sim.sh). Writes bench/results/franky_tracking.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arm.base import ArmMode, ArmTarget  # noqa: E402
from arm.franky_driver import FrankyArm  # noqa: E402
from spec.step import ActionSpace  # noqa: E402
from tests.franka_sim import ClientProcess, FrankaSimServer, franka_config, missing_reason  # noqa: E402

PERIOD = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def fifo_threads(pid: int) -> list[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        policy, rt_priority = int(fields[38]), int(fields[37])
        if policy in (1, 2):  # SCHED_FIFO, SCHED_RR
            out.append(f"{name}[{task.name}] {'FIFO' if policy == 1 else 'RR'} {rt_priority}")
    return out


def stats_mm(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float) * 1e3
    if a.size == 0:
        return {}
    return {
        "mean": round(float(a.mean()), 2),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "max": round(float(a.max()), 2),
    }


def stats_ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


class Driver:
    """Ticks a FrankyArm at 10 Hz on fixed deadlines, timing every call."""

    def __init__(self, arm: FrankyArm) -> None:
        self.arm = arm
        self.read_s: list[float] = []
        self.send_s: list[float] = []
        self.not_ready_ticks = 0

    def read(self):
        t = time.perf_counter()
        state = self.arm.read()
        self.read_s.append(time.perf_counter() - t)
        return state

    def send(self, target: ArmTarget) -> None:
        t = time.perf_counter()
        self.arm.send_target(target)
        self.send_s.append(time.perf_counter() - t)

    def run(self, ticks: int, make_target) -> list[tuple]:
        """make_target(k, state) -> ArmTarget; returns (state, previous target, target) per tick."""
        rows, previous = [], None
        t0 = time.perf_counter()
        for k in range(ticks):
            state = self.read()
            if state.mode is ArmMode.PAUSED:
                self.arm.resume()
            if state.mode is not ArmMode.READY:
                self.not_ready_ticks += 1
                previous = None
            else:
                target = make_target(k, state)
                self.send(target)
                rows.append((state, previous, target))
                previous = target
            time.sleep(max(0.0, t0 + (k + 1) * PERIOD - time.perf_counter()))
        return rows


def wait_ready(arm: FrankyArm, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mode = arm.read().mode
        if mode is ArmMode.READY:
            return
        if mode is ArmMode.PAUSED:
            arm.resume()
        time.sleep(0.05)
    raise TimeoutError(f"arm not READY after {timeout:g} s: {arm.read().mode}, {arm.help_request()}")


def bench_strategy(tracking: str, dynamics_factor: float | None, ticks: int, seed: int) -> dict:
    overrides: dict = {"tracking": tracking, "recovery": {"max_failures": 1000, "retreat_m": 0.0}}
    if dynamics_factor is not None:
        overrides["dynamics_factor"] = dynamics_factor
    cfg = franka_config(**overrides)
    arm = FrankyArm(cfg)
    t = time.perf_counter()
    arm.connect()
    connect_s = time.perf_counter() - t
    try:
        space = ActionSpace(cfg.action, cfg.workspace)
        drv = Driver(arm)
        result: dict = {"tracking": tracking, "dynamics_factor": cfg.arm.dynamics_factor,
                        "connect_ms": round(connect_s * 1e3, 1)}

        # Random walk of policy-like actions, pulled towards the middle of the box.
        arm.go_home()
        wait_ready(arm)
        rng = np.random.default_rng(seed)
        velocity = np.zeros(3)
        centre = 0.5 * (space.low + space.high)

        def walk(k, state):
            nonlocal velocity
            velocity = 0.8 * velocity + 0.2 * rng.normal(size=3)
            return space.target(np.concatenate([velocity + 2.0 * (centre - state.position), [-1.0]]), state)

        rows = drv.run(ticks, walk)
        lag = [float(np.linalg.norm(s.position - prev.position)) for s, prev, _ in rows[5:] if prev is not None]
        result["random_walk"] = {"ticks": ticks, "lag_mm": stats_mm(lag)}

        # Circle in the y-z plane around the middle of the box.
        arm.go_home()
        wait_ready(arm)
        home = arm.read().position
        radius, lap_s = 0.05, 4.0
        centre_c = home + np.array([0.0, 0.0, -radius - 0.02])

        def on_circle(k):
            a = 2.0 * math.pi * k * PERIOD / lap_s
            return centre_c + radius * np.array([0.0, math.sin(a), math.cos(a)])

        hold_target(drv, on_circle(0), 1.5)
        rows = drv.run(int(2 * lap_s / PERIOD), lambda k, s: ArmTarget(on_circle(k), None, False))
        lag = [float(np.linalg.norm(s.position - prev.position)) for s, prev, _ in rows if prev is not None]
        radial = [abs(float(np.linalg.norm((s.position - centre_c)[1:])) - radius) for s, _, _ in rows[10:]]
        result["circle"] = {"radius_m": radius, "lap_s": lap_s, "lag_mm": stats_mm(lag),
                            "radial_error_mm": stats_mm(radial)}

        # Steady state: a target 3 cm away, held.
        start = arm.read().position
        goal = np.clip(start + np.array([0.03, 0.0, 0.0]), space.low, space.high)
        rows = drv.run(30, lambda k, s: ArmTarget(goal, None, False))
        errors = [float(np.linalg.norm(s.position - goal)) for s, _, _ in rows]
        within = next((i for i, e in enumerate(errors) if e < 0.001 and max(errors[i:]) < 0.001), None)
        result["steady_state"] = {"step_m": 0.03, "final_error_mm": round(errors[-1] * 1e3, 3),
                                  "settle_to_1mm_s": None if within is None else round(within * PERIOD, 1)}

        result["send_target_ms"] = stats_ms(drv.send_s)
        result["read_ms"] = stats_ms(drv.read_s)
        result["reflexes"] = arm.stats.reflexes
        result["errors"] = sorted(set(arm.stats.errors))[:5]
        result["not_ready_ticks"] = drv.not_ready_ticks
        result["fifo_threads"] = fifo_threads(os.getpid())
        return result
    finally:
        arm.close()


def hold_target(drv: Driver, position: np.ndarray, seconds: float) -> None:
    drv.run(int(seconds / PERIOD), lambda k, s: ArmTarget(position, None, False))


def bench_recovery(times: int) -> dict:
    """SIGSTOP a streaming client under --enforce-comm-constraints; time its recovery."""
    out: dict = {"runs": []}
    with FrankaSimServer(enforce_comm_constraints=True) as server:
        client = ClientProcess(seconds=4.0 + 3.0 * times, max_failures=1000)
        try:
            client.wait_event("ready", timeout=60.0)
            for _ in range(times):
                time.sleep(1.5)
                t_stop = time.monotonic()
                client.pause(0.3)
                t_cont = time.monotonic()
                first = client.wait_event("mode", timeout=10.0)
                done = client.wait_event("recovered", "paused", timeout=20.0)
                out["runs"].append({
                    "detected_after_sigcont_s": round(first["t"] - t_cont, 3),
                    "detect_to_ready_s": round(done["t"] - first["t"], 3),
                    "sigstop_to_ready_s": round(done["t"] - t_stop, 3),
                    "outcome": done["event"],
                })
            final = client.wait_event("done", timeout=30.0)
            out["stats"] = final["stats"]
        finally:
            client.close()
        out["server_reflexes"] = server.log_text().count("communication_constraints_violation: 20")
    runs = out["runs"]
    if runs:
        out["detect_to_ready_s"] = {
            "min": min(r["detect_to_ready_s"] for r in runs),
            "max": max(r["detect_to_ready_s"] for r in runs),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=200, help="random-walk ticks per strategy")
    ap.add_argument("--recoveries", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=["impedance", "cartesian", "cartesian@0.5"],
                    help="tracking[@dynamics_factor]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "franky_tracking.json"))
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)

    results: dict = {"strategies": [], "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    for i, spec in enumerate(args.strategies):
        tracking, _, factor = spec.partition("@")
        # A fresh server per strategy: one that ran into a singular pose refuses every motion.
        with FrankaSimServer() as server:
            if i == 0:
                idle_t0, idle_c0 = time.monotonic(), cpu_seconds(server.proc.pid)
                time.sleep(2.0)
                results["franka_sim_cpu_idle_pct"] = round(
                    100 * (cpu_seconds(server.proc.pid) - idle_c0) / (time.monotonic() - idle_t0), 1)
                results["franka_sim_fifo_threads"] = fifo_threads(server.proc.pid)
            t0, s0, c0 = time.monotonic(), cpu_seconds(server.proc.pid), cpu_seconds(os.getpid())
            r = bench_strategy(tracking, float(factor) if factor else None, args.ticks, args.seed)
            wall = time.monotonic() - t0
            r["franka_sim_cpu_pct"] = round(100 * (cpu_seconds(server.proc.pid) - s0) / wall, 1)
            r["client_cpu_pct"] = round(100 * (cpu_seconds(os.getpid()) - c0) / wall, 1)
        results["strategies"].append(r)
        print(
            f"{spec:14s} random walk lag {r['random_walk']['lag_mm']}  circle lag {r['circle']['lag_mm']} "
            f"radial {r['circle']['radial_error_mm']}  steady {r['steady_state']}  "
            f"send_target {r['send_target_ms']} read {r['read_ms']}  reflexes {r['reflexes']} "
            f"{r['errors']}  cpu sim {r['franka_sim_cpu_pct']}% client {r['client_cpu_pct']}%",
            flush=True,
        )
    print(f"franka-sim idle CPU {results['franka_sim_cpu_idle_pct']}%, "
          f"its SCHED_FIFO threads: {results['franka_sim_fifo_threads'] or 'none'}; "
          f"client SCHED_FIFO threads: {results['strategies'][-1]['fifo_threads'] if results['strategies'] else '-'}")
    if args.recoveries:
        rec = bench_recovery(args.recoveries)
        results["recovery"] = rec
        print(f"recovery (SIGSTOP 0.3 s, enforced comm constraints): {rec['runs']}", flush=True)
    best = min(results["strategies"], key=lambda r: r["random_walk"]["lag_mm"].get("mean", math.inf))
    results["best_random_walk_tracking"] = f"{best['tracking']}@{best['dynamics_factor']}"
    print(f"best random-walk tracking: {results['best_random_walk_tracking']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
