"""The learner's own training checkpoint, so `learner run` resumes after a restart.

Layout under `<run_dir>/state/`: one directory per save (`000042/`: weights.safetensors,
optim.pt, counters.json) and a `LATEST` file naming the complete one. A save writes a fresh
directory, fsyncs it, then replaces `LATEST` atomically (temp file + os.replace), so a kill at any
instant leaves the previous save intact. Weights are safetensors; optimiser states are
torch.save'd and read back with `torch.load(weights_only=True)` (no arbitrary unpickling).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spec.files import atomic_write_bytes, fsync_file

WEIGHTS, OPTIM, COUNTERS, LATEST = "weights.safetensors", "optim.pt", "counters.json", "LATEST"
KEEP = 2


class StateError(RuntimeError):
    pass


def save_state(
    root: Path,
    modules: dict[str, nn.Module],
    tensors: dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    counters: dict[str, Any],
) -> Path:
    """Write a complete save and point LATEST at it; returns its directory."""
    root.mkdir(parents=True, exist_ok=True)
    serial = _latest_serial(root) + 1
    name = f"{serial:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {f"{m}.{k}": v.detach().cpu().contiguous().clone() for m, mod in modules.items()
               for k, v in mod.state_dict().items()}
    weights |= {k: v.detach().cpu().contiguous().clone().reshape(v.shape) for k, v in tensors.items()}
    save_file(weights, str(tmp / WEIGHTS))
    torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp / OPTIM)
    (tmp / COUNTERS).write_text(json.dumps(counters, indent=1, sort_keys=True))
    for f in (WEIGHTS, OPTIM, COUNTERS):
        fsync_file(tmp / f)
    final = root / name
    os.replace(tmp, final)
    atomic_write_bytes(root / LATEST, name.encode(), fsync=True)
    for old in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _latest_serial(root: Path) -> int:
    names = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return max(names, default=0)


def latest(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    d = root / pointer.read_text().strip()
    return d if (d / COUNTERS).is_file() else None


def load_state(
    directory: Path,
    modules: dict[str, nn.Module],
    tensors: dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    device: torch.device,
) -> dict[str, Any]:
    """Load a save into existing modules/tensors/optimisers (strict); returns the counters."""
    try:
        weights = load_file(str(directory / WEIGHTS), device=str(device))
        optim = torch.load(directory / OPTIM, map_location=device, weights_only=True)
        counters = json.loads((directory / COUNTERS).read_text())
    except Exception as exc:
        raise StateError(f"training state {directory} is unreadable: {exc}") from exc
    for m, mod in modules.items():
        prefix = f"{m}."
        sd = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            mod.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise StateError(
                f"training state {directory} does not fit module {m!r} (network sizes or spec changed?): {exc}"
            ) from None
    for k, t in tensors.items():
        if k not in weights:
            raise StateError(f"training state {directory} has no tensor {k!r}")
        with torch.no_grad():
            t.copy_(weights[k].reshape(t.shape))
    missing = sorted(set(optimizers) - set(optim))
    if missing:
        raise StateError(f"training state {directory} has no optimiser state for {missing}")
    for k, o in optimizers.items():
        o.load_state_dict(optim[k])
    return counters
