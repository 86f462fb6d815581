"""The actor-critic: a policy over discrete actions (latent codes or the game's) or over a box of
continuous ones, a value baseline, its lambda-returns and its loss.

One network serves both training places (imagination inside the world model and the real game),
so that "trained in imagination" and "trained in the real game" differ only in where the
experience came from. It sees either

- ``pixels``: uint8 frames ``[b, H, W, 3]`` at the bundle's frame size (a small CNN), or
- ``latents``: the Simulator's normalised latents ``[b, c, h, w]`` (a small conv net: cheap,
  no decoder call per step).

Losses (DIAMOND / DreamerV3-style REINFORCE with a baseline, on imagined or real rollouts):

1. **Lambda-returns** ``G_t = r_t + gamma_t ((1 - lambda_t) V(s_t+1) + lambda_t G_t+1)`` with
   ``gamma_t = gamma (1 - terminated_t)`` (no value past a terminal state) and
   ``lambda_t = lambda (1 - truncated_t)`` (a truncated step bootstraps from the value of the
   final observation and the chain of returns is cut there). ``lambda=1`` over a rollout of n
   steps gives A2C's n-step returns.
2. **Return scale.** Advantages ``G - V`` are divided by ``max(1, S)``, where ``S`` is an
   exponential moving average of the 95th minus the 5th percentile of the returns (DreamerV3):
   scale-free for large rewards, unchanged for small ones.
3. **Loss** ``-E[log pi(a|s) A] - entropy * E[H(pi(.|s))] + value_coef * E[(V(s) - G)^2] / 2``,
   averaged over the valid steps (a ``mask`` drops the auto-reset steps of vector envs, whose
   action was ignored).
4. **Policy head.** Discrete (``action_dim = 0``): logits over ``num_actions``. Continuous
   (``action_dim = a > 0``): a diagonal Gaussian over ``[-1, 1]^a``, the unit box of the game's
   ``Box`` (the sources rescale it: ``worldsim.actions.box_from_unit``), with mean
   ``tanh(m)`` and standard deviation ``MIN_STD + (MAX_STD - MIN_STD) sigmoid(s + 2)``
   (DreamerV3's bounded std); sampled actions are clipped to the box, and the loss scores the
   clipped action's log-density.

einops legend: t time, b batch, c channels, h w latent grid, H W frame size, a actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from einops import rearrange
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from worldsim.world_options import OBS_TYPES


@dataclass
class ActorCriticConfig:
    """Sizes of the actor-critic. ``obs_shape``: ``(H, W, 3)`` for pixels, ``(c, h, w)`` for
    latents; ``num_actions``: discrete actions (latent codes or the game's); ``action_dim``:
    0 for those, else the width of a continuous action (a Gaussian head; ``num_actions`` is
    then unused)."""

    obs_type: str = "latents"
    obs_shape: tuple[int, int, int] = (4, 8, 8)
    num_actions: int = 8
    action_dim: int = 0
    channels: tuple[int, ...] = (32, 64)  # conv widths (each conv halves the grid, pixels only)
    hidden: int = 256

    def __post_init__(self) -> None:
        if self.obs_type not in OBS_TYPES:
            raise ValueError(
                f"ActorCriticConfig.obs_type must be one of {OBS_TYPES}, got {self.obs_type!r}"
            )
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.obs_shape) != 3:
            raise ValueError(
                f"ActorCriticConfig.obs_shape must have 3 entries, got {self.obs_shape}"
            )
        if self.obs_type == "pixels" and self.obs_shape[2] != 3:
            raise ValueError(
                f"pixel observations must be [H, W, 3], got obs_shape {self.obs_shape}"
            )
        if (self.action_dim == 0 and self.num_actions < 2) or self.action_dim < 0:
            raise ValueError(
                "ActorCriticConfig: need num_actions >= 2 (discrete) or action_dim > 0 "
                f"(continuous); got num_actions={self.num_actions}, action_dim={self.action_dim}"
            )
        if self.hidden < 1 or not self.channels:
            raise ValueError(
                f"ActorCriticConfig: need hidden >= 1 and some channels; got "
                f"{self.hidden}, {self.channels}"
            )

    @property
    def continuous(self) -> bool:
        return self.action_dim > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ActorCriticConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ActorCriticConfig: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def _encoder(cfg: ActorCriticConfig) -> tuple[nn.Module, int]:
    """Observation -> feature vector, and its width."""
    layers: list[nn.Module] = []
    if cfg.obs_type == "pixels":
        cin, h, w = 3, cfg.obs_shape[0], cfg.obs_shape[1]
        for c in cfg.channels:  # stride-2 convs: the grid halves at each
            layers += [nn.Conv2d(cin, c, 4, stride=2, padding=1), nn.SiLU()]
            cin, h, w = c, (h + 1) // 2, (w + 1) // 2
    else:
        cin, h, w = cfg.obs_shape
        for c in cfg.channels:  # latents are already small: keep the grid
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.SiLU()]
            cin = c
    layers.append(nn.Flatten())
    net = nn.Sequential(*layers)
    with torch.no_grad():
        width = net(torch.zeros(1, *_chw(cfg))).shape[1]
    return net, int(width)


def _chw(cfg: ActorCriticConfig) -> tuple[int, int, int]:
    if cfg.obs_type == "pixels":
        return (3, cfg.obs_shape[0], cfg.obs_shape[1])
    return cfg.obs_shape


MIN_STD, MAX_STD = 0.1, 1.0  # bounds of the Gaussian head's standard deviation (unit box)


def policy_distribution(cfg: ActorCriticConfig, out: torch.Tensor) -> Distribution:
    """The policy head's output ``[..., a]`` (logits) or ``[..., 2a]`` (mean and std
    parameters) as a distribution over actions (module docstring, item 4)."""
    if not cfg.continuous:
        return Categorical(logits=out)
    mean, raw_std = out.chunk(2, dim=-1)
    std = MIN_STD + (MAX_STD - MIN_STD) * torch.sigmoid(raw_std + 2.0)
    return Independent(Normal(torch.tanh(mean), std), 1)


class ActorCritic(nn.Module):
    """Shared encoder, then a policy head (logits over ``num_actions``, or a Gaussian's
    parameters over ``action_dim``) and a value head."""

    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder, width = _encoder(cfg)
        self.trunk = nn.Sequential(
            nn.Linear(width, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.SiLU()
        )
        self.policy = nn.Linear(cfg.hidden, 2 * cfg.action_dim if cfg.continuous else cfg.num_actions)
        self.value = nn.Linear(cfg.hidden, 1)
        # Start from a near-uniform policy and a zero value, so early updates are gentle.
        nn.init.zeros_(self.policy.weight)
        nn.init.zeros_(self.policy.bias)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 ``[b, H, W, 3]`` -> float ``[b, 3, H, W]`` in [-1, 1]; latents pass as float."""
        expected = tuple(self.cfg.obs_shape)
        if tuple(obs.shape[1:]) != expected:
            raise ValueError(
                f"ActorCritic ({self.cfg.obs_type}) expects observations [b, {', '.join(map(str, expected))}], "
                f"got {tuple(obs.shape)}"
            )
        if self.cfg.obs_type == "pixels":
            return rearrange(obs.float(), "b H W c -> b c H W") / 127.5 - 1.0
        return obs.float()

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observations ``[b, ...]`` -> (policy head ``[b, a]`` logits or ``[b, 2a]`` Gaussian
        parameters, value ``[b]``)."""
        x = self.trunk(self.encoder(self.preprocess(obs)))
        return self.policy(x), self.value(x).squeeze(-1)

    def distribution(self, head: torch.Tensor) -> Distribution:
        """The policy head's output as a distribution (:func:`policy_distribution`)."""
        return policy_distribution(self.cfg, head)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        *,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample (or take the most likely) action for observations ``[b, ...]``: ``[b]``
        int64, or ``[b, a]`` float in the unit box for a continuous head."""
        head, _ = self(obs)
        if self.cfg.continuous:
            dist = self.distribution(head).base_dist
            if greedy:
                return dist.mean
            noise = torch.randn(dist.mean.shape, generator=generator, device=head.device)
            return (dist.mean + dist.stddev * noise).clamp(-1.0, 1.0)
        if greedy:
            return head.argmax(-1)
        probs = head.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    *,
    gamma: float,
    lam: float,
    terminated: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lambda-returns ``[t, b]`` (see the module docstring, item 1).

    Args:
        rewards: ``[t, b]`` reward of step t.
        values: ``[t + 1, b]`` values of the states the steps start from, then of the last
            state reached (the bootstrap).
        terminated, truncated: ``[t, b]`` flags of step t (default: none).
    """
    if rewards.ndim != 2 or values.shape != (rewards.shape[0] + 1, rewards.shape[1]):
        raise ValueError(
            f"lambda_returns: rewards must be [t, b] and values [t + 1, b]; got "
            f"{tuple(rewards.shape)} and {tuple(values.shape)}"
        )
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"lambda_returns: gamma and lam must lie in [0, 1], got {gamma}, {lam}")
    zeros = torch.zeros_like(rewards)
    term = zeros if terminated is None else terminated.to(rewards.dtype)
    trunc = zeros if truncated is None else truncated.to(rewards.dtype)
    discount = gamma * (1.0 - term)
    lambdas = lam * (1.0 - trunc)
    out = torch.empty_like(rewards)
    next_return = values[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        blend = (1.0 - lambdas[t]) * values[t + 1] + lambdas[t] * next_return
        next_return = rewards[t] + discount[t] * blend
        out[t] = next_return
    return out


@dataclass
class ReturnScale:
    """EMA of the 5-95 percentile range of returns (module docstring, item 2)."""

    decay: float = 0.99
    value: float | None = None

    def update(self, returns: torch.Tensor) -> float:
        flat = returns.detach().float().flatten()
        spread = float(torch.quantile(flat, 0.95) - torch.quantile(flat, 0.05))
        self.value = (
            spread if self.value is None else self.decay * self.value + (1 - self.decay) * spread
        )
        return max(1.0, self.value)


def actor_critic_loss(
    model: ActorCritic,
    obs: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    *,
    entropy_coef: float,
    value_coef: float = 1.0,
    scale: float = 1.0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a rollout (module docstring, item 3) and its parts for logging.

    Args:
        obs: ``[t, b, ...]`` observations the actions were taken on.
        actions: ``[t, b]`` int64 (``[t, b, a]`` float for a continuous head); returns:
            ``[t, b]`` targets (no gradient).
        scale: divisor of the advantages; mask: ``[t, b]`` bool, the steps that count.
    """
    t, b = actions.shape[:2]
    head, values = model(rearrange(obs, "t b ... -> (t b) ..."))
    dist = model.distribution(rearrange(head, "(t b) a -> t b a", t=t))
    values = rearrange(values, "(t b) -> t b", t=t)
    logp = dist.log_prob(actions if model.cfg.continuous else actions.long())
    entropy = dist.entropy()
    weight = torch.ones_like(returns) if mask is None else mask.to(returns.dtype)
    denom = weight.sum().clamp_min(1.0)
    advantage = (returns - values.detach()) / scale
    policy_loss = -(logp * advantage * weight).sum() / denom
    value_loss = 0.5 * ((values - returns).pow(2) * weight).sum() / denom
    mean_entropy = (entropy * weight).sum() / denom
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    logs = {
        "policy_loss": float(policy_loss.detach()),
        "value_loss": float(value_loss.detach()),
        "entropy": float(mean_entropy.detach()),
        "value_mean": float((values.detach() * weight).sum() / denom),
    }
    return loss, logs


__all__ = [
    "OBS_TYPES",
    "ActorCritic",
    "policy_distribution",
    "ActorCriticConfig",
    "ReturnScale",
    "actor_critic_loss",
    "lambda_returns",
]
