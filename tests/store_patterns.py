"""Synthetic steps with a recognisable per-step pattern, to check that what is read is what was written.

Every value is a function of (episode seed, step index), so a reader can tell a step that was never
written (zeros), a step from the wrong place, and a torn chunk apart from good data (the store's
crash and concurrency tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from replay.schema import StoreMeta, array_specs


def pattern_meta(
    cameras: tuple[tuple[str, int, int], ...] = (("front", 100, 100), ("wrist", 100, 100)),
    proprio_dim: int = 4,
    action_dim: int = 4,
    state_dim: int | None = None,
    robot: str = "synthetic",
) -> StoreMeta:
    return StoreMeta(
        robot=robot,
        rate_hz=10.0,
        cameras=[{"name": n, "height": h, "width": w} for n, h, w in cameras],
        action_space={"dim": action_dim},
        proprio_dim=proprio_dim,
        state_dim=state_dim,
    )


def _image_base(shape: tuple[int, ...]) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.int64) % 251).reshape(shape)


def _expected(meta: dict[str, Any], seed: int, steps: np.ndarray) -> dict[str, np.ndarray]:
    """The pattern values of `steps` for every key, vectorised over steps."""
    out: dict[str, np.ndarray] = {}
    t = steps.astype(np.int64)
    for ci, (key, spec) in enumerate(array_specs(meta).items()):
        if spec.is_image:
            shift = (7 * t + 31 * seed + 3 * ci)[:, None, None, None]
            out[key] = ((_image_base(spec.shape)[None] + shift) % 256).astype(np.uint8)
        elif key in ("obs/proprio", "obs/state", "action"):
            j = np.arange(spec.shape[0], dtype=np.float64)[None, :]
            sign = -1.0 if key == "action" else 1.0
            offset = 0.5 if key == "obs/state" else 0.25
            out[key] = (sign * (seed * 1000.0 + t[:, None] + offset * j)).astype(np.float32)
        elif key == "timestamp":
            out[key] = seed * 10000.0 + t * 0.1
        elif key == "policy_version":
            out[key] = ((t + seed) % 5 - 1).astype(np.int32)
        elif key == "intervention":
            out[key] = (t + seed) % 7 == 0
    return out


def pattern_step(meta: dict[str, Any], seed: int, t: int) -> dict[str, Any]:
    """Step `t` of the episode with pattern `seed`, as a dict for EpisodeWriter.append."""
    exp = _expected(meta, seed, np.array([t]))
    step: dict[str, Any] = {k: v[0] for k, v in exp.items()}
    step["timestamp"] = float(step["timestamp"])
    step["policy_version"] = int(step["policy_version"])
    step["intervention"] = bool(step["intervention"])
    return step


def pattern_mismatches(meta: dict[str, Any], seed: int, data: dict[str, np.ndarray], start: int = 0) -> list[str]:
    """Describe every (key, step) of `data` (steps start, start+1, ...) that is not the pattern."""
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        return [f"arrays have different lengths: {lengths}"]
    n = next(iter(lengths.values()), 0)
    if n == 0:
        return []
    exp = _expected(meta, seed, np.arange(start, start + n))
    problems = []
    for key, got in data.items():
        want = exp[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(f"{key}: got {got.dtype}{got.shape}, want {want.dtype}{want.shape}")
            continue
        ok = (got == want).reshape(n, -1).all(axis=1)
        for i in np.flatnonzero(~ok)[:5]:
            zero = " (all zeros: never written)" if not got[i].any() else ""
            problems.append(f"{key} step {start + i} differs from the pattern{zero}")
    return problems
