"""What a training run prints: one progress bar over the whole run, and no library chatter.

Our trainer counts in steps (``max_steps``, ``max_epochs=-1``; one Lightning "epoch" is one
checkpoint interval), so Lightning's own bar would read "Epoch 2/-2" and restart at every
interval. :class:`StepProgressBar` shows one bar, ``step k / max_steps``, that a resumed run
continues. :func:`quiet_lightning` drops Lightning's info lines (accelerator availability, its
cloud-logging advert, "max_steps reached", the checkpoint writer's defaults): warnings still
print.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

# Loggers of Lightning's ``rank_zero_info`` (the pytorch and fabric halves each install one),
# and of its checkpoint writer ("`weights_only` was not set" on every full checkpoint).
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)


def quiet_lightning() -> None:
    """Lightning's info lines stay unprinted; its warnings still print."""
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class StepProgressBar(RichProgressBar):
    """One bar for the whole run: ``train`` from the global step to ``trainer.max_steps``."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'train':{len(self.validation_description)}}"

    def _train_total(self) -> int:
        return int(self.trainer.max_steps)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self.refresh()

    def _initialize_train_progress_bar_id(self) -> None:
        self.train_progress_bar_id = self._add_task(self._train_total(), self._get_train_description(0))
        self._update(self.train_progress_bar_id, self.trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
