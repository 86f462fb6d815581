"""Reward and termination read out of the dynamics' own hidden state.

Heads that re-read generated latents (``worldsim/heads.py``) depend on how well a frame is drawn:
a coin that blurs away in a generated frame is a coin they cannot see. The DiT itself, however,
was conditioned on the action and attended to the history when it drew the frame, so its hidden
tokens of frame ``t + 1`` carry "the agent touched the coin" whether or not the pixels show it.
:class:`EventReadout` reads that: after the last DiT block, each frame's tokens go through an
adaLN-modulated LayerNorm (conditioned on the frame's own ``c``: noise level and action) and a
per-token MLP, are pooled over the frame (mean and max: "on average" and "somewhere"), and an
MLP predicts

- the **reward** of the transition into the frame, as two-hot classification over symlog bins
  (DreamerV3's recipe, as the heads; ``worldsim.heads.twohot``), and
- its **termination** logit (binary cross-entropy).

Alignment (``docs/architecture.md``): frame ``j >= 1`` of a clip is the result of action
``a_{j-1}`` on frame ``j - 1``, so its readout predicts ``rewards[j - 1]`` and
``terminated[j - 1]``; frame 0 has no transition and is not trained.

Training (``worldsim.flow.training_loss``) reads every frame at its own noise level, jointly with
the flow loss, so the readout learns to answer from the history and the action when the frame
itself is noise, and from the frame when it is clean. Sampling (``worldsim.flow.sample_next``)
reads it in the pass that writes the finished frame into the KV cache (the frame labelled with
the context noise level), which the sampler runs anyway: the readout costs one small MLP.

einops legend: b batch, t time, n tokens per frame, d width, k reward bins.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.heads import symexp, symlog, twohot
from worldsim.nn.adaln import modulate


class EventReadout(nn.Module):
    """Per-frame reward logits ``[b, t, k]`` and termination logit ``[b, t]`` from DiT tokens."""

    def __init__(self, dim: int, reward_bins: int = 41, reward_range: float = 5.0) -> None:
        super().__init__()
        if reward_bins < 2:
            raise ValueError(f"EventReadout: reward_bins must be >= 2, got {reward_bins}")
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.token_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU())
        self.reward_out = nn.Linear(dim, reward_bins)
        self.termination_out = nn.Linear(dim, 1)
        self.register_buffer(
            "bins", torch.linspace(-reward_range, reward_range, reward_bins), persistent=False
        )

    def initialize_weights(self) -> None:
        """Called by the DiT's ``initialize_weights`` after its xavier pass: identity modulation,
        reward 0 and termination rare (prior 1%) at the start, as the heads."""
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.reward_out.weight)
        nn.init.zeros_(self.reward_out.bias)
        nn.init.zeros_(self.termination_out.weight)
        nn.init.constant_(self.termination_out.bias, math.log(0.01 / 0.99))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """x ``[b, t, n, d]`` (the last block's tokens), c ``[b, t, d]`` -> ``reward_logits
        [b, t, k]``, ``termination_logit [b, t]``."""
        shift, scale = self.adaLN_modulation(c)[:, :, None].chunk(2, dim=-1)
        h = self.token_mlp(modulate(self.norm(x), shift, scale))  # [b, t, n, d]
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=-1)  # [b, t, 2d]
        h = self.mlp(pooled)
        return {
            "reward_logits": self.reward_out(h),
            "termination_logit": self.termination_out(h)[..., 0],
        }

    def reward_value(self, logits: torch.Tensor) -> torch.Tensor:
        """Two-hot logits ``[..., k]`` -> the expected reward ``[...]`` (back from symlog)."""
        return symexp((logits.float().softmax(-1) * self.bins).sum(-1))

    def predict(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw outputs -> ``reward``, ``termination_logit`` and ``termination_prob`` (float32)."""
        logit = out["termination_logit"].float()
        return {
            "reward": self.reward_value(out["reward_logits"]),
            "termination_logit": logit,
            "termination_prob": logit.sigmoid(),
        }

    def loss(
        self,
        out: dict[str, torch.Tensor],
        rewards: torch.Tensor | None,
        terminated: torch.Tensor | None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of a clip's readout (``out`` of all ``t`` frames) against ``rewards`` and
        ``terminated`` ``[b, t-1]`` (either may be ``None``): frames 1 .. t-1 are scored, those
        where ``mask [b, t-1]`` (bool) is False left out. Returns ``loss`` and its parts
        ``reward_loss`` / ``termination_loss``."""
        logits = out["reward_logits"][:, 1:].float()  # [b, t-1, k]
        term = out["termination_logit"][:, 1:].float()  # [b, t-1]
        w = torch.ones_like(term) if mask is None else mask.float()
        denom = w.sum().clamp(min=1.0)
        parts: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        if rewards is not None:
            if tuple(rewards.shape) != tuple(logits.shape[:2]):
                raise ValueError(f"readout: rewards must be {tuple(logits.shape[:2])} (one per "
                                 f"transition), got {tuple(rewards.shape)}")
            target = twohot(symlog(rewards.float()), self.bins.float())
            ce = -(target * logits.log_softmax(-1)).sum(-1)  # [b, t-1]
            parts["reward_loss"] = (ce * w).sum() / denom
            total = total + parts["reward_loss"]
        if terminated is not None:
            if tuple(terminated.shape) != tuple(term.shape):
                raise ValueError(f"readout: terminated must be {tuple(term.shape)}, got "
                                 f"{tuple(terminated.shape)}")
            bce = F.binary_cross_entropy_with_logits(term, terminated.float(), reduction="none")
            parts["termination_loss"] = (bce * w).sum() / denom
            total = total + parts["termination_loss"]
        return {"loss": total, **parts}


__all__ = ["EventReadout"]
