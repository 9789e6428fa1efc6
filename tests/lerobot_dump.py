"""Run in .venv-lerobot (scripts/setup_lerobot_venv.sh), not by pytest: load an export with lerobot's
own LeRobotDataset and dump what it hands a trainer, for tests/test_lerobot_export.py to compare.

    .venv-lerobot/bin/python tests/lerobot_dump.py DATASET_DIR OUT.npz [DATASET_DIR OUT.npz ...]

OUT.npz: every feature stacked over frames as lerobot returns it (images as its float CHW tensors,
turned back into uint8 HWC) and `task` per frame; OUT.json beside it: meta/episodes' columns, fps,
the camera keys, the stats of `action` and the lerobot version. Imports nothing of ours.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(root: str, out: str) -> None:
    ds = LeRobotDataset(repo_id="franka-practice/export", root=root)
    items = [ds[i] for i in range(len(ds))]
    arrays: dict[str, np.ndarray] = {}
    for key, ft in ds.features.items():
        stacked = torch.stack([item[key] for item in items])
        if ft["dtype"] == "image":  # ToTensor's x / 255 in CHW; exact back to uint8 HWC
            stacked = (stacked * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        arrays[key] = stacked.numpy()
    arrays["task"] = np.array([item["task"] for item in items])
    np.savez(out, **arrays)
    episodes = ds.meta.episodes
    meta = {
        "lerobot": version("lerobot"),
        "fps": ds.fps,
        "num_frames": ds.num_frames,
        "num_episodes": ds.num_episodes,
        "camera_keys": ds.meta.camera_keys,
        "video_keys": ds.meta.video_keys,
        "episodes": {col: list(episodes[col]) for col in episodes.column_names},
        "action_stats": {k: np.asarray(v).tolist() for k, v in ds.meta.stats["action"].items()},
    }
    Path(out).with_suffix(".json").write_text(json.dumps(meta, default=str))


if __name__ == "__main__":
    args = sys.argv[1:]
    for i in range(0, len(args), 2):  # one process for every dataset: importing torch is the slow part
        main(args[i], args[i + 1])
