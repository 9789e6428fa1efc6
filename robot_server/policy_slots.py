"""The active forward/backward policies, and how a new one is swapped in between two ticks.

Checkpoints are validated on the API thread (policies.intake); the control thread only swaps a
reference at the start of a tick, so a push never costs a tick.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spec.direction import DIRECTIONS
from spec.files import atomic_write_bytes

log = logging.getLogger(__name__)



class Runner(Protocol):
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray: ...


@dataclass
class ActivePolicy:
    direction: str
    version: int
    runner: Runner
    meta: dict[str, Any]
    received_at: float
    activated_at: float | None = None


class PolicySlots:
    def __init__(self, checkpoint_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, ActivePolicy | None] = dict.fromkeys(DIRECTIONS)
        self._staged: dict[str, ActivePolicy | None] = dict.fromkeys(DIRECTIONS)
        self.swaps = 0
        self.rejected = 0
        self.checkpoint_dir = checkpoint_dir

    # --- API thread ---
    def newest_version(self, direction: str) -> int | None:
        """The version a new checkpoint must beat: staged (not yet swapped) or active."""
        with self._lock:
            staged, active = self._staged[direction], self._active[direction]
        for p in (staged, active):
            if p is not None:
                return p.version
        return None

    def stage(self, policy: ActivePolicy, raw: bytes | None = None) -> None:
        with self._lock:
            current = self._staged[policy.direction] or self._active[policy.direction]
            if current is not None and policy.version <= current.version:
                raise ValueError(f"version {policy.version} is not newer than {current.version}")
            self._staged[policy.direction] = policy
        if raw is not None and self.checkpoint_dir is not None:
            self._persist(policy, raw)

    def wait_active(self, direction: str, version: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self._active[direction]
            if p is not None and p.version >= version:
                return True
            time.sleep(0.005)
        return False

    # --- control thread ---
    def swap_staged(self) -> list[ActivePolicy]:
        """Activate staged policies; called at the start of a tick."""
        if not any(self._staged.values()):
            return []
        swapped = []
        with self._lock:
            for d in DIRECTIONS:
                p = self._staged[d]
                if p is not None:
                    p.activated_at = time.monotonic()
                    self._active[d] = p
                    self._staged[d] = None
                    swapped.append(p)
                    self.swaps += 1
        return swapped

    def active(self, direction: str) -> ActivePolicy | None:
        return self._active[direction]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in DIRECTIONS:
            p = self._active[d]
            out[d] = None if p is None else {
                "version": p.version,
                "training_step": p.meta.get("step"),
                "received_at": p.received_at,
                "swap_latency_ms": None
                if p.activated_at is None
                else round((p.activated_at - p.received_at) * 1e3, 2),
            }
        out["swaps"] = self.swaps
        out["rejected"] = self.rejected
        return out

    # --- persistence: a restarted daemon keeps acting with the last accepted policies ---
    def _persist(self, policy: ActivePolicy, raw: bytes) -> None:
        assert self.checkpoint_dir is not None
        try:
            d = self.checkpoint_dir
            atomic_write_bytes(d / f"{policy.direction}.safetensors", raw, fsync=True)
            info = {"version": policy.version, "saved_at": time.time()}
            atomic_write_bytes(d / f"{policy.direction}.json", json.dumps(info).encode(), fsync=True)
        except OSError as exc:  # keeping the policy running matters more than its copy on disk
            log.warning("could not save %s checkpoint: %s", policy.direction, exc)

    def stored_checkpoints(self) -> dict[str, bytes]:
        if self.checkpoint_dir is None:
            return {}
        out = {}
        for d in DIRECTIONS:
            path = self.checkpoint_dir / f"{d}.safetensors"
            if path.is_file():
                out[d] = path.read_bytes()
        return out
