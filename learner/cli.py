"""`learner run`: tail the store, train MEDAL++, push policies to the daemon.

    learner run --config configs/sim.yaml --server http://127.0.0.1:8000 [--state]
                [--device auto|cpu|cuda] [--max-updates N] [--run-dir DIR]
    learner train-sim --method medalpp|fbrl|naive|episodic|bc --steps N --seed S --mode state|pixels
                [--demos N] [--eval-every K] [--eval-episodes E] [--out result.json]

Logs go to TensorBoard under the run dir and to a one-line progress display. SIGTERM / SIGINT
finish the current update, save the training state and exit 0; the next `learner run` with the
same run dir resumes from it.

Several GPUs (one rank per GPU, gradients averaged across ranks; see learner/distributed.py):

    torchrun --nproc-per-node N -m learner.cli run --config robot.yaml [options as above]

Rank r trains on cuda:r (CPU ranks with --device cpu, over gloo); each samples its own batches,
so an update sees N batches. Rank 0 alone logs to TensorBoard, pushes policies and writes the
training state, which holds plain weights: a run saved with N ranks resumes with any number,
including a plain `learner run`. The run dir and the store must be the same paths on every rank
(one machine, or a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from learner.distributed import DistributedError, Group
from learner.memory import keep_freed_memory
from learner.trainer import LearnerError, Trainer
from spec.config import ConfigError, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="MEDAL++ learner: tail the replay store, train both agents, push their policies to the daemon.",
)
log = logging.getLogger("learner")


@app.callback()
def main() -> None:
    """The MEDAL++ learner."""


def _progress_line(tr: Trainer) -> str:
    if not tr.ready:
        return f"waiting for the store at {tr.store_path}"
    st = tr.status()
    m = tr.last_metrics
    parts = [f"env {st['env_steps']}" + (" (seed)" if st["env_steps"] < st["seed_steps"] else "")]
    for d in ("forward", "backward"):
        bits = [f"upd {st['updates'][d]}", f"owe {st['owed'][f'agent/{d}']}"]
        if f"{d}/critic_loss" in m:
            bits.append(f"Lq {m[f'{d}/critic_loss']:.3g}")
        if f"{d}/reward_mean" in m:
            bits.append(f"r {m[f'{d}/reward_mean']:.2f}")
        if f"clf_{d}/fresh_accuracy" in m:
            bits.append(f"clf acc {m[f'clf_{d}/fresh_accuracy']:.2f}")
        bits.append(f"buf {st[f'buffer/online/{d}']}")
        bits.append(f"v{st['pushed'].get(d, '-')}")
        parts.append(f"{d[:3]}: " + " ".join(bits))
    return " | ".join(parts)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="robot YAML config (same file as the daemon)")],
    server: Annotated[str | None, typer.Option(help="daemon URL; default http://<server.host>:<server.port>")] = None,
    state: Annotated[bool, typer.Option("--state", help="learn from obs/state (original MEDAL, fast on CPU)")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (default learner.device)")] = None,
    max_updates: Annotated[int | None, typer.Option(min=1, help="stop after this many agent updates")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="TensorBoard logs and training state")] = None,
    store: Annotated[str | None, typer.Option(help="replay store (a directory or s3://bucket/prefix); default store.path")] = None,
    token: Annotated[
        str | None, typer.Option(envvar="LEARNER_TOKEN", help="bearer token; default server.token")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress line")] = False,
) -> None:
    """Train both MEDAL++ agents from the store and push their policies to the daemon.

    Several GPUs: `torchrun --nproc-per-node N -m learner.cli run ...` (one rank per GPU, rank 0
    logs, pushes and saves; a saved state resumes with any number of ranks)."""
    rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") != "1" else None
    who = f" rank {rank}" if rank is not None else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s")
    if server is not None and not server.startswith(("http://", "https://")):
        raise typer.BadParameter(f"--server must be an http(s) URL, got {server!r}", param_hint="--server")
    keep_freed_memory()  # before the first big tensor: see learner/memory.py
    group: Group | None = None
    try:
        cfg = load_config(config)
        group = Group.from_env(device or cfg.learner.device)  # None unless torchrun started >1 ranks
        trainer = Trainer(
            cfg,
            store_path=store,
            server=server,
            token=token,
            mode="state" if state else None,
            device=str(group.device) if group else device,
            run_dir=run_dir,
            dist=group,
        )
    except (ConfigError, LearnerError, DistributedError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        if group is not None:
            group.close()
        raise typer.Exit(2) from None
    quiet = quiet or not trainer.is_main  # one progress line per job, rank 0's

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: saving state and exiting", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    bar = tqdm(total=max_updates, disable=quiet, dynamic_ncols=True, unit="upd", smoothing=0.1)
    last = [0.0]

    def progress(tr: Trainer, _m: dict[str, float] | None) -> None:
        if quiet or time.monotonic() - last[0] < 0.5:
            return
        last[0] = time.monotonic()
        done = sum(a.updates for a in tr.agents.values())
        bar.n = done
        bar.set_description_str(_progress_line(tr), refresh=False)
        bar.refresh()

    code = 0
    try:
        log.info("learner: store %s, server %s, device %s, run dir %s, mode %s, setting %s",
                 trainer.store_path, trainer.server, trainer.device, trainer.run_dir, trainer.settings.mode,
                 trainer.settings.setting)
        with logging_redirect_tqdm():  # log lines print above the progress line, not through it
            trainer.run(stop, max_updates=max_updates, on_progress=progress)
    except (LearnerError, DistributedError) as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 2
    finally:
        bar.close()
        trainer.save()
        if group is not None and code == 0:
            group.barrier()  # the job ends once rank 0's final save is written
        for pusher in trainer.pushers.values():
            pusher.wait_idle(2.0)
        trainer.close()
        if group is not None:
            group.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(code)


def _schedule(option: str, text: str | None) -> tuple[float, float, int, int] | None:
    """A λ schedule 'v0,v1,step0,step1'; ValueError naming the option otherwise."""
    if text is None:
        return None
    try:
        v0, v1, s0, s1 = text.split(",")
        return float(v0), float(v1), int(s0), int(s1)
    except ValueError:
        raise ValueError(f"{option} must be 'v0,v1,step0,step1' (e.g. 1,0.1,10000,50000), got {text!r}") from None


@app.command("train-sim")
def train_sim(
    method: Annotated[str, typer.Option(help="medalpp | fbrl | naive | episodic | bc")] = "medalpp",
    steps: Annotated[int, typer.Option(min=1, help="practice env steps (bc: gradient steps)")] = 50_000,
    seed: Annotated[int, typer.Option(help="seeds the envs, demos, networks and sampling")] = 0,
    mode: Annotated[str, typer.Option(help="state | pixels")] = "state",
    demos: Annotated[int, typer.Option(min=1, help="scripted demos per direction")] = 10,
    eval_every: Annotated[int, typer.Option(min=1, help="evaluate the forward policy every N env steps")] = 5_000,
    eval_episodes: Annotated[int, typer.Option(min=1, help="episodes per evaluation")] = 10,
    seed_steps: Annotated[int | None, typer.Option(min=0, help="uniform-random steps first (default 10,000)")] = None,
    preset: Annotated[str | None, typer.Option(help="network sizes: state | sim | robot | tiny")] = None,
    bc_forward: Annotated[
        str | None, typer.Option(help="forward BC-λ schedule 'v0,v1,step0,step1' (default 1,0.1,10000,50000)")
    ] = None,
    bc_backward: Annotated[
        str | None, typer.Option(help="backward BC-λ schedule 'v0,v1,step0,step1' (default: off, as in MEDALPP.md's sim)")
    ] = None,
    backward_positives: Annotated[
        str, typer.Option(help="sim C_b positives: all_forward (MEDALPP.md) | pre_goal (forward-demo frames before the goal hold)")
    ] = "all_forward",
    backward_reward: Annotated[
        str | None, typer.Option(help="sim backward reward: neg_log_1mp (MEDALPP.md, >= 0) | log_p (bounded, <= 0)")
    ] = None,
    backward_entropy: Annotated[
        str, typer.Option(help="sim backward entropy term: learned (MEDALPP.md, alpha from 1) | off (alpha = 0)")
    ] = "learned",
    critic_layer_norm: Annotated[
        bool | None, typer.Option(help="LayerNorm in the Q heads' hidden layers (RLPD); default: the preset's")
    ] = None,
    help_after_steps: Annotated[int, typer.Option(
        min=0, help="the daemon's help rule: reset the scene (an intervention) at the next switch to forward after "
        "this many steps in one direction without its success (0 = only when the cube leaves the workspace)")] = 0,
    clf_forward_every: Annotated[int | None, typer.Option(
        min=1, help="goal classifier C_f: one step every N env steps (default 1,000, MEDALPP.md)")] = None,
    forward_reward: Annotated[str, typer.Option(
        help="what the forward agent is paid: classifier (log C_f, MEDALPP.md) | task (the sim's true success; "
        "a diagnostic, state mode only)")] = "classifier",
    utd: Annotated[int | None, typer.Option(
        min=1, help="critic updates per env step, both agents (default 2, MEDALPP.md's sim)")] = None,
    demo_rows: Annotated[int | None, typer.Option(
        min=0, help="demo rows in each agent batch of 256 (default 32, MEDALPP.md's sim)")] = None,
    jitter_m: Annotated[float, typer.Option(help="start jitter of the cube, m")] = 0.05,
    jitter_yaw_deg: Annotated[float, typer.Option(help="start yaw jitter of the cube, deg")] = 45.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    out: Annotated[Path | None, typer.Option(help="write the result JSON here")] = None,
) -> None:
    """Train on the sim task synchronously (PushCube-v0) and evaluate the forward policy (EARL metrics)."""
    import dataclasses
    import json

    import torch

    from learner.harness import HarnessConfig, SimHarness

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    try:
        hc = HarnessConfig(
            method=method, mode=mode, env_steps=steps, seed=seed, demos=demos, eval_every=eval_every,
            eval_episodes=eval_episodes, seed_steps=seed_steps, preset=preset, start_jitter_m=jitter_m,
            start_jitter_yaw_deg=jitter_yaw_deg, device=device, bc_forward=_schedule("--bc-forward", bc_forward),
            bc_backward=_schedule("--bc-backward", bc_backward), backward_positives=backward_positives,
            backward_reward=backward_reward, backward_entropy=backward_entropy, critic_layer_norm=critic_layer_norm,
            help_after_steps=help_after_steps, clf_forward_every=clf_forward_every,
            forward_reward=forward_reward, utd=utd, demo_rows=demo_rows,
        )
        harness = SimHarness(hc)  # checks what needs the config too (demo rows against the batch size)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    points: list[dict] = []

    def progress(p: dict) -> None:
        points.append(p)
        if out is not None:  # a partial result after every evaluation, in case the run is cut short
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"config": dataclasses.asdict(hc), "partial": True, "curve": points}))
        typer.echo(
            f"{method} seed {seed}: env {p['env_steps']} upd {p.get('updates')} "
            f"success {p['deployed_success']:.2f} practice fwd {p.get('practice_forward_success', float('nan')):.2f} "
            f"interventions {p.get('interventions', 0)} {p.get('env_steps_per_s', float('nan')):.1f} steps/s"
        )

    try:
        result = harness.run(progress)
    finally:
        harness.close()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
