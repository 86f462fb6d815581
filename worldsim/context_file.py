"""A bundle's start contexts file, ``contexts.npz``: windows of real frames (uint8) and the
actions taken between them, in the dynamics' form, that worlds start from.

:func:`read_contexts` reads and checks one without running code (no pickle: object arrays are
refused) and answers every problem with a one-line ``ValueError`` naming the file.

einops legend: n contexts, k context frames, H W frame size, a action vector size.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

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


__all__ = ["ACTION_ARRAYS", "read_contexts"]
