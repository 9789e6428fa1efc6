"""MEDAL++ networks (MEDALPP.md, "Networks"): DrQ-v2 encoder, tanh-Gaussian actor, a REDQ critic
ensemble evaluated as stacked-weight matrix products, and spectral-normed classifiers.

A state-mode variant (`--state`, the original MEDAL) swaps the conv encoder for an identity trunk
on the low-dimensional state vector, so the actor and critic code is the same in both modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from spec.step import ObsSpec

if TYPE_CHECKING:
    from spec.config import NetworkConfig

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
# Demo actions at exactly +-1 have infinite pre-tanh values; MEDALPP.md clips them here.
ACTION_CLIP = 1.0 - 1e-7


@dataclass(frozen=True)
class NetworkSizes:
    hidden_dim: int
    feature_dim: int
    num_critics: int
    encoder_channels: int = 32
    target_subset: int = 2  # REDQ: target heads drawn per critic update
    critic_layers: int = 4  # hidden layers of each Q head (MEDALPP.md: 4)
    # LayerNorm after each hidden layer of the Q heads (RLPD, Ball et al. 2023): bounds how far Q
    # extrapolates to actions no stored transition has, which an actor without BC exploits.
    critic_layer_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "feature_dim", "encoder_channels", "critic_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"network {name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.target_subset <= self.num_critics:
            raise ValueError(f"target_subset {self.target_subset} must be in [1, num_critics={self.num_critics}]")

    @classmethod
    def from_config(cls, net: NetworkConfig) -> NetworkSizes:
        base = PRESETS[net.preset]
        return cls(
            hidden_dim=net.hidden_dim or base.hidden_dim,
            feature_dim=net.feature_dim or base.feature_dim,
            num_critics=net.num_critics or base.num_critics,
            encoder_channels=net.encoder_channels or base.encoder_channels,
            target_subset=base.target_subset,
            critic_layers=base.critic_layers,
            critic_layer_norm=base.critic_layer_norm,
        )

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSizes:
        return cls(**{k: bool(v) if k == "critic_layer_norm" else int(v) for k, v in d.items()})


PRESETS: dict[str, NetworkSizes] = {
    "robot": NetworkSizes(hidden_dim=1024, feature_dim=256, num_critics=5),
    "sim": NetworkSizes(hidden_dim=256, feature_dim=50, num_critics=10),
    "tiny": NetworkSizes(hidden_dim=32, feature_dim=16, num_critics=2, encoder_channels=8),
    # State-mode learning in sim (the original MEDAL setting): MEDAL's state agents were SAC-sized
    # MLPs, and the sim column's N=10 × 4×256 critic made one agent step cost 0.2-0.3 s on one CPU
    # core (FACTS.md). See bench/agent_step.py for the measured choice.
    "state": NetworkSizes(hidden_dim=256, feature_dim=50, num_critics=2, critic_layers=2),
}


# --- initialisation (MEDALPP.md: orthogonal with ReLU gain for convs, xavier-uniform for linears) ---
def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.orthogonal_(conv.weight, gain=nn.init.calculate_gain("relu"))
    nn.init.zeros_(conv.bias)
    return conv


def _init_linear(lin: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def conv_out(size: int, stride: int) -> int:
    return (size - 3) // stride + 1


# --- encoders ---
def normalize_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or float) pixels to x/255 − 0.5 in float32. A caller's float tensor is never
    modified; the widened copy of a uint8 one is ours, so it is normalised in place."""
    return x / 255.0 - 0.5 if x.is_floating_point() else x.float().mul_(1.0 / 255.0).sub_(0.5)


class PixelEncoder(nn.Module):
    """Conv(C,32,3,s2) → ReLU → 3 × [Conv(32,32,3,s1) → ReLU], input x/255 − 0.5 (DrQ-v2).

    Input [B, H, W, C], channels last as stored (spec.step.stack_views); the convolutions read it
    as NCHW in channels_last memory, a view, not a copy."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: int = 32) -> None:
        super().__init__()
        # In-place ReLUs: a convolution's backward needs its input, not its output, so overwriting
        # the output saves an activation-sized allocation and pass per layer.
        layers: list[nn.Module] = [_init_conv(nn.Conv2d(in_channels, channels, 3, stride=2)), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [_init_conv(nn.Conv2d(channels, channels, 3, stride=1)), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        h, w = (conv_out(s, 2) - 6 for s in image_size)
        if h < 1 or w < 1:
            raise ValueError(f"image size {image_size} is too small for the encoder (needs >= 16 px)")
        self.repr_dim = channels * h * w

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(normalize_pixels(obs).permute(0, 3, 1, 2)).flatten(1)


class StateEncoder(nn.Module):
    """The state-mode trunk: the state vector is the representation (identity)."""

    def __init__(self, state_dim: int) -> None:
        super().__init__()
        self.repr_dim = state_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()


def build_encoder(spec: ObsSpec, sizes: NetworkSizes) -> PixelEncoder | StateEncoder:
    if spec.mode == "state":
        return StateEncoder(int(spec.state_dim or 0))
    return PixelEncoder(spec.channels, spec.image_size, sizes.encoder_channels)


# --- actor ---
class SquashedNormal:
    """tanh(N(mu, std)); log-probabilities include the tanh change of variables."""

    def __init__(self, mu: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mu = mu
        self.log_std = log_std
        self.std = log_std.exp()

    @property
    def mean(self) -> torch.Tensor:
        return torch.tanh(self.mu)

    def _log_prob_pre_tanh(self, u: torch.Tensor) -> torch.Tensor:
        z = (u - self.mu) / self.std
        gauss = -0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2) written stably.
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return (gauss - log_det).sum(-1)

    def rsample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample and its log-probability."""
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        u = self.mu + self.std * eps
        return torch.tanh(u), self._log_prob_pre_tanh(u)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        a = action.clamp(-ACTION_CLIP, ACTION_CLIP)
        return self._log_prob_pre_tanh(torch.atanh(a))


class Actor(nn.Module):
    """Linear(repr, feature) → LayerNorm → Tanh → [concat proprio] → hidden → hidden → 2|A|."""

    def __init__(self, repr_dim: int, proprio_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.trunk = nn.Sequential(_init_linear(nn.Linear(repr_dim, feature_dim)), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(
            _init_linear(nn.Linear(feature_dim + proprio_dim, hidden_dim)),
            nn.ReLU(),
            _init_linear(nn.Linear(hidden_dim, hidden_dim)),
            nn.ReLU(),
            _init_linear(nn.Linear(hidden_dim, 2 * action_dim)),
        )

    def forward(self, h: torch.Tensor, proprio: torch.Tensor) -> SquashedNormal:
        x = torch.cat([self.trunk(h), proprio], dim=-1)
        mu, log_std = self.policy(x).chunk(2, dim=-1)
        return SquashedNormal(mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))


# --- critic ensemble ---
class EnsembleLinear(nn.Module):
    """N independent linear layers stored as one [N, out, in] weight.

    A shared input [B, in] becomes one matrix product against the [N*out, in] stack; a per-head
    input [N, B, in] one batched product (baddbmm). Output is [N, B, out]. `heads` selects a
    subset of heads (REDQ target) without computing the others.
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(n, out_features))
        bound = math.sqrt(6.0 / (in_features + out_features))  # xavier-uniform, per head
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        w, b = (self.weight, self.bias) if heads is None else (self.weight[heads], self.bias[heads])
        n = w.shape[0]
        if x.dim() == 2:
            y = F.linear(x, w.reshape(n * self.out_features, self.in_features), b.reshape(-1))
            return y.view(x.shape[0], n, self.out_features).transpose(0, 1)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class EnsembleLayerNorm(nn.Module):
    def __init__(self, n: int, features: int) -> None:
        super().__init__()
        self.features = features
        self.weight = nn.Parameter(torch.ones(n, features))
        self.bias = nn.Parameter(torch.zeros(n, features))

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        w, b = (self.weight, self.bias) if heads is None else (self.weight[heads], self.bias[heads])
        return F.layer_norm(x, (self.features,)) * w.unsqueeze(1) + b.unsqueeze(1)


class Critic(nn.Module):
    """N heads, each Linear(repr, feature) → LayerNorm → Tanh → [concat proprio, action] →
    `hidden_layers` hidden layers (ReLU) → 1. Returns Q as [N, B, 1]."""

    def __init__(
        self,
        repr_dim: int,
        proprio_dim: int,
        action_dim: int,
        feature_dim: int,
        hidden_dim: int,
        n: int,
        hidden_layers: int = 4,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.n = n
        self.trunk_linear = EnsembleLinear(n, repr_dim, feature_dim)
        self.trunk_norm = EnsembleLayerNorm(n, feature_dim)
        dims = [feature_dim + proprio_dim + action_dim] + [hidden_dim] * hidden_layers + [1]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, hidden_dim) for _ in range(hidden_layers)) if layer_norm else None

    def trunk(self, h: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.trunk_norm(self.trunk_linear(h, heads), heads))

    def head(
        self, t: torch.Tensor, proprio: torch.Tensor, action: torch.Tensor, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = t.shape[0]
        x = torch.cat([t, proprio.expand(n, *proprio.shape), action.expand(n, *action.shape)], dim=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x, heads)
            if i < len(self.layers) - 1:
                x = F.relu(x if self.norms is None else self.norms[i](x, heads))
        return x

    def forward(
        self, h: torch.Tensor, proprio: torch.Tensor, action: torch.Tensor, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(self.trunk(h, heads), proprio, action, heads)


# --- classifiers ---
class Classifier(nn.Module):
    """Own small encoder, spectral norm on every layer (MEDALPP.md):
    SN(Conv(C,32,3,s2)) → ReLU → SN(Conv(32,32,3,s2)) → ReLU → SN(Linear(·, feature)) → LayerNorm → Tanh
    → SN(Linear(·, hidden)) → ReLU → SN(Linear(hidden, 1)).

    In state mode the two convolutions are absent and the trunk reads the state vector.
    `channels` selects the views it looks at, as indices into the stacked image channels.
    `norm` applies the spectral norm to a layer; the checkpoint check passes a shape-only stand-in
    (policies/classifier_checkpoint.py).
    """

    def __init__(
        self,
        spec: ObsSpec,
        sizes: NetworkSizes,
        cameras: list[str] | None = None,
        norm: Callable[[nn.Module], nn.Module] = spectral_norm,
    ) -> None:
        super().__init__()
        self.mode = spec.mode
        self.cameras = list(cameras) if cameras is not None else spec.camera_names
        if spec.mode == "pixels":
            unknown = [c for c in self.cameras if c not in spec.camera_names]
            if unknown or not self.cameras:
                raise ValueError(f"classifier cameras {self.cameras} must be a non-empty subset of {spec.camera_names}")
            idx = [3 * spec.camera_names.index(c) + k for c in self.cameras for k in range(3)]
            self.register_buffer("channel_index", torch.tensor(idx, dtype=torch.long), persistent=False)
            self._all_channels = idx == list(range(spec.channels))
            # One camera (the usual case) is a contiguous channel range: a view, not a gather.
            contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
            self._channel_range = (idx[0], len(idx)) if contiguous else None
            ch = sizes.encoder_channels
            self.encoder = nn.Sequential(
                norm(_init_conv(nn.Conv2d(len(idx), ch, 3, stride=2))),
                nn.ReLU(),
                norm(_init_conv(nn.Conv2d(ch, ch, 3, stride=2))),
                nn.ReLU(),
                nn.Flatten(),
            )
            h, w = (conv_out(conv_out(s, 2), 2) for s in spec.image_size)
            in_dim = ch * h * w
        else:
            self.encoder = nn.Sequential(nn.Flatten())
            in_dim = int(spec.state_dim or 0)
        self.trunk = nn.Sequential(
            norm(_init_linear(nn.Linear(in_dim, sizes.feature_dim))),
            nn.LayerNorm(sizes.feature_dim),
            nn.Tanh(),
        )
        self.head = nn.Sequential(
            norm(_init_linear(nn.Linear(sizes.feature_dim, sizes.hidden_dim))),
            nn.ReLU(),
            norm(_init_linear(nn.Linear(sizes.hidden_dim, 1))),
        )

    def select(self, obs: torch.Tensor) -> torch.Tensor:
        """The classifier's views from a full stacked observation [B, H, W, C]."""
        if self.mode == "pixels" and not self._all_channels:
            if self._channel_range is not None:
                return obs.narrow(-1, *self._channel_range)
            return obs.index_select(-1, self.channel_index)
        return obs

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Trunk features (the space mixup works in) of a full stacked observation."""
        x = self.select(obs)
        x = normalize_pixels(x).permute(0, 3, 1, 2) if self.mode == "pixels" else x.float()
        return self.trunk(self.encoder(x))

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(obs))


# --- the deployable policy (what a checkpoint holds) ---
class Policy(nn.Module):
    """Encoder + actor for one direction: what the daemon runs."""

    def __init__(self, spec: ObsSpec, action_dim: int, sizes: NetworkSizes) -> None:
        super().__init__()
        self.encoder = build_encoder(spec, sizes)
        self.actor = Actor(self.encoder.repr_dim, spec.proprio_dim, action_dim, sizes.feature_dim, sizes.hidden_dim)

    def forward(
        self, obs: torch.Tensor, proprio: torch.Tensor, deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        dist = self.actor(self.encoder(obs), proprio)
        if deterministic:
            return dist.mean
        return dist.rsample(generator)[0]
