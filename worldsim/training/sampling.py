"""Resumable, rank-aware sampling for map-style datasets whose item ``i`` is a pure function of ``i``.

Our clip datasets draw window ``i`` from ``(seed, i)`` alone, for any non-negative ``i``. An
"epoch" of the trainer is ``steps_per_epoch`` optimizer steps (the checkpoint interval), and
epoch ``e`` reads the indices ``[e * S * B, (e + 1) * S * B)`` split across ranks. Because the
indices depend only on the epoch number, a run resumed from an end-of-epoch checkpoint reads
exactly the batches an uninterrupted run would have read, and every epoch sees fresh windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[int]):
    """Indices ``epoch * span + rank + k * world_size`` for ``k < num_samples``.

    ``span`` is the number of samples one epoch consumes over all ranks (steps x batch x world).
    Lightning calls ``set_epoch`` before each epoch, also after a resume.
    """

    def __init__(self, samples_per_rank: int, *, rank: int = 0, world_size: int = 1) -> None:
        if samples_per_rank <= 0:
            raise ValueError(f"EpochSampler: samples_per_rank must be positive, got {samples_per_rank}")
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank {rank} outside world of size {world_size}")
        self.samples_per_rank = samples_per_rank
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_rank

    def __iter__(self) -> Iterator[int]:
        span = self.samples_per_rank * self.world_size
        base = self.epoch * span + self.rank
        return iter(range(base, base + span, self.world_size))


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
