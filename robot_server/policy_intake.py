"""The daemon's side of `PUT /policies/{direction}`: validate, stage, and wait for the swap.

Runs on an API worker thread. Validation (format, hash, specs, version, smoke inference) is in
policies.intake; this module serialises concurrent uploads, so "newer than the active version"
holds, and keeps a copy of every accepted checkpoint for the next daemon start.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from policies.intake import CheckpointRejected, validate_checkpoint
from robot_server.policy_slots import ActivePolicy

_lock = threading.Lock()


def accept(daemon, direction: str, raw: bytes, persist: bool = True) -> dict[str, Any]:
    received = time.monotonic()
    with _lock:
        active = daemon.policies.newest_version(direction)
        meta = daemon.store_meta  # the step as written into the store
        validated = validate_checkpoint(raw, direction, meta.obs_spec(), meta.action_space, active)
        policy = ActivePolicy(
            direction=direction,
            version=validated.version,
            runner=validated.runner,
            meta=validated.metadata,
            received_at=received,
        )
        try:
            daemon.policies.stage(policy, raw if persist else None)
        except ValueError as exc:
            raise CheckpointRejected(409, str(exc)) from None
    # The swap happens at the start of the next tick; waiting for it lets the learner know.
    active_now = daemon.loop.running and daemon.policies.wait_active(direction, validated.version, timeout=1.0)
    p = daemon.policies.active(direction)
    return {
        "direction": direction,
        "version": validated.version,
        "active": bool(active_now),
        "training_step": validated.checkpoint.step,
        "mode": validated.checkpoint.obs_spec.mode,
        "swap_latency_ms": None
        if (p is None or p.version != validated.version or p.activated_at is None)
        else round((p.activated_at - received) * 1e3, 2),
    }
