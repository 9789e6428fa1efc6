"""What the learner's run dir adds to the report: its classifiers' TensorBoard scalars and, with the
robot config, the goal classifier's score of each labelled eval episode's last frame.

A run dir that is young (no TensorBoard scalars or no saved training state yet) is not an error:
the section then says why it has no data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from replay.store import ReplayReader
from replay_tools.report import LearnerFigures
from spec.config import Config

SCALAR_PREFIX = "clf_"  # learner/classifier.py logs clf_<direction>/<metric>
MAX_POINTS = 400  # per tag in report.json and the plot; TensorBoard itself keeps a 10k reservoir


def read_scalars(run_dir: Path) -> tuple[dict[str, list[dict[str, float]]], str]:
    """The run's classifier scalars ({tag: [{time, step, value}]}) from run_dir/tb, or ({}, why not)."""
    tb = run_dir / "tb"
    if not tb.is_dir():
        return {}, f"no TensorBoard run at {tb}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = sorted(t for t in acc.Tags().get("scalars", []) if t.startswith(SCALAR_PREFIX))
    if not tags:
        return {}, f"{tb} has no {SCALAR_PREFIX}* scalars yet"
    out = {}
    for tag in tags:
        points = [{"time": e.wall_time, "step": e.step, "value": e.value} for e in acc.Scalars(tag)
                  if math.isfinite(e.value)]
        keep = np.unique(np.linspace(0, len(points) - 1, min(len(points), MAX_POINTS)).round().astype(int))
        out[tag] = [points[i] for i in keep] if points else []
    return out, ""


def score_last_frames(run_dir: Path, cfg: Config, store: Path, episode_ids: list[str]) -> tuple[dict[str, float], str]:
    """p_goal of each episode's last committed frame by the run's newest goal classifier, or ({}, why not)."""
    from learner.offline import OfflineError, load_classifiers, score_frames

    try:
        clfs, spec, save = load_classifiers(run_dir, cfg)
    except (OfflineError, OSError, ValueError, KeyError) as exc:
        return {}, f"the learner's classifiers could not be loaded ({exc})"
    reader = ReplayReader(store)
    scores = {}
    for ep in episode_ids:
        last = reader.episode(ep).length - 1
        try:
            data = reader.read(ep, keys=spec.keys(), start=last)
            scores[ep] = float(score_frames({"forward": clfs["forward"]}, spec, data)["forward_prob"][0])
        except (KeyError, RuntimeError, ValueError) as exc:  # ValueError includes spec.step.ObservationError
            return {}, f"episode {ep} could not be scored by the learner's goal classifier ({exc})"
    return scores, f"the goal classifier of training state {save:06d} in {run_dir}"


def learner_figures(run_dir: Path | None, cfg: Config | None, store: Path, eval_ids: list[str]) -> LearnerFigures:
    figs = LearnerFigures()
    if run_dir is None:
        return figs
    figs.scalars, figs.scalars_why = read_scalars(run_dir)
    if cfg is None:
        figs.goal_scores_why = "--config was not given with --learner-run to score the eval episodes' last frames"
    elif eval_ids:
        scores, note = score_last_frames(run_dir, cfg, store, eval_ids)
        figs.goal_scores = scores
        figs.goal_scores_source, figs.goal_scores_why = (note, "") if scores else ("", note)
    return figs
