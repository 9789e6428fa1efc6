"""Check one step dict against the store's array specs before it is buffered."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from replay.schema import ArraySpec


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"{v.dtype} array of shape {v.shape}"
    return f"{type(v).__name__} {v!r}"[:120]


class StepValidator:
    """Turns a step dict into {key: value ready for the buffer}, or raises ValueError naming the bad key."""

    def __init__(self, specs: dict[str, ArraySpec]) -> None:
        self.specs = specs
        self.last_timestamp = -math.inf

    def check(self, step: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(step, Mapping):
            raise ValueError(f"a step must be a dict of arrays keyed {sorted(self.specs)}, got {_describe(step)}")
        missing = [k for k in self.specs if k not in step]
        unknown = [k for k in step if k not in self.specs]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {sorted(unknown)}")
            raise ValueError(f"step keys do not match the store: {'; '.join(parts)} (expected {list(self.specs)})")
        out: dict[str, Any] = {}
        for key, spec in self.specs.items():
            v = step[key]
            if spec.is_image:
                out[key] = self._image(key, spec, v)
            elif key == "timestamp":
                out[key] = self._timestamp(v)
            elif key == "policy_version":
                out[key] = self._policy_version(v)
            elif key == "intervention":
                if not isinstance(v, bool | np.bool_):
                    raise ValueError(f"step['intervention'] must be a bool, got {_describe(v)}")
                out[key] = bool(v)
            else:
                out[key] = self._vector(key, spec, v)
        return out

    def accepted(self, values: dict[str, Any]) -> None:
        """Call once the step is taken: later steps may not go back in time."""
        self.last_timestamp = values["timestamp"]

    @staticmethod
    def _image(key: str, spec: ArraySpec, v: Any) -> np.ndarray:
        if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.shape != spec.shape:
            raise ValueError(f"step[{key!r}] must be a uint8 array of shape {spec.shape}, got {_describe(v)}")
        return v

    @staticmethod
    def _vector(key: str, spec: ArraySpec, v: Any) -> np.ndarray:
        arr = np.asarray(v)
        if arr.dtype.kind not in "fiu" or arr.shape != spec.shape:
            raise ValueError(f"step[{key!r}] must be a float array of shape {spec.shape}, got {_describe(v)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"step[{key!r}] contains NaN or infinity: {arr.tolist()}")
        return arr

    def _timestamp(self, v: Any) -> float:
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError(f"step['timestamp'] must be a float (host monotonic seconds), got {_describe(v)}")
        t = float(v)
        if not math.isfinite(t):
            raise ValueError(f"step['timestamp'] must be finite, got {t}")
        if t < self.last_timestamp:
            raise ValueError(f"step['timestamp'] {t} is earlier than the previous step's {self.last_timestamp}")
        return t

    @staticmethod
    def _policy_version(v: Any) -> int:
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise ValueError(f"step['policy_version'] must be an int (-1 = no learned policy), got {_describe(v)}")
        if not -1 <= int(v) <= np.iinfo(np.int32).max:
            raise ValueError(f"step['policy_version'] must be >= -1 and fit int32, got {int(v)}")
        return int(v)
