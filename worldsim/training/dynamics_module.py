"""Stage 3: the spatiotemporal DiT trained by flow matching with per-frame noise, plus, when the
data has rewards, its reward/termination readout (trained in the same pass) and the heads on
latents. Keeps an EMA copy of the DiT's weights, which is what gets exported and evaluated."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from worldsim import flow
from worldsim.actions import model_input
from worldsim.data import tensor_to_frames
from worldsim.training.base import OptimConfig, StageModule
from worldsim.video import grid


class DynamicsModule(StageModule):
    """``batch["latents"]`` float [b, t, c, h, w] (normalised), actions under ``action_key``
    ([b, t-1]); ``rewards``/``terminated`` [b, t-1] when present.

    ``action_source``: ``latent`` (LAM codes), ``real`` (the game's actions) or ``both``.
    """

    def __init__(self, net: nn.Module, optim: OptimConfig, *, action_source: str, heads: nn.Module | None = None,
                 decoder: nn.Module | None = None, latent_mean: torch.Tensor | None = None,
                 latent_std: torch.Tensor | None = None, ema_decay: float = 0.999,
                 loss_kwargs: dict | None = None, sample_steps: int = 4) -> None:
        super().__init__(net, optim)
        self.action_source = action_source
        self.heads = heads
        self.ema = copy.deepcopy(net).requires_grad_(False).eval()
        self.ema_decay = ema_decay
        self.loss_kwargs = dict(loss_kwargs or {})
        self.sample_steps = sample_steps
        # The frozen decoder only draws sample videos; it is not part of the checkpointed state.
        self._decoder = [decoder] if decoder is not None else []
        if latent_mean is not None:
            self.register_buffer("latent_mean", latent_mean.float(), persistent=False)
            self.register_buffer("latent_std", latent_std.float(), persistent=False)

    def action_input(self, batch: dict):
        source = self.action_source
        return model_input(source, batch["lam"] if source != "real" else None,
                           batch["actions"] if source != "latent" else None)

    def head_actions(self, batch: dict):
        return batch["actions"] if self.action_source == "real" else batch["lam"]

    def events(self, batch: dict) -> dict:
        """Rewards and terminations for the DiT's readout (``{}`` without one, or without rewards)."""
        if getattr(self.net, "readout", None) is None or "rewards" not in batch:
            return {}
        return {"rewards": batch["rewards"], "terminated": batch.get("terminated")}

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        z = batch["latents"]
        out = flow.training_loss(self.net, z, self.action_input(batch), **self.events(batch),
                                 **self.loss_kwargs)
        if self.heads is not None and "rewards" in batch:
            head = self.heads.loss(z, self.head_actions(batch), batch["rewards"], batch.get("terminated"))
            out = {**out, **{f"heads_{k}": v for k, v in head.items()}, "loss": out["loss"] + head["loss"]}
        return out

    def trained_modules(self) -> list[nn.Module]:
        return [self.net] + ([self.heads] if self.heads is not None else [])

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # Warm-up of the EMA: early on the average follows the weights closely.
        step = self.global_step
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        z = batch["latents"]
        acts = self.action_input(batch)
        g = torch.Generator(device=z.device).manual_seed(0)
        out = flow.training_loss(self.ema, z, acts, generator=g, **self.events(batch), **self.loss_kwargs)
        metrics = {"flow_loss": out["loss"]}
        if "readout_loss" in out:
            metrics = {"flow_loss": out["loss"] - out["readout_loss"], "readout_loss": out["readout_loss"]}
        return metrics

    @torch.no_grad()
    def make_samples(self, batch: dict) -> dict[str, np.ndarray]:
        """A rollout video of held-out clips: real (left) next to the model (right), driven by the
        clip's own actions from its first two frames."""
        if not self._decoder or not hasattr(self, "latent_mean"):
            return {}
        decoder = self._decoder[0].to(self.device)
        z = batch["latents"][:4].to(self.device)
        acts = self.action_input({k: (v[:4].to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()})
        ctx = 2

        def cut(a, sl):
            return tuple(x[:, sl] for x in a) if isinstance(a, tuple) else a[:, sl]

        g = torch.Generator(device=self.device).manual_seed(0)
        gen = flow.rollout(self.ema, z[:, :ctx], cut(acts, slice(0, ctx - 1)), cut(acts, slice(ctx - 1, None)),
                           steps=self.sample_steps, generator=g)
        model = torch.cat([z[:, :ctx], gen], dim=1)
        scale = (self.latent_std.view(1, 1, -1, 1, 1), self.latent_mean.view(1, 1, -1, 1, 1))
        real_px = tensor_to_frames(decoder.decode(z * scale[0] + scale[1]))  # b t h w c
        model_px = tensor_to_frames(decoder.decode(model * scale[0] + scale[1]))
        pairs = [np.concatenate([r, m], axis=2) for r, m in zip(real_px, model_px)]
        return {"rollout_video": grid(pairs, ncols=2)}
