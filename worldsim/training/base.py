"""What every stage's LightningModule shares: the optimizer, NaN guard and exact resume.

A stage module receives a plain ``nn.Module`` (the network) and an :class:`OptimConfig`, and
implements ``compute_loss(batch) -> dict`` (with a ``"loss"`` entry) and, optionally,
``validation_metrics(batch) -> dict``. Everything here stays at the edge: no model file imports
Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite (the NaN guard below) or blew up while finite (the
    divergence guard, ``callbacks.DivergenceGuard``). No checkpoint is written after it;
    ``callbacks.ExitCheckpoint`` fills in which one is kept, and the message says so: the last
    good checkpoint (one of a step before ``since``, the first bad one), one holding weights of
    ``since`` or later, or none at all.
    """

    def __init__(self, message: str, *, since: int) -> None:
        super().__init__(message)
        self.since = since
        self.checkpoint_known = False
        self.checkpoint_step: int | None = None

    def __str__(self) -> str:
        message = str(self.args[0])
        if not self.checkpoint_known:
            return message
        if self.checkpoint_step is None:
            return f"{message}; no checkpoint was written before it, so there is nothing to resume from"
        if self.checkpoint_step < self.since:
            return f"{message}; the last good checkpoint (step {self.checkpoint_step}) is kept"
        return (f"{message}; the last checkpoint (step {self.checkpoint_step}) holds weights from the first "
                f"bad step ({self.since}) or later, so resuming from it may diverge again")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: str = "cosine"  # constant | cosine (to min_lr_ratio * lr at total_steps)
    total_steps: int = 10000
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"trainer.schedule must be constant or cosine, got {self.schedule!r}")

    def factor(self, step: int) -> float:
        """Learning-rate multiplier at ``step``: linear warm-up, then constant or cosine decay."""
        warmup = max(1, self.warmup_steps)
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def optim_config(trainer_cfg: DictConfig) -> OptimConfig:
    """The optimizer settings of a ``trainer`` config node."""
    return OptimConfig(lr=float(trainer_cfg.lr), weight_decay=float(trainer_cfg.weight_decay),
                       warmup_steps=int(trainer_cfg.warmup_steps), schedule=str(trainer_cfg.schedule),
                       total_steps=int(trainer_cfg.max_steps))


class StageModule(L.LightningModule):
    """Base of the per-stage modules. ``self.net`` is the network being trained."""

    def __init__(self, net: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.net = net
        self.optim = optim

    # --- to implement -------------------------------------------------------------------------
    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validation_metrics(self, batch: dict) -> dict[str, float | torch.Tensor]:
        return {}

    def trained_modules(self) -> list[nn.Module]:
        """The modules the optimizer updates (stages that train heads too add them)."""
        return [self.net]

    # --- Lightning hooks ----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            # Raised before backward and the optimizer step, so the weights are still the last
            # good ones; ExitCheckpoint does not overwrite checkpoints on divergence.
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.global_step} (parts: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1)
                + ")",
                since=self.global_step,
            )
        logs = {f"train/{k}": v.detach().float() for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=self._batch_size(batch))
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        metrics = self.validation_metrics(batch)
        if metrics:
            self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_epoch=True, sync_dist=True,
                          batch_size=self._batch_size(batch), prog_bar=False)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in nn.ModuleList(self.trained_modules()).named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, betas=self.optim.betas,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.optim.factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The global torch RNG drives the model's own noise (VAE sampling, flow noise levels);
        # restoring it makes a resumed CPU run end with the same weights as an uninterrupted one.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("torch_rng_state")
        if state is not None:
            torch.set_rng_state(state)

    @staticmethod
    def _batch_size(batch: dict) -> int:
        for v in batch.values():
            if torch.is_tensor(v):
                return int(v.shape[0])
        return 1


@dataclass
class Stage:
    """What a stage builder (``stages.BUILDERS``) hands to the trainer (``train.run``)."""

    module: StageModule
    train_set: Dataset
    val_set: Dataset | None
    finish: Callable[[L.Trainer, StageModule], dict] = lambda trainer, module: {}
    extra_callbacks: list[L.Callback] = field(default_factory=list)
