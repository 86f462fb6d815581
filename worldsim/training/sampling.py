"""Resumable, rank-aware sampling for map-style datasets whose item ``i`` is a pure function of ``i``.

Our clip datasets draw window ``i`` from ``(seed, i)`` alone, for any non-negative ``i``. The
sampler reads the trainer's global step when an epoch's iterator is created and yields the
indices of the batches from that step on: step ``s`` reads
``[s * B * world, (s + 1) * B * world)`` split across ranks. The data therefore depends only on
the step, so a resumed run reads exactly the batches an uninterrupted run would have read
(also after a mid-epoch checkpoint), and every step sees fresh windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StepSampler(Sampler[int]):
    """Indices for ``steps_per_epoch`` batches of ``batch_size``, starting at the current step.

    ``current_step()`` is read each time an iterator is created (Lightning creates one per
    epoch, and one after restoring a checkpoint); an iterator started mid-epoch yields only the
    rest of the epoch.
    """

    def __init__(self, steps_per_epoch: int, batch_size: int, current_step: Callable[[], int], *,
                 rank: int = 0, world_size: int = 1) -> None:
        if steps_per_epoch <= 0 or batch_size <= 0:
            raise ValueError(f"StepSampler: steps_per_epoch ({steps_per_epoch}) and batch_size ({batch_size}) "
                             "must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"StepSampler: rank {rank} outside world of size {world_size}")
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.current_step = current_step
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        step = int(self.current_step())
        left = self.steps_per_epoch - step % self.steps_per_epoch
        per_step = self.batch_size * self.world_size
        for s in range(step, step + left):
            base = s * per_step + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)


class FixedSubset(Dataset):
    """The first ``n`` items of a pure-function dataset: a held-out set that never changes."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset = dataset
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} outside [0, {self.n})")
        return self.dataset[i]


def loader_generator(seed: int) -> torch.Generator:
    """A private generator for a DataLoader, so that creating iterators never draws from the
    global torch RNG (which the model's own noise uses and checkpoints restore)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g
