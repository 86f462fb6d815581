"""The latent cache: every episode encoded once by a trained autoencoder, so later stages
(latent action model, dynamics) train on small float16 latents and never re-encode pixels.

Layout of a cache directory (every file written atomically)::

    manifest.json                 autoencoder config + weight fingerprint (written first)
    episodes/                     an ``ArrayStore`` (worldsim/data/store.py), item i = episode i:
      index.json
      shard_000000.npz            latents float16 [t, c, h, w] (chunked along t), the episode's
                                  actions/rewards/terminated/truncated, its metadata
    labels/<name>.npz             optional per-transition int labels, one array per episode
    stats.json                    per-channel mean/std (float64 over all latents), episode
                                  count, config and fingerprint; present = cache complete

``encode_store`` resumes: episode shards already on disk are kept, so a killed run continues
where it stopped. A cache refuses to be extended or read by an autoencoder whose fingerprint
differs from the one that wrote it.

With temporal compression ``k`` (see ``AutoencoderConfig``), an episode of ``T`` frames is
trimmed to ``t * k`` frames (``t = T // k`` latents) and its per-step arrays are aggregated to
the ``t - 1`` latent transitions (see ``aggregate_steps``), so the cache always follows the
project's convention: ``actions[j]`` was taken on latent ``j`` and led to latent ``j + 1``.

Einops legend: t latent frames, c latent channels, h w latent grid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from worldsim.data.atomic import atomic_write_json, is_temp_file
from worldsim.data.episode import STEP_FIELDS, Episode, frames_to_tensor
from worldsim.data.shards import ShardReader, write_shard
from worldsim.data.store import ArrayStore

FORMAT = 1
_LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = {"latents", *STEP_FIELDS}


class LatentStoreError(ValueError):
    """A latent cache is missing, incomplete, or does not match what the caller expects."""


def _label_key(i: int) -> str:
    return f"ep{i:06d}"


def aggregate_steps(
    steps: dict[str, np.ndarray], k: int, transitions: int
) -> dict[str, np.ndarray]:
    """Per-frame-step arrays -> one entry per latent transition, for temporal compression ``k``.

    Latent transition ``j`` covers frame transitions ``j*k .. j*k + k - 1`` (as ``ClipDataset``
    does for frame skip): its action is the first of them, its reward their sum, its
    ``terminated`` / ``truncated`` whether any is set. ``k == 1`` just trims to ``transitions``.
    """
    out = {}
    for name, x in steps.items():
        x = x[: transitions * k]
        if k == 1:
            out[name] = x
            continue
        x = x.reshape(transitions, k, *x.shape[1:])  # (j k) ... -> j k ...
        if name == "actions":
            out[name] = x[:, 0]
        elif name == "rewards":
            out[name] = x.sum(axis=1, dtype=np.float32)
        else:
            out[name] = x.any(axis=1)
    return out


class _Welford:
    """Per-channel mean and sum of squared deviations in float64, merged chunk by chunk."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def update(self, z: np.ndarray) -> None:
        """Add latents ``[t, c, h, w]`` (Chan et al.'s parallel combination)."""
        x = z.astype(np.float64).transpose(1, 0, 2, 3).reshape(z.shape[1], -1)
        n_b = x.shape[1]
        if n_b == 0:
            return
        mean_b = x.mean(1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(1)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


@torch.no_grad()
def _encode_episode(
    autoencoder: Any, frames: np.ndarray, batch_size: int, device: str
) -> np.ndarray:
    """uint8 frames ``[T, H, W, 3]`` -> float16 latents ``[T // k, c, h, w]``."""
    k = autoencoder.cfg.temporal_compression
    if k > 1:
        # The causal temporal stage mixes neighbouring frames: encode the episode as one clip.
        usable = (len(frames) // k) * k
        x = frames_to_tensor(frames[:usable]).to(device)[None]
        return autoencoder.encode(x)[0].to("cpu", torch.float16).numpy()
    parts = []
    for s in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[s : s + batch_size]).to(device)
        parts.append(autoencoder.encode(x).to("cpu", torch.float16).numpy())
    return np.concatenate(parts, axis=0)


def _open_or_start(root: Path, manifest: dict[str, Any]) -> ArrayStore:
    """Check (or write) the manifest of ``root`` and open its episode ``ArrayStore``."""
    path = root / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise LatentStoreError(
                f"{root}: this latent cache was encoded by an autoencoder with fingerprint "
                f"{old.get('fingerprint')!r}, but the given one has {manifest['fingerprint']!r}; "
                "encode into a new directory (or delete this one)"
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, manifest)
    # Latents are float16 noise-like numbers: deflate saves little and slows every read.
    return ArrayStore(root / "episodes", chunk_len=32, compress=False)


def encode_store(
    autoencoder: Any,
    store: Sequence[Episode],
    out: str | Path,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> LatentStore:
    """Encode every episode of ``store`` (an ``EpisodeStore`` or any sequence of ``Episode``)
    into a latent cache at ``out`` and return it.

    Runs without gradients in eval mode (the autoencoder's mode is restored afterwards).
    Episodes already encoded in ``out`` are kept (resume); ``stats.json`` is recomputed over
    all of them at the end. Raises ``LatentStoreError`` if ``out`` was written by an
    autoencoder with a different fingerprint, and ``ValueError`` for frames that do not fit it.
    """
    root = Path(out)
    n = len(store)
    if n == 0:
        raise LatentStoreError(f"encode_store: the episode store {store!r} is empty")
    cfg = autoencoder.cfg
    k = cfg.temporal_compression
    latent_shape = autoencoder.latent_shape(cfg.frame_height, cfg.frame_width)
    manifest = {
        "format": FORMAT,
        "fingerprint": autoencoder.fingerprint(),
        "autoencoder": cfg.to_dict(),
        "latent_shape": list(latent_shape),
        "temporal_compression": k,
    }
    items = _open_or_start(root, manifest)
    if len(items) > n:
        raise LatentStoreError(
            f"{root}: the cache holds {len(items)} episodes but the source store only {n}; "
            "it was encoded from a different store"
        )
    stale = (root / "stats.json").exists() and len(items) < n
    if stale:  # the source grew: the cache is incomplete again until stats are rewritten
        (root / "stats.json").unlink()

    was_training = autoencoder.training
    autoencoder.eval()
    todo = range(len(items), n)
    bar = None
    if progress and len(todo):
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"encoding {len(todo)} episodes -> {root}", total=len(todo))
    try:
        for i in todo:
            ep = store[i]
            z = _encode_episode(autoencoder, ep.frames, batch_size, device)
            if len(z) == 0:
                raise LatentStoreError(
                    f"episode {i} has {len(ep)} frames, fewer than temporal_compression={k}: "
                    "nothing to encode"
                )
            steps = aggregate_steps(ep.step_arrays(), k, len(z) - 1)
            meta = {"metadata": ep.metadata, "num_frames": len(ep), "episode": i}
            if items.append_arrays({"latents": z}, steps, meta) != i:
                raise LatentStoreError(f"{root}: episode {i} landed at the wrong index")
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        autoencoder.train(was_training)

    # Statistics over every episode (old and new), in float64, from the stored float16 values.
    acc = _Welford(latent_shape[0])
    for i in range(n):
        z = items.read(i, "latents")
        if tuple(z.shape[1:]) != latent_shape:
            raise LatentStoreError(
                f"{items.shard_path(i)}: latents have shape {list(z.shape[1:])} per frame, "
                f"expected {list(latent_shape)}"
            )
        acc.update(z)
    items.close()
    stats = {
        **manifest,
        "mean": acc.mean.tolist(),
        "std": acc.std().tolist(),
        "count": acc.n,
        "num_episodes": n,
    }
    atomic_write_json(root / "stats.json", stats)
    return LatentStore(root, fingerprint=manifest["fingerprint"])


class LatentStore:
    """Read access to a complete latent cache written by ``encode_store``.

    ``store[i]`` gives ``{"latents": float16 [t, c, h, w], <per-step arrays>, "metadata"}``;
    ``read_latents(i, start, stop)`` reads a window (only the chunks it needs).
    Pass ``fingerprint`` (e.g. ``autoencoder.fingerprint()``) to insist the cache was written
    by that autoencoder.
    """

    def __init__(self, root: str | Path, *, fingerprint: str | None = None) -> None:
        self.root = Path(root)
        stats_path = self.root / "stats.json"
        if not stats_path.exists():
            hint = (
                "an interrupted encode: run encode_store again to finish it"
                if (self.root / "manifest.json").exists()
                else "not a latent cache"
            )
            raise LatentStoreError(f"{self.root}: no stats.json ({hint})")
        self.stats: dict[str, Any] = json.loads(stats_path.read_text())
        if self.stats.get("format") != FORMAT:
            raise LatentStoreError(
                f"{stats_path}: unsupported latent cache format {self.stats.get('format')!r}"
            )
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise LatentStoreError(
                f"{self.root}: latent cache was encoded by autoencoder {self.fingerprint!r}, "
                f"expected {fingerprint!r} (re-encode the data with this autoencoder)"
            )
        self.items = ArrayStore(self.root / "episodes", create=False)
        if len(self.items) == 0:
            raise LatentStoreError(f"{self.root}: the latent cache holds no episodes")
        if len(self.items) != self.stats["num_episodes"]:
            raise LatentStoreError(
                f"{self.root}: stats.json covers {self.stats['num_episodes']} episodes but "
                f"{len(self.items)} are on disk; run encode_store again"
            )
        self.latent_shape: tuple[int, int, int] = tuple(self.stats["latent_shape"])
        self.temporal_compression: int = int(self.stats["temporal_compression"])
        self.mean = torch.tensor(self.stats["mean"], dtype=torch.float32)
        self.std = torch.tensor(self.stats["std"], dtype=torch.float32).clamp_min(1e-6)

    # ----------------------------------------------------------------- basics
    @property
    def fingerprint(self) -> str:
        """Weight fingerprint of the autoencoder that wrote this cache."""
        return self.stats["fingerprint"]

    @property
    def autoencoder_config(self) -> dict[str, Any]:
        """The autoencoder's config as a dict (``config_from_dict`` rebuilds it)."""
        return dict(self.stats["autoencoder"])

    def __len__(self) -> int:
        return len(self.items)

    def episode_length(self, i: int) -> int:
        """Number of latent frames of episode ``i`` (from the index; no file is opened)."""
        return self.items.length(i)

    def has(self, i: int, name: str) -> bool:
        """Whether episode ``i`` has per-step array ``name`` (e.g. ``"actions"``)."""
        return name in self.items.entry(i)["arrays"]

    def read_latents(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float16 latents ``[stop - start, c, h, w]`` of episode ``i``."""
        z = self.items.read(i, "latents", start, stop)
        if tuple(z.shape[1:]) != self.latent_shape:
            raise LatentStoreError(
                f"{self.items.shard_path(i)}: latents have shape {list(z.shape[1:])} per frame, "
                f"the cache expects {list(self.latent_shape)}"
            )
        return z

    def read_steps(self, i: int, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Per-step arrays of episode ``i`` sliced to latent transitions ``[start, stop)``."""
        names = [n for n in STEP_FIELDS if self.has(i, n)]
        return {n: self.items.read_array(i, n)[start:stop] for n in names}

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"latents": self.read_latents(i), **self.read_steps(i)}
        out["metadata"] = dict(self.items.meta(i).get("metadata", {}))
        return out

    # ----------------------------------------------------------------- normalisation
    def _stat_shape(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() < 3 or tuple(z.shape[-3:]) != self.latent_shape:
            raise LatentStoreError(
                f"latents must be [..., {', '.join(map(str, self.latent_shape))}], "
                f"got {list(z.shape)}"
            )
        view = (-1, 1, 1)
        return (
            self.mean.to(z.device, z.dtype).view(view),
            self.std.to(z.device, z.dtype).view(view),
        )

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Standardise each latent channel: ``(z - mean) / std``; ``z`` is ``[..., c, h, w]``."""
        mean, std = self._stat_shape(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Undo ``normalize``: ``z * std + mean``."""
        mean, std = self._stat_shape(z)
        return z * std + mean

    # ----------------------------------------------------------------- labels
    def _label_path(self, name: str) -> Path:
        if not _LABEL_NAME.match(name) or name in _RESERVED:
            raise ValueError(
                f"label name {name!r} is not allowed: use letters, digits and '_' (starting "
                f"with a letter), and none of {sorted(_RESERVED)}"
            )
        return self.root / "labels" / f"{name}.npz"

    def write_labels(self, name: str, labels: Sequence[np.ndarray]) -> None:
        """Attach one int array per episode, one label per latent transition (``t - 1``).

        Written atomically as ``labels/<name>.npz``; overwrites an earlier set of that name.
        """
        path = self._label_path(name)
        if len(labels) != len(self):
            raise ValueError(
                f"write_labels({name!r}): got {len(labels)} arrays, the cache has {len(self)} "
                "episodes"
            )
        arrays = {}
        for i, lab in enumerate(labels):
            lab = np.asarray(lab.detach().cpu() if isinstance(lab, torch.Tensor) else lab)
            want = self.episode_length(i) - 1
            if lab.shape != (want,) or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(
                    f"write_labels({name!r}): episode {i} needs an integer array of shape "
                    f"[{want}] (one per transition), got {lab.dtype} {list(lab.shape)}"
                )
            arrays[_label_key(i)] = lab.astype(np.int64)
        write_shard(path, {}, arrays, {"name": name, "fingerprint": self.fingerprint})

    def label_names(self) -> list[str]:
        """Names of the label sets written so far."""
        folder = self.root / "labels"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.npz") if not is_temp_file(p))

    def read_labels(self, name: str, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int64 labels ``[stop - start]`` of episode ``i`` (transitions ``[start, stop)``)."""
        path = self._label_path(name)
        if not path.exists():
            raise LatentStoreError(
                f"{self.root}: no labels named {name!r}; available: {self.label_names()}"
            )
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.root}: episode {i} out of range [0, {len(self)})")
        with ShardReader(path) as reader:
            return reader.array(_label_key(i % len(self)))[start:stop]

    # ----------------------------------------------------------------- reporting
    def bytes_per_frame(self) -> float:
        """Bytes of one cached latent frame (float16), vs ``H * W * 3`` for uint8 pixels."""
        return float(np.prod(self.latent_shape) * 2)

    def summary(self) -> str:
        """A few human-readable lines: size, shapes, per-channel stats, labels."""
        lengths = [self.episode_length(i) for i in range(len(self))]
        cfg = self.stats["autoencoder"]
        raw = cfg["frame_height"] * cfg["frame_width"] * cfg["in_channels"]
        return "\n".join(
            [
                f"LatentStore {self.root}: {len(self)} episodes, {sum(lengths)} latent frames "
                f"(length {min(lengths)}-{max(lengths)})",
                f"  latent [c,h,w] = {list(self.latent_shape)} float16, "
                f"{self.bytes_per_frame():.0f} B/frame vs {raw} B/frame raw uint8 "
                f"({raw / self.bytes_per_frame():.1f}x smaller), temporal compression "
                f"{self.temporal_compression}",
                f"  autoencoder {self.fingerprint}; mean {np.round(self.stats['mean'], 3).tolist()}",
                f"  std {np.round(self.stats['std'], 3).tolist()}; labels {self.label_names()}",
            ]
        )
