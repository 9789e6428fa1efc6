"""Policy networks, specs and the CPU runner (tiny sizes, 32x32 views)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from policies.checkpoint import PolicyCheckpoint
from policies.networks import (
    PRESETS,
    Actor,
    Classifier,
    Critic,
    NetworkSizes,
    PixelEncoder,
    Policy,
)
from policies.runner import PolicyRunner
from spec.config import NetworkConfig
from spec.step import ActionSpace, CameraSpec, ObservationError, ObsSpec, action_spec_difference
from tests.learner_fakes import tiny_config

torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on a busy CI box
TINY = PRESETS["tiny"]


def pixel_spec(size: int = 32) -> ObsSpec:
    return ObsSpec("pixels", (CameraSpec("wrist", size, size, None), CameraSpec("front", size, size, None)), 4)


def test_presets_and_overrides_follow_medalpp():
    assert NetworkSizes.from_config(NetworkConfig(preset="robot")) == NetworkSizes(1024, 256, 5, 32)
    assert NetworkSizes.from_config(NetworkConfig(preset="sim")) == NetworkSizes(256, 50, 10, 32)
    s = NetworkSizes.from_config(NetworkConfig(preset="sim", hidden_dim=64, num_critics=3))
    assert (s.hidden_dim, s.feature_dim, s.num_critics) == (64, 50, 3)


def test_encoder_repr_dim_for_robot_views():
    # 100x100 -> stride-2 conv 49 -> three stride-1 convs 43: 32*43*43 features.
    enc = PixelEncoder(6, (100, 100), 32)
    assert enc.repr_dim == 32 * 43 * 43
    out = enc(torch.zeros(1, 100, 100, 6, dtype=torch.uint8))  # channels last, as stored
    assert out.shape == (1, enc.repr_dim)


def test_init_orthogonal_convs_and_xavier_linears():
    enc = PixelEncoder(6, (32, 32), 8)
    w = enc.convs[0].weight.detach().reshape(8, -1)  # 8 rows, 54 columns: orthogonal rows
    gain = nn.init.calculate_gain("relu")
    assert torch.allclose(w @ w.T, gain**2 * torch.eye(8), atol=1e-5)
    actor = Actor(100, 4, 4, 16, 32)
    bound = (6 / (100 + 16)) ** 0.5
    first = actor.trunk[0].weight
    assert first.abs().max() <= bound and first.abs().max() > 0.8 * bound
    assert torch.all(actor.trunk[0].bias == 0)


def test_ensemble_batched_output_equals_per_head_modules():
    torch.manual_seed(0)
    n, repr_dim, p, a, f, hid = 3, 20, 4, 4, 8, 16
    critic = Critic(repr_dim, p, a, f, hid, n)
    h, prop, act = torch.randn(5, repr_dim), torch.randn(5, p), torch.rand(5, a) * 2 - 1
    q = critic(h, prop, act)
    assert q.shape == (n, 5, 1)
    for i in range(n):
        trunk = nn.Sequential(nn.Linear(repr_dim, f), nn.LayerNorm(f), nn.Tanh())
        trunk[0].weight.data = critic.trunk_linear.weight[i].detach().clone()
        trunk[0].bias.data = critic.trunk_linear.bias[i].detach().clone()
        trunk[1].weight.data = critic.trunk_norm.weight[i].detach().clone()
        trunk[1].bias.data = critic.trunk_norm.bias[i].detach().clone()
        layers = []
        for j, lay in enumerate(critic.layers):
            lin = nn.Linear(lay.in_features, lay.out_features)
            lin.weight.data = lay.weight[i].detach().clone()
            lin.bias.data = lay.bias[i].detach().clone()
            layers.append(lin)
            if j < len(critic.layers) - 1:
                layers.append(nn.ReLU())
        head = nn.Sequential(*layers)
        expect = head(torch.cat([trunk(h), prop, act], -1))
        torch.testing.assert_close(q[i], expect, rtol=1e-5, atol=1e-5)
    # A subset of heads gives exactly those heads' values.
    sub = critic(h, prop, act, heads=torch.tensor([2, 0]))
    torch.testing.assert_close(sub, q[[2, 0]])
    assert len(critic.layers) == 5  # 4 hidden layers, then the output


def test_actor_is_squashed_and_log_prob_consistent():
    torch.manual_seed(1)
    actor = Actor(10, 4, 3, 8, 16)
    dist = actor(torch.randn(64, 10), torch.randn(64, 4))
    a, logp = dist.rsample()
    assert a.shape == (64, 3) and bool((a.abs() <= 1).all())
    # atanh(tanh(u)) loses precision near saturation: compare with a float32-sized tolerance.
    torch.testing.assert_close(dist.log_prob(a), logp, rtol=1e-2, atol=5e-2)
    assert bool((dist.log_std >= -20).all() and (dist.log_std <= 2).all())
    # Demo actions at exactly +-1 are clipped, so their log-probability stays finite.
    edge = torch.tensor([[1.0, -1.0, 0.0]]).expand(64, 3)
    assert torch.isfinite(dist.log_prob(edge)).all()


def test_classifier_is_spectral_normed_and_forward_sees_only_its_views():
    spec = pixel_spec()
    clf = Classifier(spec, TINY, cameras=["wrist"])
    linear_like = [m for m in clf.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(linear_like) == 5  # 2 convolutions, 3 linear layers
    assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in linear_like)
    clf.eval()
    x = torch.randint(0, 256, (2, 32, 32, 6), dtype=torch.uint8)
    y = x.clone()
    y[..., 3:] = 255 - y[..., 3:]  # change the front view only
    torch.testing.assert_close(clf(x), clf(y))
    z = x.clone()
    z[..., :3] = 255 - z[..., :3]  # change the wrist view
    assert not torch.allclose(clf(x), clf(z))
    with pytest.raises(ValueError, match="subset"):
        Classifier(spec, TINY, cameras=["side"])


def test_obs_spec_json_round_trip_and_compatibility():
    cfg = tiny_config_path()
    spec = ObsSpec.from_config(cfg, "pixels", state_dim=6)
    assert ObsSpec.from_json(spec.to_json()) == spec
    assert spec.channels == 6 and spec.camera_names == ["wrist", "front"]
    assert spec.compatible(spec) is None
    with pytest.raises(ValueError, match="same output size"):
        ObsSpec("pixels", (CameraSpec("wrist", 16, 16), CameraSpec("front", 32, 32)), 4)
    why = spec.compatible(ObsSpec("pixels", (spec.cameras[1], spec.cameras[0]), 4))
    assert why and "obs.cameras" in why
    why = spec.compatible(ObsSpec("pixels", spec.cameras[:1], 4))
    assert why == "obs.cameras: robot provides ['wrist', 'front'], policy needs ['wrist']"
    why = ObsSpec("pixels", (CameraSpec("wrist", 16, 16, None),), 4).compatible(
        ObsSpec("pixels", (CameraSpec("wrist", 32, 32, None),), 4)
    )
    assert why == "obs.cameras[wrist].height: robot provides 16, policy needs 32"
    # A sim daemon provides state too, so a state policy fits it; a robot without state does not.
    state_policy = ObsSpec("state", (), 4, state_dim=6)
    assert spec.compatible(state_policy) is None
    assert "state_dim" in (ObsSpec.from_config(cfg, "pixels").compatible(state_policy) or "")


def tiny_config_path():
    import tempfile
    from pathlib import Path

    return tiny_config(Path(tempfile.gettempdir()))


def test_action_spec_difference_names_the_field():
    cfg = tiny_config_path()
    spec = ActionSpace(cfg.action, cfg.workspace).spec()
    import json

    assert action_spec_difference(spec, json.loads(json.dumps(spec))) is None
    other = dict(spec, max_translation_m=0.01)
    assert "action.max_translation_m" in (action_spec_difference(spec, other) or "")


def make_runner(spec: ObsSpec, seed: int = 0) -> PolicyRunner:
    torch.manual_seed(seed)
    policy = Policy(spec, 4, TINY)
    ckpt = PolicyCheckpoint.from_policy(policy, "forward", 1, spec, {"dim": 4}, TINY)
    return PolicyRunner(ckpt, num_threads=None, seed=seed)


def test_runner_output_shape_range_and_determinism():
    spec = pixel_spec()
    runner = make_runner(spec)
    rng = np.random.default_rng(0)
    obs = {
        "obs/wrist": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "obs/front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "obs/proprio": np.zeros(4, np.float32),
    }
    a = runner.act(obs)
    assert a.shape == (4,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    m1, m2 = runner.act(obs, deterministic=True), runner.act(obs, deterministic=True)
    np.testing.assert_array_equal(m1, m2)
    # The runner sees exactly what the training policy sees (stacking order wrist, front).
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([obs["obs/wrist"], obs["obs/front"]], -1))[None]
        ref = runner.checkpoint.build_policy()(x, torch.zeros(1, 4), deterministic=True)[0].numpy()
    np.testing.assert_allclose(m1, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ObservationError, match="obs/front"):
        runner.act({"obs/wrist": obs["obs/wrist"], "obs/proprio": obs["obs/proprio"]})
    with pytest.raises(ObservationError, match=r"obs/wrist.*32, 32, 3"):
        runner.act(obs | {"obs/wrist": np.zeros((16, 16, 3), np.uint8)})


def test_state_mode_runner_uses_state_vector():
    spec = ObsSpec("state", (), 4, state_dim=6)
    runner = make_runner(spec)
    obs = {"obs/state": np.ones(6, np.float32), "obs/proprio": np.zeros(4, np.float32)}
    a = runner.act(obs, deterministic=True)
    assert a.shape == (4,)
    b = runner.act(obs | {"obs/state": -np.ones(6, np.float32)}, deterministic=True)
    assert not np.allclose(a, b)
