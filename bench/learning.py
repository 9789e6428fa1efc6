"""Does it learn? MEDAL++ against its baselines on the sim push task, with EARL's metrics.

Each (method, seed) runs `learner train-sim` (the synchronous harness, learner/harness.py) in its
own process with one torch thread; at most `--jobs` run at once (one per core). Methods:

  medalpp_pixels  (a) MEDAL++ from the sim cameras' pixels (as far as the CPU allows)
  medalpp         (b) MEDAL++ from the state vector
  bc              (c) behaviour cloning on the same demos (the actor with λ = 1, no RL)
  naive           (d) naive reset-free RL: the forward agent alone, goal-classifier reward, never reset
  fbrl            (e) forward-backward RL: backward agent rewarded by a classifier of the initial
                      state (positives = first frames of the forward demos only)
  episodic        (f) episodic RL, a reset (an intervention) every 200-step episode: the oracle

Metrics per evaluation point (every `--eval-every` env steps): deployed success of the forward
policy (mean action, from the start distribution, success at any step of 200, on a separate env);
the forward practice phases' success from the states the backward policy left; continuing average
reward (the forward task's true success per practice step); interventions; wall time; env steps/s.
Start jitter: the wide setting (±5 cm, ±45°).

  --quick : methods medalpp, bc, naive; one seed; a shortened budget (see QUICK) so it finishes
            in < 60 min on this 2-core machine.
  default : medalpp, bc, naive, fbrl, episodic (+ medalpp_pixels with --pixels), 3 seeds, MEDALPP.md's
            sim schedule (10k seed steps, forward λ 1 → 0.1 over 10k → 50k env steps), 60k steps.

Writes bench/results/learning[-quick].json (config, seeds, per-seed curves, summary) and a PNG plot
beside it; each run's own JSON (rewritten at every evaluation) and log go to bench/results/learning-runs/.

    python bench/learning.py --quick [--jobs 2]
    python bench/learning.py [--seeds 0 1 2] [--methods medalpp bc ...] [--pixels]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LETTERS = {"medalpp_pixels": "a", "medalpp": "b", "bc": "c", "naive": "d", "fbrl": "e", "episodic": "f"}

# The quick budget (chosen before any run, not tuned on results): the MEDALPP.md sim values except
# a shorter run: 10k uniform seed steps, then 30k RL steps with forward λ 1 → 0.1 over 10k → 30k
# (compressed from 10k → 50k) so the last 10k steps run at the final λ = 0.1.
QUICK = {"steps": 40_000, "bc_forward": "1,0.1,10000,30000", "eval_every": 2_500, "eval_episodes": 10,
         "bc_steps": 5_000, "seeds": [0], "methods": ["medalpp", "naive", "bc"]}
FULL = {"steps": 60_000, "bc_forward": None, "eval_every": 5_000, "eval_episodes": 20,
        "bc_steps": 10_000, "seeds": [0, 1, 2], "methods": ["medalpp", "naive", "fbrl", "episodic", "bc"]}


LAST_POINTS = 3  # the summary's steadier figure: mean deployed success over the last 3 evaluations

# Tuning options passed through to `learner train-sim` when set (None / False: the harness default).
TUNING = {"clf_forward_every": "--clf-forward-every", "critic_layer_norm": "--critic-layer-norm",
          "bc_backward": "--bc-backward", "help_after_steps": "--help-after-steps",
          "forward_reward": "--forward-reward", "utd": "--utd", "demo_rows": "--demo-rows"}


def command(method: str, seed: int, plan: dict[str, Any], out: Path, demos: int) -> list[str]:
    mode = "pixels" if method == "medalpp_pixels" else "state"
    harness_method = "medalpp" if method == "medalpp_pixels" else method
    steps = plan["bc_steps"] if method == "bc" else plan["steps"]
    eval_every = max(1, plan["bc_steps"] // 10) if method == "bc" else plan["eval_every"]
    cmd = [sys.executable, "-m", "learner.cli", "train-sim", "--method", harness_method, "--mode", mode,
           "--steps", str(steps), "--seed", str(seed), "--demos", str(demos), "--eval-every", str(eval_every),
           "--eval-episodes", str(plan["eval_episodes"]), "--threads", "1", "--out", str(out)]
    if plan["bc_forward"]:
        cmd += ["--bc-forward", plan["bc_forward"]]
    if plan.get("seed_steps") is not None:
        cmd += ["--seed-steps", str(plan["seed_steps"])]
    for key, flag in TUNING.items():
        value = plan.get(key)
        if method == "bc" or value in (None, False):  # bc trains the actor alone: none of these apply
            continue
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def load_done(run_dir: Path, runs: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished (not partial) run results already in run_dir."""
    done = {}
    for m, s in runs:
        f = run_dir / f"{m}-seed{s}.json"
        if f.is_file():
            r = json.loads(f.read_text())
            if not r.get("partial"):
                done[(m, s)] = r
    return done


def run_all(runs: list[tuple[str, int]], plan: dict[str, Any], jobs: int, demos: int, run_dir: Path) -> dict:
    """Run every (method, seed) as its own process, `jobs` at a time, longest first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
                        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cost = {"medalpp_pixels": 3, "medalpp": 2, "fbrl": 2, "naive": 2, "episodic": 2, "bc": 0}
    pending = sorted(runs, key=lambda r: -cost[r[0]])
    active: dict[tuple[str, int], tuple[subprocess.Popen, float, Any]] = {}
    finished: dict[tuple[str, int], dict[str, Any]] = {}
    while pending or active:
        while pending and len(active) < jobs:
            key = pending.pop(0)
            out = run_dir / f"{key[0]}-seed{key[1]}.json"
            logf = open(run_dir / f"{key[0]}-seed{key[1]}.log", "w")  # noqa: SIM115 (closed when the run ends)
            cmd = command(key[0], key[1], plan, out, demos)
            print(f"[{time.strftime('%H:%M:%S')}] start {key[0]} seed {key[1]}: {' '.join(cmd[2:])}", flush=True)
            active[key] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT),
                           time.time(), logf)
        time.sleep(2.0)
        for key, (proc, t0, logf) in list(active.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del active[key]
            out = run_dir / f"{key[0]}-seed{key[1]}.json"
            result = json.loads(out.read_text()) if out.is_file() else {"curve": []}
            result["returncode"], result["process_wall_s"] = proc.returncode, time.time() - t0
            finished[key] = result
            final = result["curve"][-1]["deployed_success"] if result["curve"] else math.nan
            print(f"[{time.strftime('%H:%M:%S')}] done  {key[0]} seed {key[1]} rc {proc.returncode} "
                  f"in {time.time() - t0:.0f} s: final deployed success {final:.2f}", flush=True)
    return finished


def summarise(results: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in sorted({m for m, _ in results}):
        finals, lasts, bests, after_bwd, cont, interventions, sps, partial = [], [], [], [], [], [], [], []
        for (m, _seed), r in results.items():
            if m != method or not r["curve"]:
                continue
            c = r["curve"]
            if r.get("partial"):  # cut short (e.g. the session ended): listed, kept out of the means
                partial.append({"seed": _seed, "env_steps": c[-1]["env_steps"], "updates": c[-1].get("updates"),
                                "deployed_success": [p["deployed_success"] for p in c]})
                continue
            finals.append(c[-1]["deployed_success"])
            # One point is 10 episodes of one policy snapshot, and snapshots swing by +-0.3 from one
            # point to the next: the last LAST_POINTS points together are the steadier figure.
            lasts.append(sum(p["deployed_success"] for p in c[-LAST_POINTS:]) / len(c[-LAST_POINTS:]))
            bests.append(max(p["deployed_success"] for p in c))
            interventions.append(c[-1].get("interventions", 0))
            vals = [p.get("forward_success_after_backward") for p in c[-2:]]
            after_bwd += [v for v in vals if v is not None and not math.isnan(v)]
            vals = [p.get("continuing_reward") for p in c[1:]]
            cont += [v for v in vals if v is not None and not math.isnan(v)]
            vals = [p.get("env_steps_per_s") for p in c[1:]]
            sps += [v for v in vals if v]

        def mean(v: list[float]) -> float | None:
            return sum(v) / len(v) if v else None

        out[method] = {
            "seeds": len(finals),
            "final_deployed_success_mean": mean(finals),
            "final_deployed_success_per_seed": finals,
            f"last{LAST_POINTS}_deployed_success_mean": mean(lasts),
            f"last{LAST_POINTS}_deployed_success_per_seed": lasts,
            "best_deployed_success_mean": mean(bests),
            "forward_success_after_backward_last_windows": mean(after_bwd),
            "continuing_reward_mean": mean(cont),
            "interventions_mean": mean(interventions),
            "env_steps_per_s_mean": mean(sps),
            "partial_runs": partial,
        }
    return out


def plot(results: dict[tuple[str, int], dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"medalpp": "C0", "medalpp_pixels": "C5", "bc": "k", "naive": "C3", "fbrl": "C2", "episodic": "C4"}
    for (m, seed), r in sorted(results.items()):
        c = r["curve"]
        if not c:
            continue
        label = f"({LETTERS[m]}) {m} s{seed}"
        if m == "bc":  # no env steps: its final deployed success as a level
            for ax in axes[:1]:
                ax.axhline(c[-1]["deployed_success"], color="k", ls="--", lw=1, label=f"{label} (final, {c[-1]['updates']} steps)")
            continue
        x = [p["env_steps"] for p in c]
        axes[0].plot(x, [p["deployed_success"] for p in c], color=colours[m], marker=".", label=label)
        y = [p.get("forward_success_after_backward", math.nan) for p in c]
        if any(v == v for v in y):
            axes[1].plot(x, y, color=colours[m], marker=".", label=label)
        axes[2].plot(x, [p.get("continuing_reward", math.nan) for p in c], color=colours[m], marker=".", label=label)
    axes[0].set(title="deployed success (forward, mean action, 200 steps)", xlabel="env steps", ylim=(-0.02, 1.02))
    axes[1].set(title="practice: forward success from where backward left", xlabel="env steps", ylim=(-0.02, 1.02))
    axes[2].set(title="continuing average reward (forward success/step)", xlabel="env steps")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablations(doc: dict[str, Any], names: list[str], path: Path) -> None:
    """Deployed success and backward practice success of the named runs of learning-ablations.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unknown = [n for n in names if n not in doc["runs"]]
    if unknown:
        raise SystemExit(f"--plot-ablations: no run {unknown} (have {sorted(doc['runs'])})")
    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    for i, name in enumerate(names):
        c = doc["runs"][name]["curve"]
        x = [p["env_steps"] for p in c]
        ls = "-" if doc["runs"][name]["config"]["method"] == "medalpp" else "--"
        axes[0].plot(x, [p["deployed_success"] for p in c], ls, color=f"C{i}", marker=".", label=name)
        axes[1].plot(x, [p.get("practice_backward_success", math.nan) for p in c], ls, color=f"C{i}", marker=".",
                     label=name)
    axes[0].set(title="deployed success (forward, mean action, 200 steps; 10 episodes a point)",
                xlabel="env steps", ylim=(-0.02, 1.02))
    axes[1].set(title="practice: backward phases that returned the cube to the start zone",
                xlabel="env steps", ylim=(-0.02, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("ablations, seed 0 (solid: MEDAL++, dashed: naive / episodic)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", nargs="+", choices=sorted(LETTERS))
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--steps", type=int, help="env steps per RL run")
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--eval-episodes", type=int)
    ap.add_argument("--bc-steps", type=int, help="gradient steps of the bc method")
    ap.add_argument("--seed-steps", type=int, help="uniform-random steps first (default 10,000)")
    ap.add_argument("--bc-forward", help="forward λ schedule 'v0,v1,step0,step1'")
    ap.add_argument("--clf-forward-every", type=int, help="goal classifier: one step every N env steps")
    ap.add_argument("--critic-layer-norm", action="store_true", help="LayerNorm in the Q heads")
    ap.add_argument("--bc-backward", help="backward λ schedule 'v0,v1,step0,step1' (default off)")
    ap.add_argument("--help-after-steps", type=int, help="the daemon's help rule (default 0: off)")
    ap.add_argument("--utd", type=int, help="critic updates per env step (default 2)")
    ap.add_argument("--demo-rows", type=int, help="demo rows per agent batch of 256 (default 32)")
    ap.add_argument("--forward-reward", choices=("classifier", "task"),
                    help="forward agent's reward: classifier (default) | task (the sim's true success, a diagnostic)")
    ap.add_argument("--pixels", action="store_true", help="add medalpp_pixels (a)")
    ap.add_argument("--demos", type=int, default=10, help="scripted demos per direction")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (one per core at most)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--replot", action="store_true", help="only rebuild summary and plot from the run JSONs")
    ap.add_argument("--run-dir", type=Path, help="per-run JSONs and logs (default: <out>-runs beside the output)")
    ap.add_argument("--skip-done", action="store_true", help="reuse finished runs found in the run dir")
    ap.add_argument("--plot-ablations", nargs="+", metavar="RUN",
                    help="only plot these runs of bench/results/learning-ablations.json to learning-ablations.png")
    args = ap.parse_args()
    if args.plot_ablations:
        src = RESULTS / "learning-ablations.json"
        plot_ablations(json.loads(src.read_text()), args.plot_ablations, src.with_suffix(".png"))
        print(f"wrote {src.with_suffix('.png')}")
        return
    plan = dict(QUICK if args.quick else FULL)
    if args.methods:
        plan["methods"] = list(args.methods)
    if args.pixels and "medalpp_pixels" not in plan["methods"]:
        plan["methods"].append("medalpp_pixels")
    if args.seeds:
        plan["seeds"] = args.seeds
    for key in ("steps", "eval_every", "eval_episodes", "bc_steps", "seed_steps", "bc_forward", *TUNING):
        if getattr(args, key) not in (None, False):
            plan[key] = getattr(args, key)
    name = "learning-quick" if args.quick else "learning"
    out = args.out or RESULTS / f"{name}.json"
    run_dir = args.run_dir or out.parent / f"{out.stem}-runs"
    runs = [(m, s) for s in plan["seeds"] for m in plan["methods"]]  # seed-major: every method's seed 0 first
    t0 = time.time()
    if args.replot:
        results = {}
        for m, s in runs:
            f = run_dir / f"{m}-seed{s}.json"
            if f.is_file():
                results[(m, s)] = json.loads(f.read_text())
    else:
        done = load_done(run_dir, runs) if args.skip_done else {}
        todo = [r for r in runs if r not in done]
        results = done | run_all(todo, plan, args.jobs, args.demos, run_dir)
    summary = summarise(results)
    doc = {
        "what": "MEDAL++ vs baselines on PushCube-v0 (sim), EARL metrics; see bench/learning.py",
        "plan": plan,
        "demos_per_direction": args.demos,
        "start_jitter": {"m": 0.05, "yaw_deg": 45.0},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jobs": args.jobs},
        "wall_s": time.time() - t0,
        "summary": summary,
        "runs": {f"{m}/seed{s}": r for (m, s), r in sorted(results.items())},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    png = out.with_suffix(".png")
    plot(results, png, f"{name}: {', '.join(plan['methods'])}; seeds {plan['seeds']}; {args.demos} demos/direction; "
                       "start jitter ±5 cm, ±45°")
    for m, s in summary.items():
        print(f"{m:15s} final deployed success {s['final_deployed_success_mean']}  per seed "
              f"{s['final_deployed_success_per_seed']}  last {LAST_POINTS} points "
              f"{s[f'last{LAST_POINTS}_deployed_success_mean']}  interventions {s['interventions_mean']}  "
              f"fwd-after-bwd {s['forward_success_after_backward_last_windows']}  "
              f"steps/s {s['env_steps_per_s_mean']}")
    print(f"wrote {out} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
