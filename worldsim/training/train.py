"""``worldsim train stage=...``: the one training entry every stage uses.

It builds the stage (network, datasets, what to export at the end) from the config, wraps it in
Lightning's Trainer with our callbacks, and resumes from ``<run_dir>/checkpoints/last.ckpt``
when ``resume=true``. Layout of a run directory::

    <run_dir>/checkpoints/   Lightning checkpoints (every trainer.ckpt_every steps, and last.ckpt)
    <run_dir>/logs/          CSV and TensorBoard logs (metrics.csv keeps its rows across resumes)
    <run_dir>/samples/       pictures saved during training
    <run_dir>/model/         the trained network as safetensors + JSON config (what later stages load)
    <run_dir>/config.yaml    the composed config of the run
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from worldsim.config import ConfigError
from worldsim.training.base import Stage
from worldsim.training.callbacks import (
    LAST,
    ExitCheckpoint,
    ResumableCSVLogger,
    SampleImages,
    StepTimer,
    divergence_guard,
)
from worldsim.training.progress import StepProgressBar, quiet_lightning
from worldsim.training.sampling import FixedSubset, StepSampler, loader_generator
from worldsim.training.stages import BUILDERS
from worldsim.weights import WeightsError, load_plain


class StageData(L.LightningDataModule):
    """Builds the loaders once the trainer knows this process's rank and the world size."""

    def __init__(self, cfg: DictConfig, stage: Stage) -> None:
        super().__init__()
        self.cfg = cfg
        self.stage = stage

    def train_dataloader(self) -> DataLoader:
        batch, workers = int(self.cfg.data.batch_size), int(self.cfg.data.num_workers)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = StepSampler(int(self.cfg.trainer.ckpt_every), batch, lambda: self.trainer.global_step,
                              rank=rank, world_size=world)
        return DataLoader(self.stage.train_set, batch_size=batch, sampler=sampler, num_workers=workers,
                          generator=loader_generator(int(self.cfg.seed)), persistent_workers=workers > 0,
                          drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.stage.val_set is None or len(self.stage.val_set) == 0:
            return []
        return DataLoader(self.stage.val_set, batch_size=int(self.cfg.data.batch_size), shuffle=False,
                          generator=loader_generator(int(self.cfg.seed)))


def resume_path(run_dir: Path, resume: bool) -> tuple[str | None, int]:
    """The checkpoint to resume from (None without ``resume``) and its global step (0 without).

    The file is read with ``weights_only=True`` (tensors and plain data only), here and in
    Lightning's own load (``train.run``): a checkpoint holding other objects is refused before
    anything in it runs."""
    ckpt = run_dir / "checkpoints" / LAST
    if not resume:
        return None, 0
    if not ckpt.is_file():
        raise ConfigError(f"resume=true but there is no checkpoint at {ckpt}; run without resume=true to start")
    try:
        state = load_plain(ckpt, mmap=True)
        step = int(state["global_step"])
    except WeightsError as err:
        raise ConfigError(f"{err}; remove it to resume from an earlier one in the same folder, or start "
                          "again") from err
    except (TypeError, KeyError, ValueError) as err:
        raise ConfigError(f"cannot read checkpoint {ckpt}: no global_step in it ({err!r}); it is not a "
                          "Lightning checkpoint of worldsim train") from err
    return str(ckpt), step


def make_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], resumed_step: int = 0) -> L.Trainer:
    tr = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    every = int(tr.ckpt_every)
    # One Lightning "epoch" is one checkpoint interval; the data depends only on the global step
    # (see sampling.StepSampler), so a resume reads the batches an uninterrupted run would.
    val_epochs = max(1, math.ceil(int(tr.val_every) / every))
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_top_k=1, save_last=True),
        ExitCheckpoint(ckpt_dir),
        StepTimer(),
        *callbacks,
    ]
    try:
        guard = divergence_guard(OmegaConf.to_container(tr.divergence) if tr.divergence is not None else None)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if guard is not None:
        callbacks.append(guard)
    if tr.progress:
        callbacks.append(StepProgressBar())
    max_time = None if tr.max_minutes is None else {"minutes": float(tr.max_minutes)}
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=tr.accelerator,
        devices=tr.devices,
        num_nodes=tr.num_nodes,
        strategy=tr.strategy,
        precision=tr.precision,
        max_steps=int(tr.max_steps),
        max_epochs=-1,
        max_time=max_time,
        limit_train_batches=every,
        check_val_every_n_epoch=val_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=int(tr.log_every),
        gradient_clip_val=float(tr.grad_clip) if tr.grad_clip else None,
        logger=[ResumableCSVLogger(str(run_dir), keep_before=resumed_step),
                TensorBoardLogger(str(run_dir), name="logs", version="")],
        callbacks=callbacks,
        enable_progress_bar=bool(tr.progress),
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=bool(tr.deterministic),
    )


def run(cfg: DictConfig) -> dict:
    """Train ``cfg.stage``; returns the stage's summary (metrics, paths, seconds)."""
    if cfg.stage not in BUILDERS:
        raise ConfigError(f"stage={cfg.stage!r}: allowed stages are {', '.join(BUILDERS)}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, resumed_step = resume_path(run_dir, bool(cfg.resume))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    # The dynamics stage keeps an EMA copy and a frozen decoder in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Lightning's own tree flattening still builds torch's deprecated LeafSpec.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    quiet_lightning()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    stage = BUILDERS[cfg.stage](cfg, run_dir)
    module = stage.module
    callbacks = list(stage.extra_callbacks)
    if stage.val_set is not None and len(stage.val_set) > 0:
        sample_batch = next(iter(DataLoader(FixedSubset(stage.val_set, min(8, len(stage.val_set))), batch_size=8)))
        callbacks.append(SampleImages(run_dir / "samples", sample_batch, int(cfg.trainer.sample_every)))
    trainer = make_trainer(cfg, run_dir, callbacks, resumed_step)
    trainer.fit(module, datamodule=StageData(cfg, stage), ckpt_path=ckpt, weights_only=True)
    summary = stage.finish(trainer, module) if trainer.global_rank == 0 else {}
    summary["steps"] = int(trainer.global_step)
    return summary
