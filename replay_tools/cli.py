"""`replay`: debug a recorded session offline.

    replay list   --config configs/sim.yaml [--kind practice] [--session ID]
    replay show   EPISODE --config ...
    replay video  EPISODE --config ... --out ep.mp4 [--learner-run runs/learner]
    replay scores EPISODE --config ... --learner-run runs/learner --out scores.csv
    replay rerun  EPISODE --config ... --checkpoint data/policies/forward.safetensors [--out rerun.csv]
    replay sim    STORE EPISODE [--config sim] [--out divergence.csv] [--plot divergence.png]
    replay report [STORE] -o data/reports [--config sim] [--learner-run runs/learner]
    replay export STORE --format lerobot -o data/lerobot [--kinds demo,practice] [--episodes 4,7] [--force]

The store may be read while the daemon writes it (readers only see committed steps).

`replay report` takes the store as a positional path too, or the config's store.path; the learner's
figures come from --learner-run, or else from the config's learner.run_dir when that exists.

`replay sim` takes the store as a positional path (issue 11: it is often a store copied off the
robot, with no matching config on this machine); its `--config` chooses the sim world to replay
in (default: the packaged sim config), not the store. See replay_tools/resim.py.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from replay.store import ReplayReader, StoreError
from replay_tools.labelled_set import labelled_frames
from replay_tools.learner_figures import learner_figures
from replay_tools.report import gather
from replay_tools.timeline import ReportError, read_timeline

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Offline replay and debugging tools.")
console = Console()


def _store(config: Path | None, store: Path | None) -> Path:
    if store is not None:
        path = store
    elif config is not None:
        path = _cfg(config).store.path
    else:
        raise typer.BadParameter("give --config or --store", param_hint="--config")
    if not (path / "zarr.json").is_file():
        raise typer.BadParameter(f"no replay store at {path}", param_hint="--store")
    return path


def _cfg(config: Path):
    from spec.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None


def _episode(reader: ReplayReader, episode: str):
    for e in reader.episodes(include_open=True):
        if e.id == episode:
            return e
    known = [e.id for e in reader.episodes(include_open=True)]
    hint = f" (episodes {known[0]}..{known[-1]})" if known else " (the store is empty)"
    raise typer.BadParameter(f"no episode {episode!r}{hint}", param_hint="EPISODE")


ConfigOpt = typer.Option(None, "--config", "-c", help="robot config (for store.path)")
StoreOpt = typer.Option(None, "--store", help="store path (instead of --config)")


@app.command("list")
def list_episodes(
    config: Path | None = ConfigOpt,
    store: Path | None = StoreOpt,
    kind: str | None = typer.Option(None, help="demo | practice | eval"),
    direction: str | None = typer.Option(None, help="forward | backward"),
    session: str | None = typer.Option(None, help="only this practice session"),
    include_open: bool = typer.Option(False, help="also the episode being written"),
) -> None:
    """The store's episodes (segments), oldest first."""
    reader = ReplayReader(_store(config, store))
    t = Table("id", "kind", "dir", "steps", "success", "seconds", "session", "policy versions", "end")
    n = 0
    for e in reader.episodes(include_open=include_open):
        if (kind and e.kind != kind) or (direction and e.direction != direction):
            continue
        if session and e.attrs.get("session") != session:
            continue
        secs = "" if not (e.started_at and e.ended_at) else f"{e.ended_at - e.started_at:.1f}"
        versions = e.attrs.get("policy_versions")
        t.add_row(e.id, e.kind, e.direction, str(e.length), str(e.success), secs, str(e.attrs.get("session", "")),
                  "" if versions is None else ",".join(map(str, versions)), str(e.attrs.get("end_reason", "")))
        n += 1
    console.print(t)
    console.print(f"{n} episodes")


@app.command()
def show(episode: str, config: Path | None = ConfigOpt, store: Path | None = StoreOpt) -> None:
    """One episode: attributes, events (interventions) and a summary of its arrays."""
    reader = ReplayReader(_store(config, store))
    e = _episode(reader, episode)
    console.print(e.attrs)
    if e.length:
        data = reader.read(e.id)
        t = Table("key", "shape", "dtype", "min", "max", "mean")
        for k, v in data.items():
            a = v.astype(np.float64)
            t.add_row(k, str(v.shape), str(v.dtype), f"{a.min():.3g}", f"{a.max():.3g}", f"{a.mean():.3g}")
        console.print(t)
        ts = data["timestamp"]
        if len(ts) > 1:
            dt = np.diff(ts)
            console.print(f"step period: mean {dt.mean() * 1e3:.1f} ms, max {dt.max() * 1e3:.1f} ms")


def _scores(learner_run: Path | None, config: Path | None, data: dict[str, np.ndarray]):
    if learner_run is None:
        return None
    if config is None:
        raise typer.BadParameter("--learner-run needs --config (the learner's settings)", param_hint="--config")
    from learner.offline import OfflineError, load_classifiers, score_frames

    try:
        clfs, spec, save = load_classifiers(learner_run, _cfg(config))
        scores = score_frames(clfs, spec, data)
    except OfflineError as exc:
        raise typer.BadParameter(str(exc), param_hint="--learner-run") from None
    console.print(f"classifier scores from training state {save:06d} in {learner_run}")
    return scores


@app.command()
def video(
    episode: str,
    out: Path = typer.Option(..., help="output .mp4 (or .avi)"),
    config: Path | None = ConfigOpt,
    store: Path | None = StoreOpt,
    scale: int = typer.Option(4, min=1, max=16, help="pixel scale of the stored views"),
    fps: float = typer.Option(10.0, min=0.1, max=120),
    learner_run: Path | None = typer.Option(None, help="overlay the classifiers' scores from this run dir"),
) -> None:
    """The episode's camera views side by side, with step, action, policy version, intervention
    and (with --learner-run) the classifier probabilities burnt in."""
    import cv2

    reader = ReplayReader(_store(config, store))
    e = _episode(reader, episode)
    if e.length == 0:
        raise typer.BadParameter(f"episode {episode} has no steps", param_hint="EPISODE")
    data = reader.read(e.id)
    cams = [k for k in data if k.startswith("obs/") and data[k].ndim == 4]
    scores = _scores(learner_run, config, data)
    frames = np.concatenate([data[k] for k in cams], axis=2)  # T, H, W*n, 3
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    panel = 64
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if out.suffix == ".mp4" else "MJPG"))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), fourcc, fps, (w, h + panel))
    if not writer.isOpened():
        raise typer.BadParameter(f"cannot write video {out}", param_hint="--out")
    try:
        for i in range(e.length):
            img = cv2.resize(frames[i], (w, h), interpolation=cv2.INTER_NEAREST)[:, :, ::-1]
            canvas = np.full((h + panel, w, 3), 255, np.uint8)
            canvas[:h] = img
            a = " ".join(f"{x:+.2f}" for x in data["action"][i])
            line1 = f"{e.kind} {e.direction} step {i} v{int(data['policy_version'][i])}  a [{a}]"
            color = (0, 0, 200) if data["intervention"][i] else (0, 0, 0)
            if data["intervention"][i]:
                line1 += "  INTERVENTION"
            cv2.putText(canvas, line1, (6, h + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
            if scores is not None:
                line2 = f"p_goal {scores['forward_prob'][i]:.2f}  p_match {scores['backward_prob'][i]:.2f}"
                cv2.putText(canvas, line2, (6, h + 48), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            writer.write(canvas)
    finally:
        writer.release()
    console.print(f"wrote {out}: {e.length} frames, {len(cams)} views ({', '.join(c[4:] for c in cams)})")


@app.command()
def scores(
    episode: str,
    learner_run: Path = typer.Option(..., help="learner run dir (its training state)"),
    config: Path = typer.Option(..., "--config", "-c"),
    out: Path = typer.Option(..., help="CSV: step, classifier probabilities and rewards"),
) -> None:
    """What the goal and state-matching classifiers make of every frame of an episode."""
    reader = ReplayReader(_store(config, None))
    e = _episode(reader, episode)
    data = reader.read(e.id)
    sc = _scores(learner_run, config, data)
    assert sc is not None
    cols = sorted(sc)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "policy_version", "intervention", *cols])
        for i in range(e.length):
            w.writerow([i, int(data["policy_version"][i]), int(data["intervention"][i]),
                        *(f"{sc[c][i]:.6g}" for c in cols)])
    console.print(f"wrote {out}; mean " + ", ".join(f"{c} {sc[c].mean():.3f}" for c in cols))


@app.command()
def rerun(
    episode: str,
    checkpoint: Path = typer.Option(..., help="a policy checkpoint (.safetensors), e.g. data/policies/forward.safetensors"),
    config: Path | None = ConfigOpt,
    store: Path | None = StoreOpt,
    out: Path | None = typer.Option(None, help="CSV of logged vs re-run actions"),
) -> None:
    """Re-run a checkpoint's policy (mean action) on the episode's logged observations."""
    from policies.checkpoint import CheckpointError, PolicyCheckpoint
    from policies.runner import PolicyRunner
    from spec.step import ObservationError

    reader = ReplayReader(_store(config, store))
    e = _episode(reader, episode)
    try:
        ckpt = PolicyCheckpoint.from_bytes(checkpoint.read_bytes())
    except (OSError, CheckpointError) as exc:
        raise typer.BadParameter(f"{checkpoint}: {exc}", param_hint="--checkpoint") from None
    runner = PolicyRunner(ckpt, num_threads=None)
    data = reader.read(e.id)
    logged = data["action"]
    try:
        rerun_actions = np.stack([
            runner.act({k: v[i] for k, v in data.items() if k.startswith("obs/")}, deterministic=True)
            for i in range(e.length)
        ])
    except ObservationError as exc:
        raise typer.BadParameter(f"episode {episode} does not fit the checkpoint: {exc}", param_hint="EPISODE") from None
    diff = np.abs(rerun_actions - logged)
    console.print(
        f"{ckpt.direction} policy v{ckpt.version} (step {ckpt.step}) on episode {e.id} ({e.kind} {e.direction}, "
        f"{e.length} steps): mean |re-run - logged| per dim {np.round(diff.mean(0), 3).tolist()}"
    )
    same = data["policy_version"] == ckpt.version
    if same.any():
        console.print(f"{int(same.sum())} steps were logged with this version: mean diff {diff[same].mean():.4f} "
                      "(non-zero: the logged actions were sampled, the re-run uses the mean)")
    if out is not None:
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            dims = logged.shape[1]
            w.writerow(["step", "policy_version", *[f"logged_{j}" for j in range(dims)],
                        *[f"rerun_{j}" for j in range(dims)]])
            for i in range(e.length):
                w.writerow([i, int(data["policy_version"][i]), *logged[i].round(5), *rerun_actions[i].round(5)])
        console.print(f"wrote {out}")


def _read_committed(reader: ReplayReader, episode: str, keys: list[str]) -> dict[str, np.ndarray]:
    """The episode's committed steps of `keys`, one key at a time so a bad chunk is named."""
    out = {}
    for key in keys:
        try:
            out[key] = reader.read(episode, keys=[key])[key]
        except KeyError as exc:  # deleted while we read
            raise typer.BadParameter(str(exc.args[0]), param_hint="EPISODE") from None
        except (RuntimeError, ValueError, OSError) as exc:  # what zarr's codecs raise on a corrupt chunk
            raise typer.BadParameter(f"episode {episode}: cannot read {key!r} (corrupt chunk?): {exc}",
                                     param_hint="STORE") from None
    return out


@app.command("sim")
def resim(
    store: Path = typer.Argument(..., help="the replay store (directory)"),
    episode: str = typer.Argument(..., help="episode id, e.g. 000004"),
    config: Path = typer.Option(Path("sim"), "--config", "-c",
                                help="the sim world: a YAML file or a packaged config (sim)"),
    out: Path | None = typer.Option(None, help="CSV of the per-step divergence"),
    plot: Path | None = typer.Option(None, help="PNG of the divergence and the top-down paths (needs matplotlib)"),
    every: int = typer.Option(0, min=0, help="table row every N steps (0: about 15 rows)"),
) -> None:
    """Re-execute the episode's logged actions on the sim arm from its logged start state and
    report the divergence per step: end-effector path and object pose, sim vs log."""
    from replay_tools.resim import ResimError, divergence_table, resimulate, write_csv

    if not (store / "zarr.json").is_file():
        raise typer.BadParameter(f"no replay store at {store}", param_hint="STORE")
    try:
        reader = ReplayReader(store)
    except StoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="STORE") from None
    e = _episode(reader, episode)
    if e.length == 0:
        raise typer.BadParameter(f"episode {episode} has no steps", param_hint="EPISODE")
    keys = [k for k in ("obs/proprio", "obs/state", "action", "timestamp") if k in reader.keys]
    data = _read_committed(reader, e.id, keys)
    cfg = _cfg(config)
    try:
        div, overridden = resimulate(cfg, reader.meta, data)
    except ResimError as exc:
        raise typer.BadParameter(f"episode {episode}: {exc}", param_hint="EPISODE") from None

    backend = (reader.meta.get("extra") or {}).get("arm_backend")
    where = f", logged on the {backend} arm" if backend else ""
    state = "" if e.closed else ", still being written: committed steps only"
    console.print(f"episode {e.id} ({e.kind} {e.direction}, {e.length} steps{where}{state}) "
                  f"replayed in the sim (config {config}): {len(data['action']) - 1} actions")
    for line in overridden:
        console.print(f"  from the store, as the daemon used it: {line}")
    if div.errors()["ee_yaw_err_deg"] is None:
        console.print("end-effector yaw divergence unavailable: the action space has no yaw, so it was not logged")
    if div.object_note:
        console.print(f"object divergence unavailable: {div.object_note}")
    console.print(divergence_table(div, every))
    if out is not None:
        write_csv(div, out)
        console.print(f"wrote {out}")
    if plot is not None:
        from replay_tools.divergence_plot import PlotUnavailable, plot_divergence

        try:
            plot_divergence(div, plot, f"episode {e.id} ({e.kind} {e.direction}): sim vs log")
        except PlotUnavailable as exc:
            raise typer.BadParameter(str(exc), param_hint="--plot") from None
        console.print(f"wrote {plot}")


def _report_learner_run(learner_run: Path | None, config: Path | None, cfg) -> tuple[Path | None, str, str | None]:
    """The learner run dir the report reads, how it was chosen, and (when none) which option would give one."""
    if learner_run is not None:
        return learner_run, "--learner-run", None
    if cfg is None:
        return None, "", None
    run_dir = Path(cfg.learner.run_dir)
    if run_dir.is_dir():
        return run_dir, f"learner.run_dir of --config {config}", None
    return None, "", (f"no --learner-run given, and learner.run_dir of --config {config} ({run_dir}, relative "
                      f"to {Path.cwd()}) does not exist: give --learner-run RUN_DIR")


@app.command()
def report(
    store: Path | None = typer.Argument(
        None, help="the replay store directory, e.g. data/sim.zarr (default: store.path of --config)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for index.html, its PNGs and report.json"),
    learner_run: Path | None = typer.Option(
        None, exists=True, file_okay=False,
        help="learner run dir: its classifiers' TensorBoard scalars and (with --config) goal scores of the "
             "labelled frames (default: learner.run_dir of --config, when it exists)"),
    config: Path | None = typer.Option(
        None, "--config", "-c",
        help="robot config, a YAML path or a packaged name (sim): the learner's run dir and settings, and the "
             "store when STORE is not given"),
) -> None:
    """The operator's morning report: eval success per policy version, interventions and human minutes
    per practice hour, recoveries, help requests, tick health, checkpoint swaps, classifier scores and
    the labelled set's false positives/negatives, as HTML with PNG plots and report.json."""
    from replay.location import is_s3_url
    from replay_tools.page import write_report  # matplotlib: only this command needs it

    cfg = None if config is None else _cfg(config)
    if store is None:
        if cfg is None:
            raise typer.BadParameter("give STORE or --config (its store.path)", param_hint="STORE")
        if is_s3_url(cfg.store.path):
            raise typer.BadParameter(f"store.path of --config {config} is {cfg.store.path}: the report reads a "
                                     "local store directory; give STORE (a local copy)", param_hint="STORE")
        store = Path(cfg.store.path)
    try:
        timeline = read_timeline(store)
    except ReportError as exc:
        raise typer.BadParameter(str(exc), param_hint="STORE") from None
    labelled = [(f.episode, f.frame) for f in labelled_frames(timeline)]
    run_dir, chosen_by, why_none = _report_learner_run(learner_run, config, cfg)
    figures = gather(timeline, learner_figures(run_dir, cfg, store, labelled, chosen_by, why_none))
    try:
        index = write_report(figures, out)
    except OSError as exc:
        raise typer.BadParameter(f"cannot write the report into {out}: {exc}", param_hint="--out") from None
    if run_dir is not None and learner_run is None:
        console.print(f"learner run dir: {run_dir} (learner.run_dir of --config {config})", soft_wrap=True)
    for name, sec in figures["sections"].items():
        if not sec["recorded"]:
            console.print(f"not recorded: {name}: {sec.get('why', '')}", soft_wrap=True)
    print(index)


@app.command()
def export(
    store: Path = typer.Argument(..., help="the replay store directory, e.g. data/sim.zarr"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the dataset (must be empty, or --force)"),
    fmt: str = typer.Option("lerobot", "--format", help="lerobot: a LeRobotDataset (codebase v3.0)"),
    kinds: str = typer.Option("demo,practice", help="comma-separated episode kinds: demo, practice, eval"),
    episodes: str | None = typer.Option(None, help="comma-separated episode ids (default: every closed one)"),
    task: str = typer.Option("push the cube", help="task text; each episode's is '<task> <direction>'"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output directory"),
) -> None:
    """Closed episodes as a dataset for other learners: camera views, proprio, sim state, actions,
    and per frame reward, success, intervention and policy version (replay_tools/lerobot_export.py)."""
    if fmt != "lerobot":
        raise typer.BadParameter(f"unknown format {fmt!r}; the one format is 'lerobot'", param_hint="--format")
    from replay.schema import KINDS
    from replay_tools.lerobot_export import ExportError, export_lerobot  # pyarrow: only this command

    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in chosen if k not in KINDS]
    if bad or not chosen:
        raise typer.BadParameter(f"kinds must be some of {', '.join(KINDS)}; got {kinds!r}", param_hint="--kinds")
    wanted = None if episodes is None else [e for e in episodes.split(",") if e.strip()]
    try:
        summary = export_lerobot(store, out, chosen, wanted, task=task, force=force)
    except ExportError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None
    except OSError as exc:
        raise typer.BadParameter(f"cannot write the dataset into {out}: {exc}", param_hint="--out") from None
    by_kind = Counter(e["kind"] for e in summary.episodes)
    console.print(f"wrote {out}: {len(summary.episodes)} episodes ("
                  + ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
                  + f"), {summary.frames} frames, views {', '.join(summary.cameras)}")
    if summary.skipped_open:
        console.print(f"skipped {', '.join(summary.skipped_open)}: still being written")


if __name__ == "__main__":
    app()
