"""Callbacks shared by every stage: checkpoint on exit, sample pictures, wall-clock budget."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np

from worldsim.training.base import TrainingDiverged

LAST = "last.ckpt"


class ExitCheckpoint(L.Callback):
    """Writes ``last.ckpt`` when training ends, normally or by interruption (Ctrl-C, SIGTERM,
    an error), so ``resume=true`` continues from there. On divergence (a NaN loss) it writes
    nothing, so the last good checkpoint stays in place.
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TrainingDiverged) or trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.path)


class SampleImages(L.Callback):
    """Every ``every`` steps, asks the module for pictures (``module.make_samples(batch)`` ->
    ``{name: uint8 [T, H, W, 3] frames or a [H, W, 3] image}``) on a fixed held-out batch and
    saves them under ``<dirpath>/<name>_<step>.png`` (frames are laid out in a grid) or ``.mp4``
    when the module marks them as video (names ending in ``_video``).
    """

    def __init__(self, dirpath: Path, batch: dict, every: int) -> None:
        self.dirpath = Path(dirpath)
        self.batch = batch
        self.every = max(1, int(every))

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or not hasattr(pl_module, "make_samples"):
            return
        from worldsim.video import save_image_grid, save_video

        was_training = pl_module.training
        pl_module.eval()
        try:
            samples = pl_module.make_samples(self.batch)
        finally:
            pl_module.train(was_training)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        for name, frames in samples.items():
            frames = np.asarray(frames)
            if name.endswith("_video"):
                save_video(frames, self.dirpath / f"{name}_{step:07d}.mp4", fps=8)
            else:
                save_image_grid(frames, self.dirpath / f"{name}_{step:07d}.png")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module)


class StepTimer(L.Callback):
    """Logs seconds of training so far (``train/seconds``), for learning curves against time.

    The count lives in Lightning checkpoints (``state_dict``), so a resumed run continues it:
    ``total`` is the training time of every run that led to this one, which is what a stage's
    ``train_seconds`` reports."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.before = 0.0  # seconds trained by the runs this one resumed from

    @property
    def total(self) -> float:
        """Seconds trained so far, across resumes."""
        return self.before + (0.0 if self.start is None else time.perf_counter() - self.start)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/seconds", self.total, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.total}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before = float(state_dict.get("elapsed", 0.0))


def trained_seconds(trainer: L.Trainer) -> float:
    """Training time across resumes: the ``StepTimer`` every stage's trainer carries
    (``train.make_trainer``)."""
    return next(c for c in trainer.callbacks if isinstance(c, StepTimer)).total
