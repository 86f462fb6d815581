"""Random fixed-length clips from an ``EpisodeStore``, as a map-style torch ``Dataset``.

A clip of ``clip_len`` frames with frame skip ``k`` spans ``(clip_len - 1) * k + 1`` real frames
(the *window*). Item ``i`` is a pure function of ``(seed, i)``: a window is drawn uniformly
among all valid windows of all episodes (so an episode is chosen with probability proportional
to its number of windows), which makes epochs reproducible and DataLoader workers agree with a
single process no matter how indices are split among them.

Per-step arrays follow the transition convention (docs/architecture.md): with skip ``k`` the
clip transition ``j`` (kept frame ``j`` -> ``j + 1``) covers the ``k`` real transitions
``start + j*k .. start + j*k + k - 1``; its action is the first of them, its reward their sum,
its ``terminated`` / ``truncated`` whether any of them is set.

Item shapes (einops): ``frames`` uint8 ``[t, h, w, 3]``; ``actions`` int64 ``[t-1]`` or float32
``[t-1, d]``; ``rewards`` float32 ``[t-1]``; ``terminated`` / ``truncated`` bool ``[t-1]``;
``episode`` and ``start`` ints. A per-step key appears only when every episode of the store has
that array, so ``default_collate`` always sees the same keys.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from worldsim.data.episode import STEP_FIELDS
from worldsim.data.store import EpisodeStore


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[t, h, w, 3]`` -> uint8 ``[t, H, W, 3]``: area averaging when shrinking, else bilinear."""
    h, w = frames.shape[1:3]
    if (h, w) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()  # t h w c -> t c h w
    if size[0] <= h and size[1] <= w:
        x = F.interpolate(x, size=size, mode="area")
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames sampled from an ``EpisodeStore``.

    Args:
        store: an ``EpisodeStore`` or the path of one (opened without creating it).
        clip_len: frames per clip (>= 1).
        frame_skip: keep every ``frame_skip``-th frame (>= 1).
        resize: ``(H, W)`` or an int for square output; ``None`` keeps the stored size.
        seed: the sampling seed; item ``i`` depends only on ``(seed, i)``.
        length: nominal epoch length; default the number of valid windows.
        with_actions: include ``actions`` (when every episode has them).
        episodes: sample only these episode indices (e.g. a train/validation split); default
            all. Negative indices count from the end; ``item["episode"]`` is the store index.

    Only the frames of the chosen window are read (``EpisodeStore.read_frames``); shard files
    open lazily and are never shared across processes, so the dataset pickles into workers.
    """

    def __init__(
        self,
        store: EpisodeStore | str,
        clip_len: int,
        *,
        frame_skip: int = 1,
        resize: int | tuple[int, int] | None = None,
        seed: int = 0,
        length: int | None = None,
        with_actions: bool = True,
        episodes: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(store, EpisodeStore):
            store = EpisodeStore(store, create=False)
        if clip_len < 1:
            raise ValueError(f"ClipDataset: clip_len must be >= 1, got {clip_len}")
        if frame_skip < 1:
            raise ValueError(f"ClipDataset: frame_skip must be >= 1, got {frame_skip}")
        if isinstance(resize, int):
            resize = (resize, resize)
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ValueError(
                f"ClipDataset: resize must be (H, W) with positive sizes, got {resize}"
            )
        self.store = store
        self.clip_len = clip_len
        self.frame_skip = frame_skip
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        self.seed = int(seed)
        self.window = (clip_len - 1) * frame_skip + 1

        if episodes is None:
            ids = np.arange(len(store), dtype=np.int64)
        else:
            n = len(store)
            bad = [int(e) for e in episodes if not -n <= int(e) < n]
            if bad:
                raise IndexError(
                    f"ClipDataset: episodes {bad} out of range for store {store.root} "
                    f"with {n} episodes"
                )
            ids = np.array([int(e) % n for e in episodes], dtype=np.int64)
        if len(ids) == 0:
            what = "no episodes" if episodes is None else "an empty `episodes` selection"
            raise ValueError(f"ClipDataset: store {store.root} has {what}")
        lengths = np.array([store.episode_length(int(i)) for i in ids], dtype=np.int64)
        windows = np.maximum(lengths - self.window + 1, 0)
        if windows.sum() == 0:
            raise ValueError(
                f"ClipDataset: no episode in {store.root} is long enough: the longest has "
                f"{lengths.max()} frames, a clip of {clip_len} frames with frame_skip "
                f"{frame_skip} needs {self.window}"
            )
        usable = np.flatnonzero(windows)
        self._episodes = ids[usable]  # store indices of episodes that hold >= 1 window
        self._cum = np.cumsum(windows[usable])  # windows up to the end of each
        self.num_windows = int(self._cum[-1])
        self.length = self.num_windows if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"ClipDataset: length must be >= 1, got {length}")

        # Per-step keys: only those every usable episode has (default_collate needs equal keys).
        names = [n for n in STEP_FIELDS if with_actions or n != "actions"]
        self.step_keys: tuple[str, ...] = tuple(
            n for n in names if all(store.has(int(e), n) for e in self._episodes)
        )
        partial = [
            n
            for n in names
            if n not in self.step_keys and any(store.has(int(e), n) for e in self._episodes)
        ]
        if partial:
            warnings.warn(
                f"ClipDataset: {partial} present in only some episodes of {store.root}; "
                "left out of the clips",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """``(episode, start)`` of item ``index``: a pure function of ``(seed, index)``."""
        if not 0 <= index < self.length:
            raise IndexError(f"ClipDataset index {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, int(index)])
        w = int(rng.integers(self.num_windows))
        k = int(np.searchsorted(self._cum, w, side="right"))
        before = int(self._cum[k - 1]) if k else 0
        return int(self._episodes[k]), w - before

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode, start = self.locate(int(index))
        k, t = self.frame_skip, self.clip_len
        frames = self.store.read_frames(episode, start, start + self.window)[::k]
        frames_t = torch.from_numpy(np.ascontiguousarray(frames))
        if self.resize is not None:
            frames_t = resize_frames(frames_t, self.resize)
        item: dict[str, Any] = {"frames": frames_t, "episode": episode, "start": start}
        if self.step_keys and t > 1:
            steps = self.store.read_steps(episode, start, start + (t - 1) * k)
            for name in self.step_keys:
                x = steps[name].reshape(t - 1, k, *steps[name].shape[1:])  # (j k) ... -> j k ...
                if name == "actions":
                    x = x[:, 0]
                elif name == "rewards":
                    x = x.sum(axis=1, dtype=np.float32)
                else:
                    x = x.any(axis=1)
                item[name] = torch.from_numpy(np.ascontiguousarray(x))
        elif self.step_keys:
            for name in self.step_keys:  # a one-frame clip has no transitions
                sample = self.store.read_steps(episode, 0, 0)[name]
                item[name] = torch.from_numpy(sample)
        return item

    def __repr__(self) -> str:
        return (
            f"ClipDataset({self.store.root}, clip_len={self.clip_len}, frame_skip={self.frame_skip}, "
            f"resize={self.resize}, windows={self.num_windows}, length={self.length})"
        )
