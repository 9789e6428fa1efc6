"""Does augmenting the goal classifier's training frames lower its false positives / negatives?

Two labelled sim stores, pixels (the sim config's two 64x64 views), written with ReplayWriter and
labelled with label events as the daemon's API does (tests/test_labels.py), read back with
learner.labelled.LabelledFrames as `learner run` reads them:
- each episode is a scripted forward demo (PushCube-v0, start jitter 5 cm / 45 deg) followed by
  frames with the cube put down by hand where the demo left the arm, half inside the goal zone
  and half just outside it (1-4 cm beyond its edge): near misses with the arm where it is at goal;
- labels from the true cube position: "goal" on every frame with the cube resting in the goal
  zone, "not_goal" on every frame with its centre outside but within NEAR_M of the zone's edge
  (during the push and the hand-placed ones); other frames are unlabelled (the online negatives).
The train store and the HELD-OUT store come from different seeds: no held-out frame is trained on.

For each augmentation kind (none / shift / v2, learner/clf_augment.py) and seed, a goal
classifier (ClassifierLearner, sim network sizes, both views) is trained from scratch for --steps
steps as LearningCore.classifier_step trains it: positives drawn from the labelled goal frames,
negatives from the unlabelled frames with `labelled_negative_share` of them replaced by labelled
not-goal frames. Then its FP rate (not-goal frames scored p > 0.5) and FN rate (goal frames scored
p <= 0.5) on the held-out labelled set (LabelledFrames.rates), and on the train set for contrast.

Writes bench/results/classifier-augment.json and prints a table.
Usage: nice -n 10 python bench/classifier_augment.py [--steps 120] [--seeds 3] [--episodes 16 --held-out 8] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from learner.buffers import FrameSet
from learner.classifier import ClassifierLearner
from learner.clf_augment import CLASSIFIER_AUGMENTS, V2Jitter
from learner.labelled import LabelledFrames
from learner.settings import Settings
from replay.labels import Label
from replay.store import ReplayReader, ReplayWriter, StoreMeta
from sim.gym_env import DemoFailed, PushCubeEnv, scripted_demo
from sim.model import CUBE_HALF
from sim.task import STATE_DIM, cube_pose_of_state, goal_zone
from spec.config import Config, load_config
from spec.step import ActionSpace, ObsSpec, policy_input

OUT = Path(__file__).parent / "results" / "classifier-augment.json"
NEAR_M = 0.04  # a near miss: the cube centre at most this far outside the goal zone's edge
PLACED = 20  # hand-placed frames per episode after the demo (half goal, half near miss)
DIRECTION = "forward"


# ------------------------------------------------------------------ the labelled stores
def store_meta(cfg: Config) -> StoreMeta:
    space = ActionSpace(cfg.action, cfg.workspace)
    return StoreMeta(robot="bench", rate_hz=cfg.control.rate_hz,
                     cameras=[c.to_dict() for c in ObsSpec.from_config(cfg, "pixels", STATE_DIM).cameras],
                     action_space=space.spec(), proprio_dim=space.proprio_dim, state_dim=STATE_DIM)


def outside_by(xy: np.ndarray) -> float:
    """How far the cube centre is outside the goal zone's square (0 inside), m."""
    z = goal_zone(DIRECTION)
    d = np.abs(np.asarray(xy[:2]) - np.asarray(z.center)) - z.half
    return float(np.linalg.norm(np.maximum(d, 0.0)))


def placed_xy(rng: np.random.Generator, goal: bool) -> np.ndarray:
    z = goal_zone(DIRECTION)
    c = np.asarray(z.center)
    if goal:  # inside, at least 5 mm from the edge (the success test is on the centre)
        return c + rng.uniform(-(z.half - 0.005), z.half - 0.005, 2)
    side = rng.integers(4)  # just beyond one of the four edges, anywhere along it
    out = z.half + rng.uniform(0.01, NEAR_M)
    along = rng.uniform(-z.half, z.half)
    return c + [np.array([out, along]), np.array([-out, along]), np.array([along, out]), np.array([along, -out])][side]


def step_of(env: PushCubeEnv, obs: dict[str, np.ndarray], t: float) -> dict[str, Any]:
    return obs | {"action": np.zeros(env.space.dim, np.float32), "timestamp": t, "policy_version": -1,
                  "intervention": False}


def frame_verdict(state: np.ndarray, cfg: Config) -> str | None:
    centre, _ = cube_pose_of_state(state, cfg.workspace)
    on_table = abs(centre[2] - CUBE_HALF) < 0.01
    if on_table and goal_zone(DIRECTION).contains(centre):
        return "goal"
    if on_table and outside_by(centre) <= NEAR_M:
        return "not_goal"
    return None


def write_store(path: Path, cfg: Config, episodes: int, seed: int) -> dict[str, int]:
    env = PushCubeEnv(cfg, obs_mode="pixels", max_episode_steps=None, start_jitter_m=0.05, start_jitter_yaw_deg=45)
    rng = np.random.default_rng(seed)
    counts = {"episodes": 0, "frames": 0, "goal": 0, "not_goal": 0, "failed_demos": 0}
    t = 0.0
    with ReplayWriter.open(path, store_meta(cfg), chunk_steps=64) as w:
        while counts["episodes"] < episodes:
            try:
                demo = scripted_demo(env, DIRECTION, rng)
            except DemoFailed:
                counts["failed_demos"] += 1
                continue
            observations = [tr.obs for tr in demo] + [demo[-1].next_obs]
            for goal in rng.permutation([True, False] * (PLACED // 2)):
                yaw = rng.uniform(-np.pi / 4, np.pi / 4)
                env.task.place_cube(placed_xy(rng, bool(goal)), yaw, arm_home=False)
                observations.append(env._observe())
            ep = w.begin_episode("practice", DIRECTION, {"bench": "classifier_augment"})
            verdicts = []
            for obs in observations:
                t += 0.1
                ep.append(step_of(env, obs, t))
                verdicts.append(frame_verdict(obs["obs/state"], cfg))
            info = ep.close(success=None)
            # One label event per run of equal verdicts, as an operator marks a range on the page.
            start = 0
            for i in range(1, len(verdicts) + 1):
                if i == len(verdicts) or verdicts[i] != verdicts[start]:
                    if verdicts[start] is not None:
                        w.append_event(Label(info.id, verdicts[start], start, i, who="bench").event())
                    start = i
            counts["episodes"] += 1
            counts["frames"] += len(observations)
            counts["goal"] += verdicts.count("goal")
            counts["not_goal"] += verdicts.count("not_goal")
    env.close()
    return counts


class LabelledStore:
    """A store's labelled frames (LabelledFrames, as the learner reads them) and its unlabelled
    frames (the stand-in for the online negatives)."""

    def __init__(self, path: Path, spec: ObsSpec, cfg: Config) -> None:
        reader = ReplayReader(path)
        main_shape = (*spec.image_size, spec.channels)
        self.labelled = LabelledFrames(spec, main_shape, np.dtype(np.uint8))
        self.labelled.update(reader)
        self.online = FrameSet(main_shape, np.dtype(np.uint8), "unlabelled")
        for e in reader.episodes():
            data = reader.read(e.id, keys=[*spec.keys(), "obs/state"])
            main, _ = policy_input(data, spec)
            unlabelled = [i for i, st in enumerate(data["obs/state"]) if frame_verdict(st, cfg) is None]
            self.online.add(main[unlabelled])


# ------------------------------------------------------------------ training and scoring
def train_and_score(kind: str, seed: int, train: LabelledStore, held: LabelledStore, spec: ObsSpec,
                    s: Settings, steps: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clf = ClassifierLearner("forward", spec, s.sizes, "log_p", s.clf_forward_cameras, s.clf_lr, "cpu", kind)
    n = s.clf_batch_size
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(steps):
        pos = train.labelled.goal.sample(n, rng)
        neg = train.labelled.negatives(train.online.sample(n, rng), s.labelled_negative_share, rng)
        m = clf.train_step(tensor(pos), tensor(neg))
    train_s = time.perf_counter() - t0
    h = held.labelled.rates(clf, torch.device("cpu"))
    tr = train.labelled.rates(clf, torch.device("cpu"))
    return {
        "kind": kind, "seed": seed,
        "held_out_fp_rate": h["labels/forward_fp_rate"], "held_out_fn_rate": h["labels/forward_fn_rate"],
        "train_fp_rate": tr["labels/forward_fp_rate"], "train_fn_rate": tr["labels/forward_fn_rate"],
        "final_loss": m["clf_forward/loss"], "step_s": train_s / steps,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in CLASSIFIER_AUGMENTS:
        rs = [r for r in runs if r["kind"] == kind]
        if not rs:
            continue
        out[kind] = {}
        for key in ("held_out_fp_rate", "held_out_fn_rate", "train_fp_rate", "train_fn_rate", "step_s"):
            v = [r[key] for r in rs]
            out[kind][key] = {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120, help="classifier training steps per run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=16, help="episodes of the train store")
    ap.add_argument("--held-out", type=int, default=8, help="episodes of the held-out store")
    ap.add_argument("--batch", type=int, default=32, help="positives and negatives per step, each")
    ap.add_argument("--kinds", default=",".join(CLASSIFIER_AUGMENTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    bad = [k for k in kinds if k not in CLASSIFIER_AUGMENTS]
    if bad:
        ap.error(f"--kinds: unknown {bad}; choose from {CLASSIFIER_AUGMENTS}")
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    base = load_config("sim", env={})
    # The packaged sim config: setting sim, pixels, the sim network preset, both 64x64 views.
    cfg = base.model_copy(update={"learner": base.learner.model_copy(update={"clf_batch_size": a.batch})})
    s = Settings.from_config(cfg, "pixels")
    spec = ObsSpec.from_config(cfg, "pixels", STATE_DIM)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        counts = {"train": write_store(Path(tmp) / "train.zarr", cfg, a.episodes, seed=1),
                  "held_out": write_store(Path(tmp) / "held.zarr", cfg, a.held_out, seed=2)}
        train = LabelledStore(Path(tmp) / "train.zarr", spec, cfg)
        held = LabelledStore(Path(tmp) / "held.zarr", spec, cfg)
        store_s = time.perf_counter() - t0
        print(f"stores written and read in {store_s:.0f} s: {counts}", flush=True)
        runs = []
        for kind in kinds:
            for seed in range(a.seeds):
                r = train_and_score(kind, seed, train, held, spec, s, a.steps)
                runs.append(r)
                print(f"  {kind:5s} seed {seed}: held-out FP {r['held_out_fp_rate']:.3f} FN {r['held_out_fn_rate']:.3f}"
                      f" | train FP {r['train_fp_rate']:.3f} FN {r['train_fn_rate']:.3f}"
                      f" | {1000 * r['step_s']:.0f} ms/step", flush=True)
    summ = summary(runs)
    print(f"\n{'augment':8s} {'held-out FP':>16s} {'held-out FN':>16s} {'train FP':>16s} {'train FN':>16s} {'ms/step':>8s}")
    for kind, v in summ.items():
        cell = lambda k: f"{v[k]['mean']:.3f} ± {v[k]['sd']:.3f}"  # noqa: E731, B023
        print(f"{kind:8s} {cell('held_out_fp_rate'):>16s} {cell('held_out_fn_rate'):>16s} {cell('train_fp_rate'):>16s}"
              f" {cell('train_fn_rate'):>16s} {1000 * v['step_s']['mean']:8.0f}")
    result = {
        "what": "goal classifier trained from scratch with each classifier augmentation; FP/FN rates on a held-out "
                "labelled sim store (pixels, two 64x64 views) and on the train store",
        "setup": {"steps": a.steps, "seeds": a.seeds, "batch_each": a.batch, "network": "sim preset",
                  "cameras": spec.camera_names, "image_size": list(spec.image_size), "near_miss_m": NEAR_M,
                  "placed_per_episode": PLACED, "labelled_negative_share": s.labelled_negative_share,
                  "v2_jitter": V2Jitter().__dict__, "threads": a.threads, "stores": counts},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__},
        "wall_s": time.perf_counter() - t_start, "store_s": store_s,
        "summary": summ, "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, default=list) + "\n")
    print(f"wrote {a.out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
