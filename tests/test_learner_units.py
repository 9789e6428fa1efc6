"""MEDAL++ update pieces: rewards, mixup, REDQ target, BC schedule, augmentation, who trains what."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.agent import Agent, TorchBatch, executed_action
from learner.augment import random_shift
from learner.classifier import ClassifierLearner, classifier_reward, mixup
from learner.settings import Settings, linear_schedule
from policies.networks import PRESETS
from spec.step import CameraSpec, ObsSpec
from tests.learner_fakes import tiny_config

torch.set_num_threads(1)
TINY = PRESETS["tiny"]
SPEC = ObsSpec("pixels", (CameraSpec("wrist", 32, 32), CameraSpec("front", 32, 32)), 4)
ACTION = {"dim": 4}


def settings(setting: str = "sim", **learner) -> Settings:
    return Settings.from_config(tiny_config(Path(tempfile.gettempdir()), setting, **learner))


def agent(direction: str = "forward", setting: str = "sim", n: int = 4, **learner) -> Agent:
    torch.manual_seed(0)
    s = settings(setting, **learner)
    sizes = type(TINY)(TINY.hidden_dim, TINY.feature_dim, n, TINY.encoder_channels)
    return Agent(s.agent(direction), SPEC, ACTION, sizes)


def batch(n: int = 8) -> TorchBatch:
    g = torch.Generator().manual_seed(3)
    img = lambda: torch.randint(0, 256, (n, 32, 32, 6), dtype=torch.uint8, generator=g)  # noqa: E731
    return TorchBatch(img(), torch.randn(n, 4, generator=g), torch.rand(n, 4, generator=g) * 2 - 1,
                      torch.ones(n), img(), torch.randn(n, 4, generator=g))


def test_classifier_rewards_sign_and_range():
    logits = torch.tensor([-1e4, -30.0, -3.0, 0.0, 3.0, 30.0, 1e4])
    fwd = classifier_reward(logits, "log_p")
    assert bool((fwd <= 0).all()) and torch.isfinite(fwd).all()
    assert fwd[-1] == 0 and fwd[0] == pytest.approx(-23.03, abs=0.01)  # log(1e-10)
    assert fwd[3] == pytest.approx(torch.log(torch.tensor(0.5)).item())
    bwd = classifier_reward(logits, "neg_log_1mp")
    assert bool((bwd >= 0).all()) and torch.isfinite(bwd).all()
    assert bwd[0] == 0 and bwd[-1] == pytest.approx(23.03, abs=0.01)
    assert bool((fwd.diff() >= 0).all() and (bwd.diff() >= 0).all())  # both grow with the classifier score


def test_mixup_mixes_features_and_labels_alike():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    y = torch.tensor([1.0, 0.0, 0.0])
    lam = torch.tensor([0.25, 1.0, 0.5])
    perm = torch.tensor([1, 2, 0])
    hm, ym = mixup(h, y, lam, perm)
    torch.testing.assert_close(hm, torch.tensor([[0.25, 0.75], [0.0, 1.0], [1.5, 1.0]]))
    torch.testing.assert_close(ym, torch.tensor([0.25, 0.0, 0.5]))


def test_classifier_learns_and_reports_fresh_accuracy():
    torch.manual_seed(0)
    clf = ClassifierLearner("forward", SPEC, TINY, "log_p", ["wrist"])
    pos = torch.full((16, 32, 32, 6), 220, dtype=torch.uint8)
    neg = torch.full((16, 32, 32, 6), 30, dtype=torch.uint8)
    before = clf.evaluate_fresh(neg)
    assert set(before) == {"clf_forward/fresh_accuracy", "clf_forward/fresh_prob", "clf_forward/fresh_rows"}
    for _ in range(60):
        m = clf.train_step(pos, neg)
    assert m["clf_forward/train_accuracy"] == 1.0
    after = clf.evaluate_fresh(neg)
    assert after["clf_forward/fresh_prob"] < before["clf_forward/fresh_prob"]
    assert float(clf.reward(pos).mean()) > float(clf.reward(neg).mean())
    assert clf.steps == 60


def test_redq_target_uses_two_random_heads_and_their_min():
    a = agent(n=5)
    # Make target head i output the constant 10*i, whatever the input.
    with torch.no_grad():
        last = a.critic_target.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.arange(5.0).view(5, 1) * 10)
    b = batch()
    h = a.encoder(b.next_obs.float())
    r = torch.full((8,), 0.5)
    nd = torch.tensor([1.0] * 7 + [0.0])
    seen = set()
    for _ in range(40):
        y, heads = a.target_value(h, b.next_proprio, r, nd)
        assert len(heads) == 2 and len(set(heads.tolist())) == 2
        seen |= set(heads.tolist())
        expect = 0.5 + 0.99 * nd * 10 * min(heads.tolist())  # alpha = 0 for the forward agent
        torch.testing.assert_close(y, expect)
    assert seen == set(range(5))  # every head gets picked


def test_bc_lambda_schedule_at_the_breakpoints():
    s = settings("robot")
    f, b = s.forward.bc, s.backward.bc
    assert [linear_schedule(f, t) for t in (0, 2500, 26_250, 50_000, 90_000)] == pytest.approx(
        [1.0, 1.0, 0.55, 0.1, 0.1]
    )
    assert [linear_schedule(b, t) for t in (0, 2500, 50_000, 60_000)] == pytest.approx([1.0, 1.0, 0.25, 0.25])
    s = settings("sim")
    assert [linear_schedule(s.forward.bc, t) for t in (0, 10_000, 30_000, 50_000)] == pytest.approx(
        [1.0, 1.0, 0.55, 0.1]
    )
    assert linear_schedule(s.backward.bc, 0) == 0.0 and linear_schedule(s.backward.bc, 10**6) == 0.0
    assert settings("sim", bc_forward=(0.5, 0.0, 0, 10)).forward.bc == (0.5, 0.0, 0, 10)


def test_medalpp_values_per_setting():
    r = settings("robot", demo_rows=None, seed_steps=None, batch_size=256)
    s = settings("sim", demo_rows=None, seed_steps=None, batch_size=256)
    assert (r.demo_rows, r.seed_steps, r.forward.utd, r.clf_forward_every, r.clf_backward_every) == (64, 2000, 1, 1000, 500)
    assert (s.demo_rows, s.seed_steps, s.forward.utd, s.clf_forward_every, s.clf_backward_every) == (32, 10_000, 2, 1000, 100)
    assert r.clf_forward_cameras == ["wrist"] and s.clf_forward_cameras is None
    assert not r.forward.learn_alpha and not r.backward.learn_alpha and not s.forward.learn_alpha
    assert s.backward.learn_alpha and s.backward.alpha_init == 1.0
    assert (r.backward_reward, s.backward_reward) == ("log_p", "neg_log_1mp")
    with pytest.raises(ValueError, match="demo_rows"):
        settings("sim", batch_size=16, demo_rows=16)


def test_random_shift_keeps_shape_and_shifts_content():
    x = torch.arange(2 * 12 * 12 * 3, dtype=torch.float32).view(2, 12, 12, 3)  # [B, H, W, C]
    y = random_shift(x, 4, shifts=torch.tensor([[2, 0], [-1, -3]]))
    assert y.shape == x.shape
    torch.testing.assert_close(y[0, :, :-2], x[0, :, 2:])  # content moved left by 2
    torch.testing.assert_close(y[0, :, -2:], x[0, :, -1:].expand(12, 2, 3))  # replicate border
    torch.testing.assert_close(y[1, 3:, 1:], x[1, :-3, :-1])
    r = random_shift(x.repeat(8, 1, 1, 1))
    assert r.shape == (16, 12, 12, 3) and not torch.equal(r, x.repeat(8, 1, 1, 1))
    # Every output is an integer shift of its input within +-4 px: it equals one of the 81 candidates.
    chw = x.repeat(8, 1, 1, 1).permute(0, 3, 1, 2)
    padded = torch.nn.functional.pad(chw, (4, 4, 4, 4), mode="replicate").permute(0, 2, 3, 1)
    for i in range(16):
        assert any(torch.equal(r[i], padded[i, dy:dy + 12, dx:dx + 12]) for dy in range(9) for dx in range(9))


def test_encoder_is_trained_by_the_critic_only():
    a = agent()
    b = batch()
    enc0 = [p.detach().clone() for p in a.encoder.parameters()]
    crit0 = [p.detach().clone() for p in a.critic.parameters()]
    h = a.encoder(a.augment(b.obs))
    a.update_actor(h.detach(), b.proprio, None)
    assert all(torch.equal(p, q) for p, q in zip(a.encoder.parameters(), enc0, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a.critic.parameters(), crit0, strict=True))
    tgt0 = [p.detach().clone() for p in a.critic_target.parameters()]
    with torch.no_grad():
        nh = a.encoder(a.augment(b.next_obs))
    a.update_critic(h, b.proprio, b.action, torch.zeros(8), b.not_done, nh, b.next_proprio)
    assert not all(torch.equal(p, q) for p, q in zip(a.encoder.parameters(), enc0, strict=True))
    # Soft target update: target moved by tau = 0.005 of the way towards the new critic.
    for t, t0, c in zip(a.critic_target.parameters(), tgt0, a.critic.parameters(), strict=True):
        torch.testing.assert_close(t, t0 + 0.005 * (c.detach() - t0))


def test_update_runs_utd_critic_steps_then_one_actor_step_with_bc():
    a = agent(setting="sim")  # utd 2
    demo_calls = []

    def demo():
        demo_calls.append(1)
        return batch(4)

    m = a.update(lambda: batch(), lambda s: -torch.ones(len(s)), demo)
    assert (a.critic_updates, a.updates) == (2, 1)
    assert m["reward_mean"] == -1.0 and "bc_loss" in m and m["bc_lambda"] == 1.0
    assert "actor_loss" not in m  # lambda = 1: pure behaviour cloning, the RL term has zero weight
    assert demo_calls == [1]


def test_alpha_fixed_zero_or_learned():
    fwd = agent("forward", "sim")
    assert fwd.alpha == 0.0 and fwd.alpha_opt is None
    bwd = agent("backward", "sim")
    assert bwd.alpha == 1.0 and bwd.target_entropy == -2.0  # -|A|/2 (MEDALPP.md, as MEDAL's released agents)
    b = batch()
    bwd.update(lambda: b, lambda s: torch.zeros(len(s)), None)
    assert bwd.alpha != 1.0
    assert agent("backward", "robot").alpha == 0.0


def test_q_only_ever_sees_the_executed_clipped_action():
    # The daemon executes clip_action(a): translation norm-clipped to the unit ball. The critic is
    # fitted on those stored actions, so a′ in the target and the actor's action must be clipped too.
    a = agent(n=4)
    with torch.no_grad():  # push every action corner-wards: |translation| ≈ √3 before the clip
        last = a.actor.policy[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([5.0, 5.0, -5.0, 5.0, -5.0, -5.0, -5.0, -5.0]))
    seen: list[torch.Tensor] = []

    def grab(_module, args):
        seen.append(args[0][..., -4:-1].detach().norm(dim=-1))  # the action's translation columns

    hooks = [c.layers[0].register_forward_pre_hook(grab) for c in (a.critic, a.critic_target)]
    b = batch()
    b.action = executed_action(b.action)  # stored actions are the executed ones
    a.settings = dataclasses.replace(a.settings, bc=(0.5, 0.5, 0, 0))  # actor loss has its RL term
    a.update(lambda: b, lambda s: torch.zeros(len(s)), lambda: batch(4))
    for h in hooks:
        h.remove()
    assert len(seen) >= 5  # 2 × (target + critic) + the actor's Q
    assert max(float(n.max()) for n in seen) <= 1.0 + 1e-5
    assert max(float(n.max()) for n in seen) > 0.99  # the clip scaled the corners onto the sphere


def test_executed_action_matches_the_daemons_clip_and_passes_gradients():
    from spec.config import ActionConfig, WorkspaceConfig
    from spec.step import ActionSpace

    space = ActionSpace(ActionConfig(), WorkspaceConfig())
    g = torch.Generator().manual_seed(1)
    raw = torch.rand(64, 4, generator=g) * 3 - 1.5
    want = torch.tensor(np.stack([space.clip_action(r.numpy()) for r in raw]), dtype=torch.float32)
    torch.testing.assert_close(executed_action(raw), want)
    x = (torch.rand(16, 4, generator=g) * 1.8 - 0.9).requires_grad_()
    executed_action(x).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
