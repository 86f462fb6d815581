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
LAM's codes as targets, the recorded real actions as inputs) by :func:`fit_action_adapter`, and
the Simulator uses it, when a bundle carries one, to turn real actions into codes (argmax).

einops legend: b batch, c h w latent grid, A real actions, K latent codes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


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


def _transitions(latent_store, episodes: Sequence[int], count: int, seed: int, label: str):
    """``count`` random transitions of ``episodes``: normalised ``z_t``, real ``a_t``, code."""
    rng = np.random.default_rng(seed)
    lengths = np.array([latent_store.episode_length(e) - 1 for e in episodes])  # transitions
    if lengths.sum() < 1:
        raise ValueError("fit_action_adapter: the episodes hold no transitions")
    picks = rng.choice(len(episodes), size=count, p=lengths / lengths.sum())
    z, a, k = [], [], []
    for i in np.unique(picks):
        e, n = int(episodes[i]), int((picks == i).sum())
        t = rng.integers(0, lengths[i], size=n)
        z.append(latent_store.read_latents(e, 0, int(lengths[i]))[t].astype(np.float32))
        steps = latent_store.read_steps(e, 0, int(lengths[i]))
        if "actions" not in steps:
            raise ValueError(f"fit_action_adapter: episode {e} has no recorded actions")
        a.append(np.asarray(steps["actions"])[t])
        k.append(latent_store.read_labels(label, e, 0, int(lengths[i]))[t])
    z = latent_store.normalize(torch.from_numpy(np.concatenate(z)))
    return z, torch.from_numpy(np.concatenate(a)).long(), torch.from_numpy(np.concatenate(k)).long()


def fit_action_adapter(
    latent_store,
    train_episodes: Sequence[int],
    val_episodes: Sequence[int],
    *,
    num_actions: int,
    num_codes: int,
    binding=None,
    label: str = "lam",
    samples: int = 60_000,
    steps: int = 1500,
    batch: int = 256,
    lr: float = 2e-3,
    hidden: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[ActionAdapter, dict[str, Any]]:
    """Fit an adapter on ``samples`` transitions of ``train_episodes``; returns it and a summary
    with its held-out accuracy against the LAM's codes (and, given ``binding``, the accuracy of
    the global table ``binding.to_latent`` on the same transitions). The adapter is fitted and
    returned on ``device``."""
    from rich.progress import Progress

    torch.manual_seed(seed)
    c, h, w = latent_store.latent_shape
    adapter = ActionAdapter(ActionAdapterConfig(c, h, w, num_actions, num_codes, hidden)).to(device)
    z, a, k = _transitions(latent_store, train_episodes, samples, seed, label)
    if int(a.max()) >= num_actions or int(k.max()) >= num_codes:
        raise ValueError(f"fit_action_adapter: actions reach {int(a.max())} (num_actions={num_actions}), "
                         f"codes {int(k.max())} (num_codes={num_codes})")
    z, a, k = z.to(device), a.to(device), k.to(device)
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.1)
    g = torch.Generator().manual_seed(seed)
    adapter.train()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("action adapter", total=steps)
        for _ in range(steps):
            idx = torch.randint(len(z), (batch,), generator=g)
            loss = F.cross_entropy(adapter(z[idx], a[idx]), k[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(task)
    adapter.eval()
    summary: dict[str, Any] = {"samples": int(len(z)), "steps": steps, "train_loss": float(loss.detach())}
    if len(val_episodes):
        zv, av, kv = _transitions(latent_store, val_episodes, min(samples, 8192), seed + 1, label)
        with torch.no_grad():
            pred = torch.cat([adapter.codes(zv[i : i + 1024].to(device), av[i : i + 1024].to(device)).cpu()
                              for i in range(0, len(zv), 1024)])
        summary["val_transitions"] = int(len(zv))
        summary["val_accuracy"] = float((pred == kv).float().mean())
        if binding is not None:
            table = torch.as_tensor(binding.to_latent(av.numpy(), default=0))
            summary["binding_val_accuracy"] = float((table == kv).float().mean())
    return adapter, summary


__all__ = ["ActionAdapter", "ActionAdapterConfig", "fit_action_adapter"]
