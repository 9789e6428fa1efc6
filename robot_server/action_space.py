"""The policy's action and proprioception spaces, and their mapping to safe arm targets.

Action in [-1, 1]^(d+1): translation (dx, dy, dz[, dyaw]) then gripper (> 0 closes). The
translation vector is norm-clipped to 1 and scaled to `max_translation_m` per step; the commanded
position is clipped to the workspace box (MEDALPP.md, "Observations and actions").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robot_server.arm import ArmState, ArmTarget
from robot_server.config import ActionConfig, WorkspaceConfig

GRIPPER_MAX_WIDTH = 0.08  # Franka hand, m


class InvalidAction(ValueError):
    pass


class ActionSpace:
    def __init__(self, action: ActionConfig, workspace: WorkspaceConfig) -> None:
        self.cfg = action
        self.low = np.asarray(workspace.low, dtype=np.float64)
        self.high = np.asarray(workspace.high, dtype=np.float64)

    @property
    def dim(self) -> int:
        return 5 if self.cfg.yaw else 4

    @property
    def proprio_dim(self) -> int:
        return 5 if self.cfg.yaw else 4

    def spec(self) -> dict[str, Any]:
        """What a checkpoint and the store record about actions, to refuse mismatched policies."""
        return {
            "dim": self.dim,
            "yaw": self.cfg.yaw,
            "max_translation_m": self.cfg.max_translation_m,
            "max_yaw_rad": self.cfg.max_yaw_rad,
            "layout": ["dx", "dy", "dz"] + (["dyaw"] if self.cfg.yaw else []) + ["gripper"],
            "workspace": {"low": self.low.tolist(), "high": self.high.tolist()},
        }

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.dim,):
            raise InvalidAction(f"action has {a.size} values, expected {self.dim}")
        if not np.all(np.isfinite(a)):
            raise InvalidAction("action contains NaN or inf")
        a = np.clip(a, -1.0, 1.0)
        norm = np.linalg.norm(a[:3])
        if norm > 1.0:
            a[:3] /= norm
        return a

    def target(self, action: np.ndarray, state: ArmState) -> ArmTarget:
        """The absolute target for a (clipped) action, relative to the measured pose."""
        a = self.clip_action(action)
        pos = state.position + a[:3] * self.cfg.max_translation_m
        pos = np.clip(pos, self.low, self.high)
        yaw = None
        if self.cfg.yaw:
            yaw = _wrap(state.yaw + a[3] * self.cfg.max_yaw_rad)
        return ArmTarget(position=pos, yaw=yaw, gripper_closed=bool(a[-1] > 0.0))

    def hold(self, state: ArmState) -> ArmTarget:
        return ArmTarget(
            position=np.clip(state.position, self.low, self.high),
            yaw=None,
            gripper_closed=state.gripper_closed,
        )

    def action_towards(
        self, delta_pos: np.ndarray, close_gripper: bool, delta_yaw: float = 0.0
    ) -> np.ndarray:
        """The normalised action that moves by `delta_pos` metres (for experts and teleop)."""
        t = np.asarray(delta_pos, dtype=np.float64) / self.cfg.max_translation_m
        norm = np.linalg.norm(t)
        if norm > 1.0:
            t /= norm
        parts = [t]
        if self.cfg.yaw:
            parts.append([np.clip(delta_yaw / self.cfg.max_yaw_rad, -1.0, 1.0)])
        parts.append([1.0 if close_gripper else -1.0])
        return np.concatenate(parts).astype(np.float32)

    def proprio(self, state: ArmState) -> np.ndarray:
        """End-effector position (and yaw) and gripper width, each normalised to [-1, 1]."""
        pos = 2.0 * (state.position - self.low) / (self.high - self.low) - 1.0
        parts = [np.clip(pos, -1.5, 1.5)]
        if self.cfg.yaw:
            parts.append([state.yaw / math.pi])
        parts.append([2.0 * state.gripper_width / GRIPPER_MAX_WIDTH - 1.0])
        return np.concatenate(parts).astype(np.float32)

    def contains(self, position: np.ndarray, margin: float = 0.0) -> bool:
        p = np.asarray(position)
        return bool(np.all(p >= self.low - margin) and np.all(p <= self.high + margin))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi
