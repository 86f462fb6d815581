"""A training run prints one step-counting progress bar and none of Lightning's info lines."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import rank_zero
from torch.utils.data import DataLoader, TensorDataset

from worldsim.training.progress import LIGHTNING_INFO_LOGGERS, StepProgressBar, quiet_lightning


class _Line(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_quiet_lightning_silences_its_info_logger_only():
    quiet_lightning()
    assert rank_zero.rank_zero_module.log.name in LIGHTNING_INFO_LOGGERS
    for name in LIGHTNING_INFO_LOGGERS:
        log = logging.getLogger(name)
        assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_step_bar_counts_global_steps_up_to_max_steps(tmp_path):
    bar = StepProgressBar()
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=7, max_epochs=-1, limit_train_batches=3,
                        callbacks=[bar], logger=False, enable_checkpointing=False, enable_model_summary=False,
                        accelerator="cpu")
    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=2)
    seen = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            task = bar.progress.tasks[bar.train_progress_bar_id]
            seen.append((task.completed, task.total, task.description.strip()))

    trainer.callbacks.append(Watch())
    trainer.fit(_Line(), data)
    assert seen[-1][:2] == (7, 7)
    assert [c for c, _, _ in seen] == list(range(1, 8))  # one bar across the 3-step "epochs"
    assert {(t, d) for _, t, d in seen} == {(7, "train")}
