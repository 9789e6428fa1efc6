"""State-mode agent step time: the sim preset (N=10 heads, 4×256 critic) against the lean "state"
preset, on one thread, batch rows as in sim (256 = 224 online + 32 demo, a separate 32-row BC
batch), UTD 2 critic updates + 1 actor update with both actor terms (λ mid-schedule) and, for the
learned-α agent, the α step. The two are timed in alternating rounds so load from other processes
on this shared machine hits both alike; medians are reported.

Writes bench/results/agent_step.json.   Usage: python bench/agent_step.py [--rounds 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from learner.agent import Agent, TorchBatch  # noqa: E402
from learner.settings import AgentSettings  # noqa: E402
from policies.networks import PRESETS, NetworkSizes  # noqa: E402
from spec.step import ObsSpec  # noqa: E402

SPEC = ObsSpec("state", (), proprio_dim=4, state_dim=9)
ADIM = 4


def batch(n: int, g: torch.Generator) -> TorchBatch:
    def r(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) * 2 - 1

    return TorchBatch(r(n, 9), r(n, 4), r(n, ADIM), torch.ones(n), r(n, 9), r(n, 4))


def make(sizes: NetworkSizes, learn_alpha: bool) -> Agent:
    s = AgentSettings("backward" if learn_alpha else "forward", 2, (0.5, 0.5, 0, 0), learn_alpha,
                      1.0 if learn_alpha else 0.0, -0.5, 3e-4, 0.99, 0.005)
    return Agent(s, SPEC, {"dim": ADIM}, sizes)


def time_steps(agent: Agent, steps: int, batch_size: int, g: torch.Generator) -> float:
    b, d = batch(batch_size, g), batch(32, g)
    reward = lambda x: -torch.rand(len(x), generator=g)  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(steps):
        agent.update(lambda: b, reward, lambda: d)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "agent_step.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    cases = {
        "sim preset (N=10, 4x256, batch 256)": (PRESETS["sim"], 256),
        "state preset (N=2, 2x256, batch 256)": (PRESETS["state"], 256),
        "N=5, 2x256, batch 256 (not chosen)": (NetworkSizes(256, 50, 5, critic_layers=2), 256),
        "state preset, batch 128 (not chosen)": (PRESETS["state"], 128),
    }
    times: dict[str, dict[str, list[float]]] = {k: {"fixed_alpha": [], "learned_alpha": []} for k in cases}
    agents = {(k, la): make(sz, la) for k, (sz, _) in cases.items() for la in (False, True)}
    for (k, _la), a in agents.items():  # warm-up (allocator, oneDNN kernels)
        time_steps(a, 3, cases[k][1], g)
    for r in range(args.rounds):
        for (k, la), a in agents.items():
            times[k]["learned_alpha" if la else "fixed_alpha"].append(time_steps(a, args.steps, cases[k][1], g))
        print(f"round {r + 1}/{args.rounds}", flush=True)
    out = {
        "what": "one state-mode agent step (UTD 2 critic updates + 1 actor update), seconds, median of rounds",
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1},
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "cases": {},
    }
    for k, (sz, bs) in cases.items():
        med = {m: statistics.median(v) for m, v in times[k].items()}
        out["cases"][k] = {"sizes": sz.to_dict(), "batch": bs, "median_s": med, "all_s": times[k]}
        print(f"{k:42s} fixed α {med['fixed_alpha'] * 1e3:6.1f} ms   learned α {med['learned_alpha'] * 1e3:6.1f} ms")
    base = out["cases"]["sim preset (N=10, 4x256, batch 256)"]["median_s"]["fixed_alpha"]
    new = out["cases"]["state preset (N=2, 2x256, batch 256)"]["median_s"]["fixed_alpha"]
    out["speedup_state_vs_sim_preset"] = base / new
    print(f"speed-up of the state preset over the sim preset: {base / new:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
