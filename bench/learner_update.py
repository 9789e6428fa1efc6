"""Learner and policy timings at robot sizes on this machine's CPU.

- one MEDAL++ agent update (UTD 1 critic step with N=5 REDQ heads, classifier rewards on s′,
  one actor step with the BC term; λ mid-schedule so both actor terms are computed), batch 256
  = 192 online + 64 demo rows, two 100×100 views;
- a DrQ-v2-style update of the same size in the same run (same encoder, one critic trunk, two
  Q heads, deterministic actor with fixed noise), as the reference MEDALPP.md/DESIGN.md compare to;
- the same MEDAL++ agent with N = 2 heads (DrQ-v2's Q count), to separate the cost of the
  spec's larger ensemble (five Linear(repr, 256) trunks instead of one) from the implementation's;
- sampling of a 256-row batch from the RAM buffer, one classifier step;
- PolicyRunner.act() p50/p99 (the daemon's per-tick inference, one thread, in its own process).

malloc keeps freed memory as in `learner run` (learner/memory.py), for both updates alike.

Writes bench/results/learner_update.json.   Usage: python bench/learner_update.py [--iters 4]
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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from stopwatch import timed
from torch import nn

from learner.agent import Agent, TorchBatch
from learner.augment import random_shift
from learner.buffers import Batch, Layout, TransitionBuffer, sample_mixed
from learner.classifier import ClassifierLearner
from learner.memory import keep_freed_memory
from learner.optim import adam
from learner.settings import AgentSettings
from policies.checkpoint import PolicyCheckpoint
from policies.networks import PRESETS, NetworkSizes, PixelEncoder
from policies.runner import PolicyRunner
from spec.step import CameraSpec, ObsSpec

SIZE, BATCH, DEMO_ROWS, ADIM, PDIM = 100, 256, 64, 4, 4
SPEC = ObsSpec("pixels", (CameraSpec("wrist", SIZE, SIZE), CameraSpec("front", SIZE, SIZE)), PDIM)
SIZES = PRESETS["robot"]


class DrQv2:
    """The DrQ-v2 update (Yarats et al. 2021) at the same sizes: the reference update cost."""

    def __init__(self, repr_dim: int, feature: int, hidden: int) -> None:
        # Same conv layout and optimiser kernel as the MEDAL++ agent, so only the algorithm differs.
        self.encoder = PixelEncoder(6, (SIZE, SIZE), 32).to(memory_format=torch.channels_last)
        self.actor_trunk = nn.Sequential(nn.Linear(repr_dim, feature), nn.LayerNorm(feature), nn.Tanh())
        self.actor = nn.Sequential(nn.Linear(feature + PDIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                   nn.ReLU(), nn.Linear(hidden, ADIM))
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature), nn.LayerNorm(feature), nn.Tanh())
        self.target_trunk = nn.Sequential(nn.Linear(repr_dim, feature), nn.LayerNorm(feature), nn.Tanh())

        def q() -> nn.Sequential:
            return nn.Sequential(nn.Linear(feature + PDIM + ADIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 1))

        self.q1, self.q2, self.tq1, self.tq2 = q(), q(), q(), q()
        critic = [*self.trunk.parameters(), *self.q1.parameters(), *self.q2.parameters()]
        self.critic_params = critic
        self.target_params = [*self.target_trunk.parameters(), *self.tq1.parameters(), *self.tq2.parameters()]
        with torch.no_grad():
            for tp, p in zip(self.target_params, critic, strict=True):
                tp.copy_(p)
        self.enc_opt = adam(list(self.encoder.parameters()), 3e-4)
        self.critic_opt = adam(critic, 3e-4)
        self.actor_opt = adam([*self.actor_trunk.parameters(), *self.actor.parameters()], 3e-4)

    def act(self, h: torch.Tensor, p: torch.Tensor, std: float = 0.2) -> torch.Tensor:
        mu = torch.tanh(self.actor(torch.cat([self.actor_trunk(h), p], -1)))
        return (mu + (torch.randn_like(mu) * std).clamp(-0.3, 0.3)).clamp(-1, 1)

    def update(self, b: TorchBatch, reward: torch.Tensor) -> None:
        h = self.encoder(random_shift(b.obs))
        with torch.no_grad():
            nh = self.encoder(random_shift(b.next_obs))
            a2 = self.act(nh, b.next_proprio)
            t = self.target_trunk(nh)
            x = torch.cat([t, b.next_proprio, a2], -1)
            y = reward + 0.99 * b.not_done * torch.min(self.tq1(x), self.tq2(x)).squeeze(-1)
        x = torch.cat([self.trunk(h), b.proprio, b.action], -1)
        loss = F.mse_loss(self.q1(x).squeeze(-1), y) + F.mse_loss(self.q2(x).squeeze(-1), y)
        self.enc_opt.zero_grad()
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        self.enc_opt.step()
        with torch.no_grad():
            for tp, p in zip(self.target_params, self.critic_params, strict=True):
                tp.lerp_(p, 0.005)
        hd = h.detach()
        a = self.act(hd, b.proprio)
        x = torch.cat([self.trunk(hd), b.proprio, a], -1)
        actor_loss = -torch.min(self.q1(x), self.q2(x)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()


def time_act(checkpoint: Path, iters: int) -> list[float]:
    """PolicyRunner.act() latencies in ms for one robot-size observation."""
    rng = np.random.default_rng(0)
    runner = PolicyRunner(PolicyCheckpoint.from_bytes(checkpoint.read_bytes()), num_threads=1)
    obs = {"obs/wrist": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
           "obs/front": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
           "obs/proprio": np.zeros(PDIM, np.float32)}
    return [t * 1e3 for t in timed(lambda: runner.act(obs), iters, warmup=10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--act-iters", type=int, default=300)
    ap.add_argument("--act-only", type=Path, help=argparse.SUPPRESS)  # the child that times act()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "learner_update.json")
    args = ap.parse_args()
    if args.act_only:
        print(json.dumps(time_act(args.act_only, args.act_iters)))
        return
    malloc_kept = keep_freed_memory()  # as `learner run` does (learner/memory.py); both updates gain
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()

    layout = Layout((SIZE, SIZE, 6), np.dtype(np.uint8), PDIM, ADIM)  # channels last, as the learner stores frames
    online, demo = TransitionBuffer(2000, layout, "online"), TransitionBuffer(500, layout, "demo")
    for seg in range(10):  # 200-step phases of random frames
        n = 200
        online.append(seg, 0, rng.integers(0, 256, (n, SIZE, SIZE, 6), dtype=np.uint8),
                      rng.uniform(-1, 1, (n, PDIM)).astype(np.float32), rng.uniform(-1, 1, (n, ADIM)).astype(np.float32))
    for seg in range(5):
        n = 100
        demo.append(seg, 0, rng.integers(0, 256, (n, SIZE, SIZE, 6), dtype=np.uint8),
                    rng.uniform(-1, 1, (n, PDIM)).astype(np.float32), rng.uniform(-1, 1, (n, ADIM)).astype(np.float32),
                    terminal=True)

    batch, bc_batch = Batch.empty(BATCH, layout), Batch.empty(DEMO_ROWS, layout)  # reused, as in the trainer

    def sample() -> TorchBatch:
        return TorchBatch.from_numpy(sample_mixed(online, demo, BATCH, DEMO_ROWS, rng, batch)[0], torch.device("cpu"))

    def sample_demo() -> TorchBatch:
        return TorchBatch.from_numpy(demo.sample(DEMO_ROWS, rng, bc_batch), torch.device("cpu"))

    sample_s = timed(sample, 20)
    settings = AgentSettings("forward", utd=1, bc=(1.0, 0.1, 2500, 50_000), learn_alpha=False, alpha_init=0.0,
                             target_entropy_per_dim=0.5, lr=3e-4, gamma=0.99, tau=0.005)
    agent = Agent(settings, SPEC, {"dim": ADIM}, SIZES)
    agent.env_step = 20_000  # mid-schedule: lambda ~0.67, both the RL and BC actor terms are computed
    clf = ClassifierLearner("forward", SPEC, SIZES, "log_p", ["wrist"])
    print(f"torch {torch.__version__}, {threads} threads, malloc keeps freed memory: {malloc_kept}; robot sizes {SIZES}, batch {BATCH}, 2x{SIZE}x{SIZE}")

    drq = DrQv2(agent.encoder.repr_dim, SIZES.feature_dim, SIZES.hidden_dim)

    def medal_update() -> None:
        agent.update(sample, clf.reward, sample_demo)

    def drq_update() -> None:
        b = sample()
        drq.update(b, torch.zeros(len(b.action)))

    # The same agent code with DrQ-v2's Q count (N = 2, still one trunk per head as MEDALPP.md
    # specifies): separates the cost of the spec's larger ensemble from the implementation's.
    agent2 = Agent(settings, SPEC, {"dim": ADIM}, NetworkSizes(SIZES.hidden_dim, SIZES.feature_dim, 2))
    agent2.env_step = agent.env_step

    def medal2_update() -> None:
        agent2.update(sample, clf.reward, sample_demo)

    # Interleaved, so a neighbour's load on this shared machine hits both alike.
    medal, drq_s, medal2 = [], [], []
    medal_update()
    drq_update()
    medal2_update()
    for _ in range(args.iters):
        medal += timed(medal_update, 1, warmup=0)
        drq_s += timed(drq_update, 1, warmup=0)
        medal2 += timed(medal2_update, 1, warmup=0)
    ratios = [m / d for m, d in zip(medal, drq_s, strict=True)]
    ratios2 = [m / d for m, d in zip(medal2, drq_s, strict=True)]
    print(f"MEDAL++ update: median {statistics.median(medal):.2f} s  ({[round(x, 2) for x in medal]})")
    print(f"DrQ-v2 update:  median {statistics.median(drq_s):.2f} s  ({[round(x, 2) for x in drq_s]})")
    print(f"MEDAL++ / DrQ-v2: median of paired ratios {statistics.median(ratios):.2f}")
    print(f"MEDAL++ at N=2: median {statistics.median(medal2):.2f} s, / DrQ-v2 {statistics.median(ratios2):.2f}")

    pos = torch.from_numpy(demo.sample_frames(256, rng))

    def clf_step() -> None:
        neg = torch.from_numpy(online.sample_frames(256, rng))
        clf.evaluate_fresh(neg)
        clf.train_step(pos, neg)

    clf_s = timed(clf_step, max(2, args.iters // 2))
    print(f"classifier step: median {statistics.median(clf_s):.2f} s")
    # One robot env step of MEDAL++ (MEDALPP.md): the acting agent's update (UTD 1 critic step +
    # actor step, with its batch sampled) plus its share of classifier steps (C_f every 1,000
    # env steps, C_b every 500).
    full_step = (statistics.median(medal) + statistics.median(sample_s)
                 + statistics.median(clf_s) * (1 / 1000 + 1 / 500))
    print(f"full MEDAL++ env step (robot schedule): {full_step:.2f} s")

    ckpt = PolicyCheckpoint.from_policy(agent.policy, "forward", 1, SPEC, {"dim": ADIM}, SIZES)
    t0 = time.perf_counter()
    data = ckpt.to_bytes()
    export_s = time.perf_counter() - t0
    # act() is the daemon's, so it is timed in a fresh process with the daemon's default malloc.
    with tempfile.NamedTemporaryFile(suffix=".ckpt") as f:
        f.write(data)
        f.flush()
        out = subprocess.run([sys.executable, __file__, "--act-only", f.name, "--act-iters", str(args.act_iters)],
                             capture_output=True, text=True, check=True)
    act = np.array(json.loads(out.stdout.splitlines()[-1]))
    print(f"act(): p50 {np.percentile(act, 50):.2f} ms, p99 {np.percentile(act, 99):.2f} ms (1 thread, own process)")

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": threads, "device": "cpu"},
        "sizes": {**SIZES.to_dict(), "batch": BATCH, "demo_rows": DEMO_ROWS, "views": [2, SIZE, SIZE],
                  "repr_dim": agent.encoder.repr_dim},
        "medalpp_update_s": {"median": statistics.median(medal), "all": medal},
        "drqv2_update_s": {"median": statistics.median(drq_s), "all": drq_s},
        "medalpp_over_drqv2": {"ratio_of_medians": statistics.median(medal) / statistics.median(drq_s),
                               "median_paired_ratio": statistics.median(ratios)},
        "medalpp_n2_update_s": {"median": statistics.median(medal2), "all": medal2,
                                "median_paired_ratio_over_drqv2": statistics.median(ratios2)},
        "load_average_1min": os.getloadavg()[0],
        "malloc_keeps_freed_memory": malloc_kept,
        "batch_sample_s": {"median": statistics.median(sample_s)},
        "classifier_step_s": {"median": statistics.median(clf_s)},
        "full_env_step_s": full_step,
        "checkpoint": {"bytes": len(data), "export_s": export_s},
        "act_ms": {"p50": float(np.percentile(act, 50)), "p99": float(np.percentile(act, 99)),
                   "iters": args.act_iters},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
