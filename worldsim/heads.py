"""Reward and termination heads on clean latents and the action.

A transition ``(z_t, a_t, z_{t+1})`` (aligned as in ``docs/architecture.md``: ``rewards[t]`` and
``terminated[t]`` are the results of ``a_t`` taken on frame t) goes through a small conv trunk
over the two latents stacked on channels, is pooled, joined with the action embedding, and an
MLP predicts:

- **reward**, either by ``regression`` (MSE on the raw value) or, the default, ``twohot``
  classification: the target ``symlog(r)`` is spread over the two nearest of ``reward_bins``
  evenly spaced bins in symlog space and trained with cross-entropy (DreamerV3's recipe). Two-hot
  copes with sparse rewards (mostly 0, occasionally +-1 or +-100) without the regression loss
  collapsing to the mean, and the bin range covers rewards up to ``symexp(reward_range)``;
- **termination**, a logit trained with binary cross-entropy (``termination_pos_weight``
  up-weights the rare terminal transitions).

They are trained in the same stage as the dynamics when the data has rewards, on clean latents.

einops legend: b batch, t time, c latent channels, h w latent grid, a action dim, k bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from worldsim.nn.adaln import ActionEmbedder, ActionInput
from worldsim.presets import from_preset

REWARD_MODES = ("twohot", "regression")


@dataclass
class HeadsConfig:
    """Every default of the reward/termination heads."""

    latent_channels: int = 4
    latent_height: int = 8
    latent_width: int = 8
    channels: int = 64  # conv trunk width
    hidden: int = 128  # MLP width (and action embedding width)
    action_embedding: str = "discrete"  # discrete | continuous | both (worldsim/actions.py)
    num_actions: int = 8
    action_dim: int = 0
    reward_mode: str = "twohot"  # twohot | regression
    reward_bins: int = 41
    reward_range: float = 5.0  # bins span [-range, range] in symlog space
    termination_pos_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(
                f"HeadsConfig.reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}"
            )
        if self.reward_mode == "twohot" and self.reward_bins < 2:
            raise ValueError(
                f"HeadsConfig.reward_bins must be >= 2 for two-hot rewards, got {self.reward_bins}"
            )


PRESETS: dict[str, HeadsConfig] = {
    "tiny": HeadsConfig(channels=16, hidden=32, num_actions=4, reward_bins=21),
    "quickstart": HeadsConfig(channels=32, hidden=64),
    "base": HeadsConfig(
        latent_channels=8,
        latent_height=16,
        latent_width=16,
        channels=128,
        hidden=256,
        reward_bins=255,
        reward_range=20.0,
    ),
}


def config_from_preset(name: str, **overrides) -> HeadsConfig:
    """A preset's config with fields replaced; unknown preset or field names raise ``ValueError``."""
    return from_preset(PRESETS, name, "heads", "HeadsConfig", **overrides)


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """values ``[...]`` (already in bin space) -> ``[..., k]``, weight on the two nearest bins."""
    values = values.clamp(bins[0], bins[-1])
    upper = torch.searchsorted(bins, values.contiguous(), right=False).clamp(1, len(bins) - 1)
    lower = upper - 1
    lo, hi = bins[lower], bins[upper]
    w_hi = (values - lo) / (hi - lo)
    out = torch.zeros(*values.shape, len(bins), device=values.device, dtype=values.dtype)
    out.scatter_(-1, lower[..., None], (1 - w_hi)[..., None])
    out.scatter_add_(-1, upper[..., None], w_hi[..., None])
    return out


class RewardTerminationHeads(nn.Module):
    """Predict reward and termination of transitions ``(z_t, a_t, z_{t+1})``."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.cfg = cfg = config
        c, w = cfg.latent_channels, cfg.channels
        self.trunk = nn.Sequential(
            nn.Conv2d(2 * c, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.action_embed = ActionEmbedder(
            cfg.hidden, cfg.action_embedding, cfg.num_actions, cfg.action_dim
        )
        reward_out = cfg.reward_bins if cfg.reward_mode == "twohot" else 1
        self.mlp = nn.Sequential(
            nn.Linear(w + cfg.hidden, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.SiLU(),
        )
        self.reward_out = nn.Linear(cfg.hidden, reward_out)
        self.termination_out = nn.Linear(cfg.hidden, 1)
        self.register_buffer(
            "bins",
            torch.linspace(-cfg.reward_range, cfg.reward_range, cfg.reward_bins),
            persistent=False,
        )
        # Start by predicting reward 0 (DreamerV3): no early large-value predictions.
        nn.init.zeros_(self.reward_out.weight)
        nn.init.zeros_(self.reward_out.bias)
        # ... and termination as rare (prior probability 1%): a fresh head never ends episodes.
        nn.init.zeros_(self.termination_out.weight)
        nn.init.constant_(self.termination_out.bias, math.log(0.01 / 0.99))

    def _features(
        self, z_prev: torch.Tensor, z_next: torch.Tensor, action: ActionInput
    ) -> torch.Tensor:
        cfg = self.cfg
        want = (cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        for name, z in (("z_prev", z_prev), ("z_next", z_next)):
            if z.dim() != 4 or tuple(z.shape[1:]) != want:
                raise ValueError(
                    f"heads: {name} must be [b, {', '.join(map(str, want))}], got {tuple(z.shape)}"
                )
        feats = self.trunk(torch.cat([z_prev, z_next], dim=1))  # [b, channels]
        return self.mlp(torch.cat([feats, self.action_embed(action)], dim=-1))  # [b, hidden]

    def _reward_value(self, out: torch.Tensor) -> torch.Tensor:
        if self.cfg.reward_mode == "regression":
            return out[..., 0]
        return symexp((out.softmax(-1) * self.bins).sum(-1))

    def forward(
        self, z_prev: torch.Tensor, z_next: torch.Tensor, action: ActionInput
    ) -> dict[str, torch.Tensor]:
        """Raw outputs: ``reward_out [b, k]`` (logits or value) and ``termination_logit [b]``."""
        h = self._features(z_prev, z_next, action)
        return {
            "reward_out": self.reward_out(h),
            "termination_logit": self.termination_out(h)[..., 0],
        }

    @torch.no_grad()
    def predict(
        self, z_prev: torch.Tensor, z_next: torch.Tensor, action: ActionInput
    ) -> dict[str, torch.Tensor]:
        """``[b, c, h, w]`` latents and ``[b]``/``[b, a]`` actions -> ``reward [b]``,
        ``termination_logit [b]``, ``termination_prob [b]``."""
        out = self(z_prev, z_next, action)
        logit = out["termination_logit"]
        return {
            "reward": self._reward_value(out["reward_out"]),
            "termination_logit": logit,
            "termination_prob": logit.sigmoid(),
        }

    def loss(
        self,
        z: torch.Tensor,
        actions: ActionInput,
        rewards: torch.Tensor | None,
        terminated: torch.Tensor | None,
        weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses on a clip ``z [b, t, c, h, w]`` with ``actions``, ``rewards`` and ``terminated``
        ``[b, t-1]`` (either target may be ``None``). Returns ``loss`` and its parts, plus
        ``reward_mae`` and ``termination_acc`` for logs. ``weights`` ``[b]``: per-clip importance
        weights of the loss terms (e.g. for oversampled rare windows; None: all 1)."""
        if z.dim() != 5 or z.shape[1] < 2:
            raise ValueError(f"heads.loss expects a clip [b, t>=2, c, h, w], got {tuple(z.shape)}")
        b, t = z.shape[:2]
        if weights is not None and tuple(weights.shape) != (b,):
            raise ValueError(f"heads.loss: weights must be [{b}] (one per clip), got {tuple(weights.shape)}")
        for name, y in (("rewards", rewards), ("terminated", terminated)):
            if y is not None and tuple(y.shape) != (b, t - 1):
                raise ValueError(
                    f"heads.loss: {name} must be [{b}, {t - 1}] (one per transition), got {tuple(y.shape)}"
                )
        flat = lambda a: rearrange(a, "b t ... -> (b t) ...")  # noqa: E731
        acts = tuple(flat(a) for a in actions) if isinstance(actions, tuple) else flat(actions)
        out = self(flat(z[:, :-1]), flat(z[:, 1:]), acts)
        w = None if weights is None else repeat(weights.float(), "b -> (b t)", t=t - 1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return x.mean() if w is None else (x * w).mean()

        parts: dict[str, torch.Tensor] = {}
        total = z.new_zeros(())
        if rewards is not None:
            r = flat(rewards).float()
            if self.cfg.reward_mode == "twohot":
                target = twohot(symlog(r), self.bins)
                parts["reward_loss"] = mean(-(target * out["reward_out"].log_softmax(-1)).sum(-1))
            else:
                parts["reward_loss"] = mean((out["reward_out"][..., 0] - r) ** 2)
            with torch.no_grad():
                parts["reward_mae"] = (self._reward_value(out["reward_out"]) - r).abs().mean()
            total = total + parts["reward_loss"]
        if terminated is not None:
            y = flat(terminated).float()
            pos_weight = torch.tensor(self.cfg.termination_pos_weight, device=y.device)
            parts["termination_loss"] = mean(F.binary_cross_entropy_with_logits(
                out["termination_logit"], y, pos_weight=pos_weight, reduction="none"
            ))
            with torch.no_grad():
                parts["termination_acc"] = (
                    ((out["termination_logit"] > 0).float() == y).float().mean()
                )
            total = total + parts["termination_loss"]
        return {"loss": total, **parts}


def build_heads(preset: str = "tiny", **overrides) -> RewardTerminationHeads:
    return RewardTerminationHeads(config_from_preset(preset, **overrides))
