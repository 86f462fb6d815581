"""Random windows of latent frames from a latent cache (``LatentStore``): the training data of
the latent action model and the dynamics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from worldsim.data.episode import STEP_FIELDS
from worldsim.data.latent_store import LatentStore, LatentStoreError


class LatentClipDataset(Dataset):
    """Random windows of ``clip_len`` latent frames from a ``LatentStore``.

    Like ``ClipDataset``: item ``i`` is a pure function of ``(seed, i)`` (a window drawn
    uniformly among all valid windows of all episodes), so epochs repeat and DataLoader workers
    agree with a single process. Items hold ``latents`` float32 ``[t, c, h, w]`` (standardised
    per channel when ``normalize``), the per-step arrays of the ``t - 1`` transitions inside the
    window (``actions``, ``rewards``, ``terminated``, ``truncated``: a key appears only when
    every episode has it), the requested label sets under their names, ``episode`` and
    ``start``.
    """

    def __init__(
        self,
        latent_store: LatentStore | str | Path,
        clip_len: int,
        *,
        seed: int = 0,
        length: int | None = None,
        normalize: bool = True,
        labels: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
    ) -> None:
        store = latent_store if isinstance(latent_store, LatentStore) else LatentStore(latent_store)
        if clip_len < 1:
            raise ValueError(f"LatentClipDataset: clip_len must be >= 1, got {clip_len}")
        self.store = store
        self.clip_len = clip_len
        self.seed = int(seed)
        self.normalize = normalize
        self.labels = tuple(labels or ())
        missing = [name for name in self.labels if name not in store.label_names()]
        if missing:
            raise LatentStoreError(
                f"LatentClipDataset: {store.root} has no labels {missing}; available: "
                f"{store.label_names()}"
            )
        lengths = np.array([store.episode_length(i) for i in range(len(store))], np.int64)
        windows = np.maximum(lengths - clip_len + 1, 0)
        if episodes is not None:  # only these episodes (e.g. a train / held-out split)
            chosen = np.zeros(len(store), bool)
            chosen[np.asarray(list(episodes), dtype=np.int64)] = True
            windows = np.where(chosen, windows, 0)
        if windows.sum() == 0:
            raise ValueError(
                f"LatentClipDataset: no episode in {store.root} has {clip_len} latent frames "
                f"(the longest has {lengths.max()})"
            )
        self._episodes = np.flatnonzero(windows)
        self._cum = np.cumsum(windows[self._episodes])
        self.num_windows = int(self._cum[-1])
        self.length = self.num_windows if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"LatentClipDataset: length must be >= 1, got {length}")
        self.step_keys = tuple(
            n for n in STEP_FIELDS if all(store.has(int(e), n) for e in self._episodes)
        )

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """``(episode, start)`` of item ``index``: a pure function of ``(seed, index)``."""
        if not 0 <= index < self.length:
            raise IndexError(f"LatentClipDataset index {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, int(index)])
        w = int(rng.integers(self.num_windows))
        k = int(np.searchsorted(self._cum, w, side="right"))
        return int(self._episodes[k]), w - (int(self._cum[k - 1]) if k else 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode, start = self.locate(int(index))
        stop = start + self.clip_len
        z = torch.from_numpy(self.store.read_latents(episode, start, stop).astype(np.float32))
        item: dict[str, Any] = {
            "latents": self.store.normalize(z) if self.normalize else z,
            "episode": episode,
            "start": start,
        }
        steps = self.store.read_steps(episode, start, stop - 1)
        for name in self.step_keys:
            item[name] = torch.from_numpy(np.ascontiguousarray(steps[name]))
        for name in self.labels:
            item[name] = torch.from_numpy(self.store.read_labels(name, episode, start, stop - 1))
        return item

    def __repr__(self) -> str:
        return (
            f"LatentClipDataset({self.store.root}, clip_len={self.clip_len}, "
            f"windows={self.num_windows}, length={self.length}, labels={list(self.labels)})"
        )
