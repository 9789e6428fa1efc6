"""The learner's classifiers outside training: score logged frames for offline debugging.

`replay video --learner-run DIR` and `replay scores` use this to show what the goal and
state-matching classifiers thought of every frame of a session, and the rewards they gave.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from learner.classifier import ClassifierLearner
from learner.settings import Settings
from learner.state import COUNTERS, WEIGHTS, latest
from policies.networks import NetworkSizes
from spec.config import Config
from spec.step import ObsSpec, policy_input


class OfflineError(RuntimeError):
    pass


def load_classifiers(run_dir: Path, cfg: Config) -> tuple[dict[str, ClassifierLearner], ObsSpec, int]:
    """The classifiers of the newest training state in `run_dir`, and its obs spec and save number."""
    directory = latest(Path(run_dir) / "state")
    if directory is None:
        raise OfflineError(f"no training state under {run_dir}/state (has the learner saved yet?)")
    counters = json.loads((directory / COUNTERS).read_text())
    if not counters.get("obs_spec"):
        raise OfflineError(f"{directory} records no observation spec")
    spec = ObsSpec.from_dict(counters["obs_spec"])
    sizes = NetworkSizes.from_dict(counters["sizes"])
    settings = Settings.from_config(cfg, mode=spec.mode)
    weights = load_file(str(directory / WEIGHTS))
    kinds = {"forward": "log_p", "backward": settings.backward_reward}
    cams = {"forward": settings.clf_forward_cameras, "backward": None}
    out = {}
    for d in ("forward", "backward"):
        clf = ClassifierLearner(d, spec, sizes, kinds[d], cams[d], augment="none")  # scoring only
        prefix = f"clf_{d}."
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if not state:
            raise OfflineError(f"{directory} has no {d} classifier weights")
        clf.net.load_state_dict(state, strict=True)
        clf.net.eval()
        out[d] = clf
    return out, spec, int(directory.name)


def score_frames(
    clfs: dict[str, ClassifierLearner], spec: ObsSpec, data: dict[str, np.ndarray], batch: int = 256
) -> dict[str, np.ndarray]:
    """Per step: each classifier's probability and the reward it gives (on that step's frame)."""
    main, _ = policy_input(data, spec)
    n = len(main)
    out = {f"{d}_{k}": np.zeros(n, np.float32) for d in clfs for k in ("prob", "reward")}
    with torch.no_grad():
        for i in range(0, n, batch):
            x = torch.as_tensor(np.ascontiguousarray(main[i : i + batch]))
            for d, clf in clfs.items():
                out[f"{d}_prob"][i : i + batch] = clf.probabilities(x).view(-1).cpu().numpy()
                out[f"{d}_reward"][i : i + batch] = clf.reward(x).view(-1).cpu().numpy()
    return out
