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

A bundle's own contexts come from its ``contexts.npz`` (read and checked by
:func:`worldsim.context_file.read_contexts`).

einops legend: n contexts, m worlds, k context frames, H W frame size, a action vector size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from worldsim.bundle import Bundle
from worldsim.data.episode import Episode


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


__all__ = ["start_context"]
