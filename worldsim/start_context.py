"""Start contexts: every form a world may start from, as uint8 frames plus their actions.

``Simulator.reset(context=...)`` accepts

- ``None``: a random start context of the bundle per world (drawn with the given generator);
- an index, or one index per world, into the bundle's start contexts (``contexts.npz``);
- an :class:`~worldsim.data.Episode`: its first k frames and actions, for every world;
- a path to an image file: one frame, for every world;
- uint8 frames ``[H, W, 3]``, ``[k, H, W, 3]`` or ``[b, k, H, W, 3]`` (one set for every world,
  or one per world).

:func:`start_context` turns any of them into frames ``[m, k, H, W, 3]``, the actions taken
between them and their kind: ``"model"`` (the bundle's own contexts store the dynamics' form),
``"real"`` (an Episode's game actions) or ``None`` (unknown: the Simulator labels them with the
LAM or the null action).

:func:`read_contexts` reads and checks a bundle's ``contexts.npz`` (no pickle: object arrays
are refused).

einops legend: n contexts, m worlds, k context frames, H W frame size, a action vector size.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldsim.data.episode import Episode

if TYPE_CHECKING:
    from worldsim.bundle import Bundle

ACTION_ARRAYS = ("actions", "actions_codes", "actions_vectors")


def _check_actions(name: str, acts: np.ndarray, n: int, k: int) -> None:
    """Context actions: int codes / game actions ``[n, k-1]`` or float vectors ``[n, k-1, a]``."""
    vectors = name == "actions_vectors" or (name == "actions" and acts.ndim == 3)
    kinds, rank = ("f", 3) if vectors else ("iu", 2)
    if acts.dtype.kind not in kinds or acts.ndim != rank or acts.shape[:2] != (n, k - 1):
        want = f"float [{n}, {k - 1}, a]" if vectors else f"integer [{n}, {k - 1}]"
        raise ValueError(f"contexts.npz array {name!r} must be {want} (N, k-1 of 'frames'), got "
                         f"{acts.dtype} {list(acts.shape)}")
    if vectors and not np.isfinite(acts).all():
        raise ValueError(f"contexts.npz array {name!r} holds NaN or infinite values")


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def read_contexts(path: str | os.PathLike, frame_size: tuple[int, int]) -> tuple[np.ndarray, Any]:
    """A bundle's ``contexts.npz`` -> uint8 frames ``[n, k, H, W, 3]`` and their actions
    (``[n, k-1]``, ``[n, k-1, a]``, a tuple (codes, vectors), or None). Anything else (a
    missing, truncated or non-npz file, object arrays, wrong dtype, rank or frame size, no
    contexts) raises a one-line ``ValueError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing file {path.name}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise ValueError(f"cannot read {path.name}: {_first_line(err)} (truncated or corrupt file?)") from err
        raise ValueError(f"cannot read {path.name}: it holds object arrays, which are refused (loading "
                         "them could run code)") from err
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as err:
        raise ValueError(f"cannot read {path.name}: {_first_line(err)} (truncated or corrupt file?)") from err
    if "frames" not in arrays:
        raise ValueError(f"{path.name} lacks the 'frames' array (has {sorted(arrays)})")
    frames = arrays["frames"]
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{path.name} 'frames' must be uint8 [N, k, H, W, 3], got {frames.dtype} "
                         f"{list(frames.shape)}")
    n, k = frames.shape[:2]
    if n < 1 or k < 1:
        raise ValueError(f"{path.name} holds no start context: 'frames' is {list(frames.shape)} "
                         "(N and k must be >= 1)")
    if tuple(frames.shape[2:4]) != tuple(frame_size):
        raise ValueError(f"{path.name} frames {list(frames.shape)} do not match the autoencoder's "
                         f"{frame_size[0]}x{frame_size[1]}")
    present = [name for name in ACTION_ARRAYS if name in arrays]
    for name in present:
        _check_actions(name, arrays[name], n, k)
    if "actions_codes" in arrays or "actions_vectors" in arrays:
        if present != ["actions_codes", "actions_vectors"]:
            raise ValueError(f"{path.name} must hold both 'actions_codes' and 'actions_vectors' (and "
                             f"no 'actions'), has {present}")
        return frames, (arrays["actions_codes"], arrays["actions_vectors"])
    return frames, arrays.get("actions")


def _is_index(context: Any) -> bool:
    if context is None or isinstance(context, (int, np.integer)):
        return True
    return (
        isinstance(context, (list, np.ndarray, torch.Tensor))
        and np.asarray(context).dtype.kind in "iu"
        and np.asarray(context).ndim == 1
        and not (isinstance(context, np.ndarray) and context.dtype == np.uint8)
    )


def start_context(
    bundle: Bundle, context: Any, m: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, Any, str | None]:
    """Any accepted context (module docstring) -> uint8 frames ``[m, k, H, W, 3]``, the
    actions between them, and their kind (``"model"``, ``"real"`` or ``None``)."""
    contexts = bundle.contexts
    if _is_index(context):
        if context is None:
            idx = torch.randint(len(contexts), (m,), generator=generator, device=generator.device)
            idx = idx.cpu().numpy()
        else:
            idx = np.broadcast_to(np.asarray(context, dtype=np.int64), (m,))
        if idx.min() < 0 or idx.max() >= len(contexts):
            raise ValueError(f"context index must lie in [0, {len(contexts)}), got {idx.tolist()}")
        acts = bundle.context_actions
        if acts is not None:
            acts = tuple(a[idx] for a in acts) if isinstance(acts, tuple) else acts[idx]
        return torch.from_numpy(contexts[idx]), acts, "model" if acts is not None else None
    if isinstance(context, Episode):
        k = min(int(contexts.shape[1]), len(context))
        frames = torch.from_numpy(context.frames[:k])[None].expand(m, -1, -1, -1, -1)
        acts = context.actions[: k - 1] if context.actions is not None else None
        if acts is not None:
            acts = np.broadcast_to(acts, (m, *acts.shape))
        return frames, acts, "real" if acts is not None else None
    if isinstance(context, (str, os.PathLike)):
        from PIL import Image

        path = Path(context)
        if not path.is_file():
            raise FileNotFoundError(f"Simulator.reset: no image file {path}")
        context = np.asarray(Image.open(path).convert("RGB"))
    frames = context if torch.is_tensor(context) else torch.from_numpy(np.array(context))
    if frames.dtype != torch.uint8 or frames.ndim not in (3, 4, 5) or frames.shape[-1] != 3:
        raise ValueError(
            "Simulator.reset: context must be None, an index, an Episode, an image path, or "
            f"uint8 frames [H, W, 3] / [k, H, W, 3] / [b, k, H, W, 3]; got {frames.dtype} "
            f"{tuple(frames.shape)}"
        )
    while frames.ndim < 5:
        frames = frames[None]
    if frames.shape[0] not in (1, m):
        raise ValueError(
            f"Simulator.reset: context holds {frames.shape[0]} worlds, expected 1 or {m}"
        )
    return frames.expand(m, -1, -1, -1, -1), None, None


__all__ = ["read_contexts", "start_context"]
