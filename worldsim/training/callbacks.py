"""What every stage's trainer carries: checkpoint on exit, the divergence guard, sample
pictures, wall-clock budget, and a CSV logger that keeps its rows across resumes."""

from __future__ import annotations

import csv
import math
import statistics
import time
from collections import deque
from pathlib import Path

import lightning as L
import numpy as np
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from worldsim.data.atomic import atomic_path
from worldsim.training.base import TrainingDiverged
from worldsim.video import save_image_grid, save_video

LAST = "last.ckpt"


class ExitCheckpoint(L.Callback):
    """Writes ``last.ckpt`` when training ends, normally or by interruption (Ctrl-C, SIGTERM,
    an error), so ``resume=true`` continues from there. On divergence (:class:`TrainingDiverged`)
    it writes nothing, so the last checkpoint written before stays in place, and it tells the
    exception which step that checkpoint holds (or that none was written).
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved_step: int | None = None  # global step of the latest checkpoint of this run

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_step = int(checkpoint["global_step"])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_step = int(checkpoint["global_step"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)  # the full state (optimizer, loops, callbacks): resume needs it

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TrainingDiverged):
            exception.checkpoint_known = True
            exception.checkpoint_step = self.saved_step if self.path.is_file() else None
            return
        if trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.path)  # the full state (optimizer, loops, callbacks): resume needs it


class DivergenceGuard(L.Callback):
    """Stops a run whose loss stays finite but blows up: after ``warmup`` steps, a loss above
    ``factor`` x the median of the last ``window`` losses counts as high; ``patience`` high
    losses in a row raise :class:`TrainingDiverged` (like the NaN guard in ``base.py``). High
    losses do not enter the window, so the median stays that of the healthy run. Its state
    travels in the checkpoint, so a resumed run keeps watching from where it was.
    """

    def __init__(self, factor: float, patience: int, warmup: int, window: int) -> None:
        if not factor > 1 or int(patience) < 1 or int(warmup) < 0 or int(window) < 1:
            raise ValueError(
                "trainer.divergence needs factor > 1, patience >= 1, warmup >= 0 and window >= 1 "
                f"(or null to switch it off), got factor={factor}, patience={patience}, "
                f"warmup={warmup}, window={window}"
            )
        self.factor, self.patience, self.warmup = float(factor), int(patience), int(warmup)
        self.losses: deque[float] = deque(maxlen=int(window))
        self.seen = 0  # losses looked at (counts across resumes)
        self.high = 0  # high losses in a row so far
        self.since: int | None = None  # step of the first of them

    def check(self, step: int, loss: float) -> None:
        """Look at the loss of training step ``step``; raises :class:`TrainingDiverged`."""
        self.seen += 1
        if self.seen > self.warmup and self.losses:
            median = statistics.median(self.losses)
            if loss > self.factor * median:
                if not self.high:
                    self.since = step
                self.high += 1
                if self.high >= self.patience:
                    raise TrainingDiverged(
                        f"loss diverged at step {step}: {self.high} steps in a row above "
                        f"{self.factor:g} x its running median {median:.4g} (since step {self.since}, "
                        f"last {loss:.4g}; trainer.divergence sets the rule)",
                        since=self.since,
                    )
                return
        self.high, self.since = 0, None
        if math.isfinite(loss):
            self.losses.append(loss)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        if trainer.world_size > 1:  # every process sees the same mean loss, so all stop together
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        # global_step already counts this batch's optimizer step.
        self.check(trainer.global_step - 1, float(loss))

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "seen": self.seen, "high": self.high, "since": self.since}

    def load_state_dict(self, state_dict: dict) -> None:
        self.losses.clear()
        self.losses.extend(float(x) for x in state_dict["losses"])
        self.seen, self.high, self.since = int(state_dict["seen"]), int(state_dict["high"]), state_dict["since"]


def divergence_guard(settings) -> DivergenceGuard | None:
    """The guard for ``trainer.divergence`` (a mapping of factor, patience, warmup, window), or
    None when it is switched off (``null``, or ``factor: 0``)."""
    if settings is None:
        return None
    keys = ("factor", "patience", "warmup", "window")
    if sorted(settings) != sorted(keys):
        raise ValueError(f"trainer.divergence needs the keys {', '.join(keys)} (or null to switch it off), "
                         f"got {sorted(settings)}")
    try:
        values = {k: float(settings[k]) if k == "factor" else int(settings[k]) for k in keys}
    except (TypeError, ValueError) as err:
        raise ValueError(f"trainer.divergence: factor must be a number and patience, warmup and window "
                         f"integers, got {dict(settings)}") from err
    return DivergenceGuard(**values) if values["factor"] else None


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


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept (its rows from
    steps before ``keep_before``) instead of deleted, and rows are appended to it."""

    def __init__(self, log_dir: str, keep_before: int) -> None:
        self.keep_before = keep_before
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by __init__ instead of deleting the file
        path = Path(self.metrics_file_path)
        if self.keep_before <= 0 or not path.is_file():
            path.unlink(missing_ok=True)
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = sorted(reader.fieldnames or [])
            rows = [row for row in reader if _step_of(row) < self.keep_before]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


def _step_of(row: dict) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return math.inf


class ResumableCSVLogger(CSVLogger):
    """``<run_dir>/logs/metrics.csv`` across resumes: a run resumed from a checkpoint at step
    ``keep_before`` keeps the earlier rows of steps before it (rows logged after that checkpoint
    by the interrupted run are replaced by the resumed run's), and every logged row is written
    at once, so a killed run loses none that its checkpoint covers. A run that does not resume
    starts a new file."""

    def __init__(self, save_dir: str, keep_before: int) -> None:
        super().__init__(save_dir, name="logs", version="", flush_logs_every_n_steps=1)
        self.keep_before = keep_before

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_before)
        return self._experiment


def trained_seconds(trainer: L.Trainer) -> float:
    """Training time across resumes: the ``StepTimer`` every stage's trainer carries
    (``train.make_trainer``)."""
    return next(c for c in trainer.callbacks if isinstance(c, StepTimer)).total
