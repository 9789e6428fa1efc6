"""The synchronous sim training harness: MEDAL++ (and its baselines) on PushCube-v0, as fast as
the updates allow (DESIGN.md "Training harness and evaluation").

The same learning core as `learner run` (learner/core.py: agents, classifiers, buffers, demo and
seed routing, the credit schedule): collected steps are handed to it as the store would deliver
them (one `Chunk` per step, demos as closed, successful demo episodes), and after every env step
the owed work is done at once, so the per-step schedule runs exactly: UTD critic updates + one
actor update for the agent in control, C_f every 1,000 and C_b every 100 env steps, nothing during
the seed steps (uniform random actions, data to both agents' buffers).

Methods (`HarnessConfig.method`):
- "medalpp": forward + backward agents, reset-free, alternating every `phase_steps`;
- "fbrl": the same, but the backward classifier's positives are only the first frames of the
  forward demos (rewarded for returning to the initial state distribution);
- "naive": the forward agent alone, reset-free, goal-classifier reward;
- "episodic": the forward agent alone with a reset (an intervention) every `phase_steps` (oracle);
- "bc": the forward actor trained by behaviour cloning only (λ = 1, no critic), on the same demos.

Reset-free methods get an intervention (a scene reset, counted) only at a switch to forward when
the cube has left the reachable workspace; the arm alone returns home every `home_every` env steps
at a phase boundary (not counted). Evaluation (EARL): every `eval_every` env steps, the forward
policy's mean action for `eval_episodes` episodes of `eval_horizon` steps from the start
distribution on a separate env; success = the task solved at any step. Also reported per window:
the practice forward phases' success from the states the backward policy left, the continuing
average reward (the forward task's true success per step, over all practice steps), interventions,
wall time and env steps/s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from learner.classifier import REWARD_KINDS
from learner.core import LearningCore
from learner.routing import other
from learner.settings import Settings
from learner.tail import Chunk
from policies.networks import PRESETS
from replay.schema import EpisodeInfo
from sim.gym_env import PushCubeEnv, scripted_demo
from sim.task import STATE_DIM, goal_zone, start_zone, success_of_state
from spec.config import Config, load_config
from spec.step import ObsSpec, policy_input

log = logging.getLogger(__name__)
METHODS = ("medalpp", "fbrl", "naive", "episodic", "bc")
TWO_AGENTS = ("medalpp", "fbrl")
BACKWARD_POSITIVES = ("all_forward", "pre_goal")
FORWARD_REWARDS = ("classifier", "task")


@dataclass
class HarnessConfig:
    method: str = "medalpp"
    mode: str = "state"  # "state" | "pixels"
    env_steps: int = 50_000  # practice env steps (bc: gradient steps)
    seed: int = 0
    demos: int = 10  # scripted demos per direction
    eval_every: int = 5_000
    eval_episodes: int = 10
    eval_horizon: int = 200
    phase_steps: int = 200
    home_every: int = 1_000  # arm-only return home, env steps (0 = never)
    start_jitter_m: float = 0.05
    start_jitter_yaw_deg: float = 45.0
    preset: str | None = None  # network sizes; None: "state" in state mode, "sim" with pixels
    seed_steps: int | None = None  # None: MEDALPP.md's sim value (10,000)
    initial_positives: int = 10  # fbrl: first frames of each forward demo (the cube has not moved yet)
    bc_forward: tuple[float, float, int, int] | None = None  # None: MEDALPP.md's sim schedule (1 -> 0.1, 10k -> 50k)
    bc_backward: tuple[float, float, int, int] | None = None  # None: off, as MEDALPP.md's sim setting (ablation)
    backward_positives: str = "all_forward"  # "all_forward" (MEDALPP.md sim) | "pre_goal" (ablation)
    backward_reward: str | None = None  # None: MEDALPP.md's sim reward (neg_log_1mp); "log_p" bounds it <= 0 (ablation)
    backward_entropy: str = "learned"  # "learned" (MEDALPP.md sim: alpha from 1, target -|A|/2) | "off" (alpha = 0, ablation)
    bc_batch_size: int = 256  # bc method: demo rows per step
    critic_layer_norm: bool | None = None  # None: the preset's; True adds LayerNorm to the Q heads (RLPD)
    # The daemon's help rule (session.help_after_steps, robot_server/progress.py): after this many
    # steps in one direction without its success the robot asks for help, and the operator resets
    # the scene at the next switch to forward (an intervention, counted). 0 = never (reset-free
    # methods then get one only when the cube leaves the workspace).
    help_after_steps: int = 0
    # The goal classifier's step interval (env steps). None: MEDALPP.md's 1,000, which leaves C_f with
    # ~40 steps in a 40k-step run: its reward is then nearly flat (positives ~0.6, online frames ~0.5).
    clf_forward_every: int | None = None
    # What the forward agent is paid: "classifier" (MEDALPP.md: log C_f(s′)) or "task" (the sim's true
    # sparse success, 1 while the cube rests in the goal; state mode only). "task" is a diagnostic: it
    # tells a goal classifier that pays badly from a forward learner that learns slowly.
    forward_reward: str = "classifier"
    utd: int | None = None  # critic updates per env step, both agents. None: MEDALPP.md's sim value (2)
    demo_rows: int | None = None  # demo rows in each agent batch. None: MEDALPP.md's sim value (32 of 256)
    device: str = "auto"
    config_path: str | None = None  # None: configs/sim.yaml

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.backward_positives not in BACKWARD_POSITIVES:
            raise ValueError(f"backward_positives must be one of {BACKWARD_POSITIVES}, got {self.backward_positives!r}")
        if self.backward_reward is not None and self.backward_reward not in REWARD_KINDS:
            raise ValueError(f"backward_reward must be one of {REWARD_KINDS}, got {self.backward_reward!r}")
        if self.backward_entropy not in ("learned", "off"):
            raise ValueError(f"backward_entropy must be 'learned' or 'off', got {self.backward_entropy!r}")
        if self.mode not in ("state", "pixels"):
            raise ValueError(f"mode must be 'state' or 'pixels', got {self.mode!r}")
        if self.clf_forward_every is not None and self.clf_forward_every < 1:
            raise ValueError(f"clf_forward_every must be >= 1, got {self.clf_forward_every}")
        if self.forward_reward not in FORWARD_REWARDS:
            raise ValueError(f"forward_reward must be one of {FORWARD_REWARDS}, got {self.forward_reward!r}")
        if self.forward_reward == "task" and self.mode != "state":
            raise ValueError("forward_reward 'task' reads the cube from the state vector: it needs mode 'state'")
        if self.utd is not None and self.utd < 1:
            raise ValueError(f"utd must be >= 1, got {self.utd}")
        if self.demo_rows is not None and self.demo_rows < 0:
            raise ValueError(f"demo_rows must be >= 0, got {self.demo_rows}")
        if self.help_after_steps < 0:
            raise ValueError(f"help_after_steps must be >= 0, got {self.help_after_steps}")
        for name in ("env_steps", "demos", "eval_every", "eval_episodes", "eval_horizon", "phase_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Window:
    """Practice statistics since the last evaluation."""

    steps: int = 0
    forward_task_reward: float = 0.0  # sum over steps of the forward task's true success
    forward_phases: int = 0
    forward_phase_successes: int = 0
    forward_after_backward: int = 0  # forward phases that began where the backward policy stopped
    forward_after_backward_successes: int = 0
    backward_phases: int = 0
    backward_phase_successes: int = 0
    # Where practice forward phases begin: the cube's distance (m) from the start and goal zone centres.
    forward_start_to_start_zone: list[float] = field(default_factory=list)
    forward_start_to_goal_zone: list[float] = field(default_factory=list)
    forward_started_solved: int = 0  # the cube already sat in the goal when a forward phase began
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def add_metrics(self, m: dict[str, float]) -> None:
        for k, v in m.items():
            self.metrics.setdefault(k, []).append(float(v))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _stack(frames: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([f[k] for f in frames]) for k in frames[0]}


class SimHarness:
    """Builds the envs and the learning core for one method and seed; `run()` returns the curves."""

    def __init__(self, hc: HarnessConfig, cfg: Config | None = None) -> None:
        self.hc = hc
        cfg = cfg or load_config(hc.config_path or "sim", env={})
        self.device = resolve_device(hc.device)
        self.rng = np.random.default_rng(hc.seed)
        torch.manual_seed(hc.seed)
        jitter = {"start_jitter_m": hc.start_jitter_m, "start_jitter_yaw_deg": hc.start_jitter_yaw_deg}
        reset_free = hc.method != "episodic"
        self.env = PushCubeEnv(cfg, hc.mode, reset_free=reset_free, seed=hc.seed, max_episode_steps=None, **jitter)
        self.eval_env = PushCubeEnv(
            cfg, hc.mode, reset_free=False, seed=hc.seed + 100_000, max_episode_steps=hc.eval_horizon, **jitter
        )
        self.cfg = self.env.cfg
        self.spec = ObsSpec.from_config(self.cfg, hc.mode, state_dim=STATE_DIM)
        self.action_spec = self.env.space.spec()
        try:
            self.settings = self._settings()
        except ValueError:
            self.close()
            raise
        self.directions = ("forward", "backward") if hc.method in TWO_AGENTS else ("forward",)
        self.core = LearningCore(self.settings, self.spec, self.action_spec, self.device, self.rng, self.directions)
        if hc.forward_reward == "task":
            self.core.rewards["forward"] = self._task_reward("forward")
        self.eval_rng = np.random.default_rng(hc.seed + 200_000)
        self.env_steps = 0
        self._segment = 0
        self._episodic_resets = 0
        self.without_success = {"forward": 0, "backward": 0}  # the help rule's counters
        self.help_interventions = 0  # interventions the help rule asked for (also in env.interventions)

    def _settings(self) -> Settings:
        hc = self.hc
        lc = self.cfg.learner.model_copy(update={"setting": "sim", "mode": hc.mode})
        base = Settings.from_config(self.cfg.model_copy(update={"learner": lc}), hc.mode)
        preset = hc.preset or ("state" if hc.mode == "state" else "sim")
        sizes = PRESETS[preset]
        if hc.critic_layer_norm is not None:
            sizes = dataclasses.replace(sizes, critic_layer_norm=hc.critic_layer_norm)
        s = dataclasses.replace(
            base,
            sizes=sizes,
            seed_steps=base.seed_steps if hc.seed_steps is None else hc.seed_steps,
            capacity=max(hc.env_steps + 1000, 2000),
            backward_positives_initial=hc.initial_positives if hc.method == "fbrl" else 0,
            backward_positives_pre_goal=hc.backward_positives == "pre_goal",
            backward_reward=base.backward_reward if hc.backward_reward is None else hc.backward_reward,
            clf_forward_every=base.clf_forward_every if hc.clf_forward_every is None else hc.clf_forward_every,
        )
        if hc.demo_rows is not None:
            if hc.demo_rows >= s.batch_size:
                raise ValueError(f"demo_rows must be below the batch size {s.batch_size}, got {hc.demo_rows}")
            s = dataclasses.replace(s, demo_rows=hc.demo_rows, bc_batch_size=max(hc.demo_rows, 1))
        if hc.utd is not None:
            s = dataclasses.replace(s, forward=dataclasses.replace(s.forward, utd=hc.utd),
                                    backward=dataclasses.replace(s.backward, utd=hc.utd))
        if hc.bc_backward is not None:
            s = dataclasses.replace(s, backward=dataclasses.replace(s.backward, bc=tuple(hc.bc_backward)))
        if hc.backward_entropy == "off":
            s = dataclasses.replace(s, backward=dataclasses.replace(s.backward, learn_alpha=False, alpha_init=0.0))
        if hc.bc_forward is not None:
            s = dataclasses.replace(s, forward=dataclasses.replace(s.forward, bc=tuple(hc.bc_forward)))
        if hc.method == "bc":  # the actor alone, λ = 1 throughout
            fwd = dataclasses.replace(s.forward, bc=(1.0, 1.0, 0, 0))
            s = dataclasses.replace(s, forward=fwd, bc_batch_size=hc.bc_batch_size)
        return s

    def _task_reward(self, direction: str) -> Callable[[torch.Tensor], torch.Tensor]:
        workspace = self.cfg.workspace

        def reward(next_obs: torch.Tensor) -> torch.Tensor:
            ok = success_of_state(next_obs.detach().cpu().numpy(), direction, workspace)
            return torch.from_numpy(ok.astype(np.float32)).to(next_obs.device)

        return reward

    # --- data into the core, as the store would deliver it ---
    def _chunk(self, kind: str, direction: str, ep_id: str, start: int, frames: dict[str, np.ndarray],
               actions: np.ndarray, versions: np.ndarray, closed: bool, success: bool | None) -> Chunk:
        n = len(actions)
        data = dict(frames) | {
            "action": np.asarray(actions, np.float32),
            "policy_version": np.asarray(versions, np.int64),
            "intervention": np.zeros(n, bool),
        }
        info = EpisodeInfo(ep_id, kind, direction, start + n, closed, success, 0.0, None)
        return Chunk(info, start, data, closed)

    def collect_demos(self) -> dict[str, list[list[Any]]]:
        """`demos` scripted demos per direction on the training env's world, routed like stored demos
        (every one succeeds and holds its goal >= 21 steps, so the last 21 frames are goal frames)."""
        out: dict[str, list[list[Any]]] = {"forward": [], "backward": []}
        for i in range(self.hc.demos):
            for d in ("forward", "backward"):
                demo = scripted_demo(self.env, d, self.rng)
                frames = [t.obs for t in demo] + [demo[-1].next_obs]
                actions = np.stack([t.action for t in demo] + [np.zeros_like(demo[-1].action)])
                versions = np.full(len(frames), -1)
                self.core.ingest(self._chunk("demo", d, f"demo-{d}-{i}", 0, _stack(frames), actions, versions,
                                             True, True))
                out[d].append(demo)
        return out

    # --- acting ---
    @torch.no_grad()
    def act(self, direction: str, obs: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        main, proprio = policy_input(obs, self.spec)
        x = torch.from_numpy(np.ascontiguousarray(main)[None]).to(self.device)
        p = torch.from_numpy(proprio[None]).to(self.device)
        return self.core.agents[direction].policy(x, p, deterministic)[0].cpu().numpy()

    def evaluate(self) -> dict[str, float]:
        """Deployed success of the forward policy (mean action) from the start distribution."""
        env, successes, steps_to = self.eval_env, 0, []
        for _ in range(self.hc.eval_episodes):
            obs = env.reset_to_start("forward", self.eval_rng)
            for t in range(self.hc.eval_horizon):
                obs, _r, _term, _trunc, info = env.step(self.act("forward", obs, deterministic=True))
                if info["success"]:
                    successes += 1
                    steps_to.append(t + 1)
                    break
        return {
            "deployed_success": successes / self.hc.eval_episodes,
            "deployed_steps_to_success": float(np.mean(steps_to)) if steps_to else math.nan,
        }

    # --- the practice loop ---
    def run(self, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        t_start = time.perf_counter()
        self.collect_demos()
        demo_s = time.perf_counter() - t_start
        curve = self._run_bc(progress) if self.hc.method == "bc" else self._run_rl(progress, t_start)
        return {
            "config": dataclasses.asdict(self.hc),
            "settings": {
                "sizes": self.settings.sizes.to_dict(),
                "batch_size": self.settings.batch_size,
                "demo_rows": self.settings.demo_rows,
                "bc_batch_size": self.settings.bc_batch_size,
                "seed_steps": self.settings.seed_steps,
                "utd": self.settings.forward.utd,
                "bc_forward": list(self.settings.forward.bc),
                "bc_backward": list(self.settings.backward.bc),
                "backward_positives": self.hc.backward_positives,
                "backward_entropy": self.hc.backward_entropy,
                "backward_learn_alpha": self.settings.backward.learn_alpha,
                "backward_target_entropy": self.settings.backward.target_entropy_per_dim * self.env.space.dim,
                "clf_every": {"forward": self.settings.clf_forward_every, "backward": self.settings.clf_backward_every},
                "backward_reward": self.settings.backward_reward,
                "forward_reward": self.hc.forward_reward,
                "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
            },
            "positives": {d: len(p) for d, p in self.core.buffers.positives.items()},
            "demo_collection_s": demo_s,
            "curve": curve,
            "interventions": self.env.interventions + self._episodic_resets,
            "help_interventions": self.help_interventions,
            "wall_s": time.perf_counter() - t_start,
        }

    def _run_bc(self, progress: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
        agent, demo, s = self.core.agents["forward"], self.core.buffers.demo["forward"], self.settings
        curve, t0 = [], time.perf_counter()
        point = {"env_steps": 0, "updates": 0, "wall_s": 0.0} | self.evaluate()
        curve.append(point)
        for step in range(1, self.hc.env_steps + 1):
            b = demo.sample(s.bc_batch_size, self.rng)
            obs = torch.from_numpy(b.obs).to(self.device)
            proprio = torch.from_numpy(b.proprio).to(self.device)
            with torch.no_grad():
                h = agent.encoder(agent.augment(obs))
            m = agent.update_actor(h, proprio, (h, proprio, torch.from_numpy(b.action).to(self.device)))
            if step % self.hc.eval_every == 0 or step == self.hc.env_steps:
                point = {"env_steps": 0, "updates": step, "wall_s": time.perf_counter() - t0,
                         "bc_loss": m.get("bc_loss", math.nan)} | self.evaluate()
                curve.append(point)
                if progress:
                    progress(point)
        return curve

    def _run_rl(self, progress: Callable[[dict[str, Any]], None] | None, t_start: float) -> list[dict[str, Any]]:
        hc, env, core = self.hc, self.env, self.core
        two = hc.method in TWO_AGENTS
        obs, info = env.reset(seed=hc.seed, options={"direction": "forward"})
        if hc.method != "episodic":
            obs = env.reset_to_start("forward", self.rng)  # the demos moved the cube: start where practice starts
        d, t_phase, phase_success, started_after = "forward", 0, False, "start"
        window = Window()
        curve = [self._point(window, 0.0, 0.0)]
        t_window, steps_window = time.perf_counter(), 0  # after the evaluation: steps/s counts practice only
        for step in range(hc.env_steps):
            seeding = self.env_steps < self.settings.seed_steps
            if seeding:  # uniform random actions (MEDALPP.md; not the policy)
                action, version = self.rng.uniform(-1.0, 1.0, env.space.dim).astype(np.float32), -1
            else:
                action, version = self.act(d, obs, deterministic=False), core.agents[d].updates
            next_obs, _r, _term, _trunc, info = env.step(action)
            last = t_phase == hc.phase_steps - 1
            frames = {k: v[None] for k, v in obs.items()}
            core.ingest(self._chunk("practice", d, f"practice-{self._segment}", t_phase, frames,
                                    info["executed_action"][None], np.array([version]), last, None))
            self.env_steps += 1
            core.credit()
            while (done := core.train_once()) is not None:
                window.add_metrics(done[1])
            # Bookkeeping: the forward task's true success per step (continuing reward, EARL).
            fwd_success = info["success"] if d == "forward" else env.task.success("forward")
            window.forward_task_reward += float(fwd_success)
            window.steps += 1
            phase_success |= bool(info["success"])
            self.without_success[d] = 0 if info["success"] else self.without_success[d] + 1
            obs, t_phase = next_obs, t_phase + 1
            if t_phase == hc.phase_steps:
                self._close_phase(window, d, phase_success, started_after)
                obs, d, started_after = self._switch(d, two, info)
                t_phase, phase_success = 0, False
                if d == "forward":
                    self._note_forward_start(window)
                self._segment += 1
            steps_window += 1
            if (step + 1) % hc.eval_every == 0 or step + 1 == hc.env_steps:
                dt = time.perf_counter() - t_window
                point = self._point(window, time.perf_counter() - t_start, steps_window / max(dt, 1e-9))
                curve.append(point)
                if progress:
                    progress(point)
                window, t_window, steps_window = Window(), time.perf_counter(), 0
        return curve

    def _note_forward_start(self, w: Window) -> None:
        cube = self.env.task.cube_position()[:2]
        w.forward_start_to_start_zone.append(float(np.linalg.norm(cube - np.asarray(start_zone("forward").center))))
        w.forward_start_to_goal_zone.append(float(np.linalg.norm(cube - np.asarray(goal_zone("forward").center))))
        w.forward_started_solved += self.env.task.success("forward")

    def _close_phase(self, w: Window, d: str, success: bool, started_after: str) -> None:
        if d == "forward":
            w.forward_phases += 1
            w.forward_phase_successes += success
            if started_after == "backward":
                w.forward_after_backward += 1
                w.forward_after_backward_successes += success
        else:
            w.backward_phases += 1
            w.backward_phase_successes += success

    def _switch(self, d: str, two: bool, info: dict[str, Any]) -> tuple[dict[str, np.ndarray], str, str]:
        """End of a phase: next direction, maybe an intervention (scene reset) or an arm-only home."""
        hc, env = self.hc, self.env
        nxt = other(d) if two else d
        if hc.method == "episodic":
            self._episodic_resets += 1  # every episode's reset is an intervention
            obs, _ = env.reset(options={"direction": nxt})
            return obs, nxt, "reset"
        stuck = hc.help_after_steps > 0 and max(self.without_success.values()) >= hc.help_after_steps
        intervene = nxt == "forward" and (not info["object_in_workspace"] or stuck)
        if intervene:
            self.help_interventions += info["object_in_workspace"]  # asked for by the help rule
            self.without_success = dict.fromkeys(self.without_success, 0)  # a person put the scene right
        home = hc.home_every > 0 and self.env_steps % hc.home_every == 0
        obs, _ = env.reset(options={"direction": nxt, "intervention": intervene, "home_arm": home and not intervene})
        return obs, nxt, ("intervention" if intervene else d)

    def _point(self, w: Window, wall: float, steps_per_s: float) -> dict[str, Any]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else math.nan

        def mean(k: str) -> float:
            v = w.metrics.get(k)
            return float(np.mean(v)) if v else math.nan

        core = self.core
        point: dict[str, Any] = {
            "env_steps": self.env_steps,
            "wall_s": wall,
            "env_steps_per_s": steps_per_s,
            "interventions": self.env.interventions + self._episodic_resets,
            "continuing_reward": w.forward_task_reward / w.steps if w.steps else math.nan,
            "practice_forward_success": ratio(w.forward_phase_successes, w.forward_phases),
            "forward_success_after_backward": ratio(w.forward_after_backward_successes, w.forward_after_backward),
            "practice_backward_success": ratio(w.backward_phase_successes, w.backward_phases),
            # A forward phase that starts solved "succeeds" without acting: read the rates above with this.
            "forward_started_solved": ratio(w.forward_started_solved, len(w.forward_start_to_goal_zone)),
            "forward_start_cube_to_start_zone_m": float(np.mean(w.forward_start_to_start_zone))
            if w.forward_start_to_start_zone else math.nan,
            "forward_start_cube_to_goal_zone_m": float(np.mean(w.forward_start_to_goal_zone))
            if w.forward_start_to_goal_zone else math.nan,
            "updates": core.agent_updates(),
            "classifier_steps": core.classifier_steps(),
        }
        for d in self.directions:
            for k in ("reward_mean", "q_mean", "critic_loss", "bc_lambda", "alpha", "entropy", "bc_loss", "update_s"):
                point[f"{d}/{k}"] = mean(f"{d}/{k}")
            for k in ("fresh_prob", "positive_prob", "negative_prob", "train_accuracy"):
                point[f"clf_{d}/{k}"] = mean(f"clf_{d}/{k}")
        point |= self.evaluate()
        return point

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()
