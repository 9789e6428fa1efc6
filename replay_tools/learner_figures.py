"""What the learner's run dir adds to the report: its classifiers' TensorBoard scalars (and its own
labelled-set rates) and, with the robot config, the goal classifier's score of each labelled frame.

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

# learner/classifier.py logs clf_<direction>/<metric>; learner/labelled.py labels/<direction>_fp_rate, _fn_rate.
SCALAR_PREFIXES = ("clf_", "labels/")
MAX_POINTS = 400  # per tag in report.json and the plot; TensorBoard itself keeps a 10k reservoir


def read_scalars(run_dir: Path) -> tuple[dict[str, list[dict[str, float]]], str]:
    """The run's classifier scalars ({tag: [{time, step, value}]}) from run_dir/tb, or ({}, why not)."""
    tb = run_dir / "tb"
    if not tb.is_dir():
        return {}, f"no TensorBoard run at {tb}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = sorted(t for t in acc.Tags().get("scalars", []) if t.startswith(SCALAR_PREFIXES))
    if not tags:
        return {}, f"{tb} has no classifier scalars ({', '.join(p + '*' for p in SCALAR_PREFIXES)}) yet"
    out = {}
    for tag in tags:
        points = [{"time": e.wall_time, "step": e.step, "value": e.value} for e in acc.Scalars(tag)
                  if math.isfinite(e.value)]
        keep = np.unique(np.linspace(0, len(points) - 1, min(len(points), MAX_POINTS)).round().astype(int))
        out[tag] = [points[i] for i in keep] if points else []
    return out, ""


def score_labelled(run_dir: Path, cfg: Config, store: Path,
                   frames: list[tuple[str, int]]) -> tuple[dict[tuple[str, int], float], str]:
    """p_goal of each (episode, frame) by the run's newest goal classifier, or ({}, why not)."""
    from learner.offline import OfflineError, load_classifiers, score_frames

    try:
        clfs, spec, save = load_classifiers(run_dir, cfg)
    except (OfflineError, OSError, ValueError, KeyError, TypeError) as exc:
        # TypeError: a training state written by another version of the code (unknown network sizes).
        return {}, f"the learner's classifiers in {run_dir} could not be loaded ({type(exc).__name__}: {exc})"
    reader = ReplayReader(store)
    by_episode: dict[str, list[int]] = {}
    for ep, frame in frames:
        by_episode.setdefault(ep, []).append(frame)
    scores = {}
    for ep, wanted in by_episode.items():
        try:
            data = reader.read_steps(ep, wanted, keys=spec.keys())
            probs = score_frames({"forward": clfs["forward"]}, spec, data)["forward_prob"]
        except (KeyError, IndexError, RuntimeError, ValueError) as exc:  # ValueError: spec.step.ObservationError too
            return {}, f"episode {ep} could not be scored by the learner's goal classifier ({exc})"
        scores.update({(ep, f): float(p) for f, p in zip(wanted, probs, strict=True)})
    return scores, f"the goal classifier of training state {save:06d} in {run_dir}"


def learner_figures(run_dir: Path | None, cfg: Config | None, store: Path,
                    labelled: list[tuple[str, int]], chosen_by: str = "--learner-run",
                    why_none: str | None = None) -> LearnerFigures:
    """The learner's figures from `run_dir` (`chosen_by` says where that came from: the option or the
    config's learner.run_dir); with no run dir, the sections say `why_none` or which option fills them."""
    figs = LearnerFigures()
    if run_dir is None:
        if why_none:
            figs.scalars_why = figs.goal_scores_why = why_none
        return figs
    figs.run_dir = f"{run_dir} ({chosen_by})"
    figs.scalars, figs.scalars_why = read_scalars(run_dir)
    if cfg is None:
        figs.goal_scores_why = ("give --config CONFIG (the config the learner ran with) with --learner-run to "
                                "score the labelled frames")
    elif labelled:
        scores, note = score_labelled(run_dir, cfg, store, labelled)
        figs.goal_scores = scores
        figs.goal_scores_source, figs.goal_scores_why = (note, "") if scores else ("", note)
    return figs
