"""The action adapter: which latent code a real action becomes *in the current state*.

A latent action model's codes describe a whole transition, not only the button pressed. On the
quickstart game the LAM splits RIGHT into six codes (a step with the legs striding, one with
them closing, a push into a wall, ...), and the code a press of RIGHT produces depends on the
frame it is pressed in. The global :class:`~worldsim.binding.ActionBinding` plays every real
action as its single most frequent code, which agrees with the LAM on 45% of held-out
transitions; rolled out under those codes the dynamics' frames are barely better than under
random codes (docs/agents.md, "The action adapter"). An imagined world driven that way is not
the game the agent will later play.

``ActionAdapter`` is a small classifier ``p(code | z_t, a_t)``: a conv net reads the normalised
latent of the current frame and gives one row of code logits per real action; the row of the
action pressed is the answer. It is fitted on the transitions of a labelled latent store (the
LAM's codes as targets, the recorded real actions as inputs) by
:func:`worldsim.training.adapter_fit.fit_action_adapter`, and the Simulator uses it, when a
bundle carries one, to turn real actions into codes (argmax).

einops legend: b batch, c h w latent grid, A real actions, K latent codes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ActionAdapterConfig:
    latent_channels: int
    latent_height: int
    latent_width: int
    num_actions: int  # real actions A (discrete)
    num_codes: int  # latent codes K
    hidden: int = 64

    def __post_init__(self) -> None:
        for name in ("latent_channels", "latent_height", "latent_width", "num_actions", "num_codes", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ActionAdapterConfig.{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ActionAdapter(nn.Module):
    """``p(code | z_t, a_t)``: latent ``[b, c, h, w]`` and real actions ``[b]`` -> logits ``[b, K]``."""

    def __init__(self, cfg: ActionAdapterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.features = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, d, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(d, d, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(d, d, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(d * 16, 4 * d),
            nn.SiLU(),
        )
        self.logits = nn.Linear(4 * d, cfg.num_actions * cfg.num_codes)

    def forward(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        shape = (cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        if z.ndim != 4 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"ActionAdapter: latents must be [b, {', '.join(map(str, shape))}], got {list(z.shape)}")
        if actions.shape != (z.shape[0],) or actions.is_floating_point():
            raise ValueError(f"ActionAdapter: actions must be integers [{z.shape[0]}], got {actions.dtype} {list(actions.shape)}")
        table = self.logits(self.features(z)).view(-1, cfg.num_actions, cfg.num_codes)  # b A K
        return table[torch.arange(z.shape[0], device=z.device), actions.long()]

    @torch.no_grad()
    def codes(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The most likely code of each ``(z_t, a_t)``, ``[b]`` int64."""
        return self(z, actions).argmax(-1)


__all__ = ["ActionAdapter", "ActionAdapterConfig"]
