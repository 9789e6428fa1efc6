"""Actions become safe targets: norm-clipped, scaled to 2 cm, never outside the workspace box."""

from __future__ import annotations

import numpy as np
import pytest

from arm.base import ArmMode, ArmState
from spec.config import ActionConfig, WorkspaceConfig
from spec.step import ActionSpace, InvalidAction

BOX = WorkspaceConfig(low=[0.3, -0.2, 0.05], high=[0.6, 0.2, 0.3])


def state_at(pos, yaw=0.0, width=0.08) -> ArmState:
    return ArmState(position=np.asarray(pos, float), quaternion=np.array([1.0, 0, 0, 0]), yaw=yaw,
                    gripper_width=width, joints=np.zeros(7), external_force=np.zeros(6), mode=ArmMode.READY,
                    timestamp=0.0)


def test_random_actions_from_anywhere_never_leave_the_box():
    space = ActionSpace(ActionConfig(), BOX)
    rng = np.random.default_rng(0)
    pos = np.array([0.45, 0.0, 0.2])
    for _ in range(5000):
        action = rng.uniform(-3, 3, space.dim)  # even out-of-range policy outputs
        t = space.target(action, state_at(pos))
        assert np.all(t.position >= BOX.low) and np.all(t.position <= BOX.high)
        step = np.linalg.norm(t.position - np.clip(pos, BOX.low, BOX.high))
        assert step <= 0.02 + 1e-9
        pos = t.position
    # and from a pose outside the box (e.g. after a human moved the arm), the target is inside it
    t = space.target(np.zeros(space.dim), state_at([0.9, 0.5, 0.6]))
    assert np.all(t.position <= BOX.high)


def test_translation_is_norm_clipped_and_gripper_sign_closes():
    space = ActionSpace(ActionConfig(), BOX)
    t = space.target(np.array([1.0, 1.0, 0.0, 0.5]), state_at([0.45, 0.0, 0.2]))
    assert np.isclose(np.linalg.norm(t.position - [0.45, 0.0, 0.2]), 0.02)
    assert t.gripper_closed and t.yaw is None
    assert not space.target(np.array([0, 0, 0, -0.1]), state_at([0.45, 0, 0.2])).gripper_closed


def test_yaw_is_limited_and_wrapped():
    space = ActionSpace(ActionConfig(yaw=True), BOX)
    assert space.dim == 5 and space.proprio_dim == 5
    t = space.target(np.array([0, 0, 0, 1.0, -1]), state_at([0.45, 0, 0.2], yaw=3.1))
    assert -np.pi <= t.yaw <= np.pi and np.isclose(t.yaw, 3.1 + 0.2 - 2 * np.pi)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0, 0]), np.array([0.0, 0.0]), np.array([np.inf, 0, 0, 1])])
def test_malformed_actions_are_refused(bad):
    with pytest.raises(InvalidAction):
        ActionSpace(ActionConfig(), BOX).target(bad, state_at([0.45, 0, 0.2]))


def test_expert_actions_round_trip_and_proprio_is_normalised():
    space = ActionSpace(ActionConfig(), BOX)
    a = space.action_towards(np.array([0.01, 0.0, -0.005]), close_gripper=True)
    t = space.target(a, state_at([0.45, 0.0, 0.2]))
    np.testing.assert_allclose(t.position, [0.46, 0.0, 0.195], atol=1e-7)
    p = space.proprio(state_at(BOX.low, width=0.0))
    np.testing.assert_allclose(p, [-1, -1, -1, -1], atol=1e-6)
