"""One MEDAL++ actor-critic agent: SAC with a REDQ critic ensemble and a BC term (MEDALPP.md, "Updates").

Shaped like DrQ-v2's agent: `update_critic` and `update_actor` are small and return metric dicts;
`update` runs UTD critic steps then one actor step. The encoder is trained by the critic loss only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from learner.augment import random_shift
from learner.buffers import Batch
from learner.optim import adam
from learner.settings import AgentSettings, linear_schedule
from policies.checkpoint import PolicyCheckpoint
from policies.networks import Critic, NetworkSizes, Policy
from spec.step import ActionSpec, ObsSpec, action_dim


@dataclass
class TorchBatch:
    obs: torch.Tensor
    proprio: torch.Tensor
    action: torch.Tensor
    not_done: torch.Tensor
    next_obs: torch.Tensor
    next_proprio: torch.Tensor

    @classmethod
    def from_numpy(cls, b: Batch, device: torch.device) -> TorchBatch:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)

        return cls(t(b.obs), t(b.proprio), t(b.action), t(b.not_done), t(b.next_obs), t(b.next_proprio))


def executed_action(action: torch.Tensor, translation_dims: int = 3) -> torch.Tensor:
    """The action the daemon executes (spec.step.ActionSpace.clip_action), in torch:
    clip to the box [-1, 1], then scale the translation part into the unit ball.

    Differentiable (a scale by 1/max(1, ‖t‖)), so the actor loss sees Q of what the arm would do:
    the critic is fitted on stored (clipped) actions and must be maximised over the same set.
    """
    a = action.clamp(-1.0, 1.0)
    t = a[..., :translation_dims]
    scale = t.norm(dim=-1, keepdim=True).clamp(min=1.0).reciprocal()
    return torch.cat([t * scale, a[..., translation_dims:]], dim=-1)


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        spec: ObsSpec,
        action_spec: ActionSpec,
        sizes: NetworkSizes,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.direction = settings.direction
        self.spec = spec
        self.action_spec = dict(action_spec)
        self.sizes = sizes
        self.device = torch.device(device)
        self.pixels = spec.mode == "pixels"
        adim = action_dim(action_spec)
        self.policy = Policy(spec, adim, sizes).to(self.device)
        self.encoder, self.actor = self.policy.encoder, self.policy.actor
        # channels_last convolutions are ~20 % faster on CPU (oneDNN) and no slower on GPU.
        self.memory_format = torch.channels_last if self.pixels else torch.contiguous_format
        self.encoder.to(memory_format=self.memory_format)
        repr_dim = self.encoder.repr_dim
        dims = (repr_dim, spec.proprio_dim, adim, sizes.feature_dim, sizes.hidden_dim, sizes.num_critics)
        head = {"hidden_layers": sizes.critic_layers, "layer_norm": sizes.critic_layer_norm}
        self.critic = Critic(*dims, **head).to(self.device)
        self.critic_target = Critic(*dims, **head).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

        lr = settings.lr
        enc_params = list(self.encoder.parameters())
        self.encoder_opt = adam(enc_params, lr) if enc_params else None
        self.critic_opt = adam(list(self.critic.parameters()), lr)
        self.actor_opt = adam(list(self.actor.parameters()), lr)
        self.log_alpha = torch.tensor(
            math.log(settings.alpha_init) if settings.alpha_init > 0 else 0.0, device=self.device, requires_grad=True
        )
        self.alpha_opt = adam([self.log_alpha], lr) if settings.learn_alpha else None
        self.target_entropy = settings.target_entropy_per_dim * adim
        self.updates = 0  # actor updates (one per env step trained on); policy versions use it
        self.critic_updates = 0
        # The BC schedule's clock: env steps collected (both directions), as MEDALPP.md's "steps"
        # count env steps everywhere; the trainer sets it from the store before each update.
        self.env_step = 0

    # --- small pieces ---
    @property
    def alpha(self) -> float:
        """The entropy weight: fixed 0 unless learned (sim backward agent)."""
        if self.settings.learn_alpha:
            return float(self.log_alpha.detach().exp())
        return float(self.settings.alpha_init)

    def bc_lambda(self, step: int | None = None) -> float:
        return linear_schedule(self.settings.bc, self.env_step if step is None else step)

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        """Random shift of uint8 frames (channels-last, widened by the encoder); state passes through."""
        return random_shift(obs) if self.pixels else obs.float()

    @torch.no_grad()
    def target_value(
        self,
        next_h: torch.Tensor,
        next_proprio: torch.Tensor,
        reward: torch.Tensor,
        not_done: torch.Tensor,
        heads: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """y = r + γ·not_done·(min over 2 random target heads of Q′(s′, a′) − α log π(a′|s′)); returns (y, heads)."""
        if heads is None:
            heads = torch.randperm(self.sizes.num_critics, device=self.device)[: self.sizes.target_subset]
        a2, logp2 = self.actor(next_h, next_proprio).rsample()
        # Every head drawn (N = subset, e.g. clipped double Q): no weight gather needed.
        subset = None if len(heads) == self.sizes.num_critics else heads
        q2 = self.critic_target(next_h, next_proprio, executed_action(a2), subset).squeeze(-1)  # [M, B]
        v = q2.min(dim=0).values - self.alpha * logp2
        return reward + self.settings.gamma * not_done * v, heads

    def update_critic(
        self,
        h: torch.Tensor,
        proprio: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        not_done: torch.Tensor,
        next_h: torch.Tensor,
        next_proprio: torch.Tensor,
    ) -> dict[str, float]:
        y, _ = self.target_value(next_h, next_proprio, reward, not_done)
        q = self.critic(h, proprio, action).squeeze(-1)  # [N, B]
        # MSE against the same target for every head, summed over heads (as DrQ-v2 sums Q1 and Q2).
        loss = (q - y.unsqueeze(0)).pow(2).mean(dim=1).sum()
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        self.soft_update()
        self.critic_updates += 1
        return {
            "critic_loss": float(loss.detach()) / self.sizes.num_critics,
            "q_mean": float(q.detach().mean()),
            "target_mean": float(y.mean()),
            "reward_mean": float(reward.mean()),
        }

    @torch.no_grad()
    def soft_update(self) -> None:
        # One fused call over all tensors, not a Python loop of small lerps.
        torch._foreach_lerp_(self._target_params, self._critic_params, self.settings.tau)

    def update_actor(
        self,
        h: torch.Tensor,
        proprio: torch.Tensor,
        demo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """h: detached features. demo: (features, proprio, actions) of the separate BC batch."""
        lam = self.bc_lambda()
        alpha = self.alpha
        metrics: dict[str, float] = {"bc_lambda": lam, "alpha": alpha}
        need_rl = lam < 1.0 or demo is None
        if need_rl:
            a, logp = self.actor(h, proprio).rsample()
            # The critic trunk reads only the observation, so it needs no graph; gradients flow
            # to the action through the heads' hidden layers.
            with torch.no_grad():
                t = self.critic.trunk(h)
            q = self.critic.head(t, proprio, executed_action(a)).squeeze(-1).mean(dim=0)
            actor_loss = (alpha * logp - q).mean()
            metrics |= {"actor_loss": float(actor_loss.detach()), "entropy": float(-logp.detach().mean())}
        if demo is not None and lam > 0:
            dh, dp, da = demo
            bc_loss = -self.actor(dh, dp).log_prob(da).mean()
            metrics["bc_loss"] = float(bc_loss.detach())
            loss = (1 - lam) * actor_loss + lam * bc_loss if need_rl else bc_loss
        else:
            loss = actor_loss
        self.actor_opt.zero_grad(set_to_none=True)
        # inputs=: only the actor's gradients are computed, not the critic's weights'.
        loss.backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()
        if self.alpha_opt is not None and need_rl:
            alpha_loss = (self.log_alpha.exp() * (-logp.detach() - self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics["alpha_loss"] = float(alpha_loss.detach())
        self.updates += 1
        return metrics

    # --- one env step's worth of training ---
    def update(
        self,
        sample: Callable[[], TorchBatch],
        reward_fn: Callable[[torch.Tensor], torch.Tensor],
        sample_demo: Callable[[], TorchBatch | None] | None = None,
    ) -> dict[str, float]:
        """UTD critic updates (each on a fresh batch), then one actor update with BC."""
        metrics: dict[str, float] = {}
        for _ in range(self.settings.utd):
            b = sample()
            reward = reward_fn(b.next_obs)  # current classifier on the un-augmented s′, every row
            h = self.encoder(self.augment(b.obs))
            with torch.no_grad():
                next_h = self.encoder(self.augment(b.next_obs))
            metrics = self.update_critic(h, b.proprio, b.action, reward, b.not_done, next_h, b.next_proprio)
        demo = None
        if sample_demo is not None and self.bc_lambda() > 0:
            d = sample_demo()
            if d is not None:
                with torch.no_grad():
                    demo = (self.encoder(self.augment(d.obs)), d.proprio, d.action)
        metrics |= self.update_actor(h.detach(), b.proprio, demo)
        return metrics

    # --- export ---
    def checkpoint(self, version: int, step: int = 0) -> PolicyCheckpoint:
        return PolicyCheckpoint.from_policy(
            self.policy, self.direction, version, self.spec, self.action_spec, self.sizes, step=step
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts: dict[str, torch.optim.Optimizer] = {"critic": self.critic_opt, "actor": self.actor_opt}
        if self.encoder_opt is not None:
            opts["encoder"] = self.encoder_opt
        if self.alpha_opt is not None:
            opts["alpha"] = self.alpha_opt
        return opts
