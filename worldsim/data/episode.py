"""One recorded episode: frames plus the optional per-step arrays, validated on construction.

Shapes (einops letters): ``t`` frames, ``h w`` pixels, ``c`` colour channels (always 3),
``d`` continuous action width. An episode of ``T`` frames has ``T - 1`` transitions, aligned to
the frame they start from (see docs/architecture.md): ``actions[t]`` was taken on ``frames[t]``
and produced ``frames[t + 1]``; ``rewards[t]``, ``terminated[t]`` and ``truncated[t]`` are the
results of that step.

Also here: the two conversions between stored frames (uint8 ``[..., h, w, c]``) and model
frames (float32 in ``[-1, 1]``, ``[..., c, h, w]``), so every part converts the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: Names of the optional per-step arrays, each of length ``T - 1``.
STEP_FIELDS: tuple[str, ...] = ("actions", "rewards", "terminated", "truncated")


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """Accept numpy arrays, torch tensors and nested lists; return a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - re-raised with the field name
        raise TypeError(f"Episode.{name}: cannot convert {type(x).__name__} to an array") from exc


@dataclass
class Episode:
    """A sequence of frames with optional actions, rewards and end flags.

    Attributes:
        frames: uint8 ``[t, h, w, 3]``, ``t >= 1``.
        actions: ``[t-1]`` int64 (discrete) or ``[t-1, d]`` float32 (continuous), or ``None``
            for action-free video. Other integer / float dtypes are converted.
        rewards: float32 ``[t-1]`` or ``None``.
        terminated: bool ``[t-1]`` or ``None`` (the step ended the episode in the MDP sense).
        truncated: bool ``[t-1]`` or ``None`` (the step hit a time limit or the data was cut).
        metadata: JSON-serialisable dict; conventional keys are ``source``, ``fps`` and
            ``action_space`` (``{"type": "discrete", "n": ...}`` or ``{"type": "box", ...}``).
    """

    frames: np.ndarray
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = _as_numpy(self.frames, "frames")
        if frames.dtype != np.uint8:
            raise TypeError(
                f"Episode.frames must be uint8 [T, H, W, 3], got dtype {frames.dtype}; "
                "convert float frames with worldsim.data.tensor_to_frames"
            )
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"Episode.frames must have shape [T, H, W, 3], got {tuple(frames.shape)}"
            )
        if frames.shape[0] < 1:
            raise ValueError("Episode.frames is empty: an episode needs at least one frame")
        self.frames = frames
        steps = frames.shape[0] - 1

        if self.actions is not None:
            actions = _as_numpy(self.actions, "actions")
            if actions.ndim == 1:
                if not (np.issubdtype(actions.dtype, np.integer) or actions.dtype == np.bool_):
                    raise TypeError(
                        "Episode.actions of shape [T-1] are discrete and must be integers, "
                        f"got dtype {actions.dtype} (continuous actions are [T-1, d])"
                    )
                actions = actions.astype(np.int64, copy=False)
            elif actions.ndim == 2:
                if not np.issubdtype(actions.dtype, np.number):
                    raise TypeError(f"Episode.actions must be numeric, got dtype {actions.dtype}")
                actions = actions.astype(np.float32, copy=False)
            else:
                raise ValueError(
                    "Episode.actions must be [T-1] (discrete) or [T-1, d] (continuous), "
                    f"got shape {tuple(actions.shape)}"
                )
            self._check_len("actions", actions, steps)
            self.actions = actions

        if self.rewards is not None:
            rewards = _as_numpy(self.rewards, "rewards")
            if rewards.ndim != 1 or not np.issubdtype(rewards.dtype, np.number):
                raise ValueError(
                    f"Episode.rewards must be a numeric [T-1] array, got shape "
                    f"{tuple(rewards.shape)} dtype {rewards.dtype}"
                )
            self._check_len("rewards", rewards, steps)
            self.rewards = rewards.astype(np.float32, copy=False)

        for name in ("terminated", "truncated"):
            value = getattr(self, name)
            if value is None:
                continue
            flags = _as_numpy(value, name)
            if flags.ndim != 1:
                raise ValueError(f"Episode.{name} must be [T-1], got shape {tuple(flags.shape)}")
            if flags.dtype != np.bool_:
                if not np.issubdtype(flags.dtype, np.integer) or not np.isin(flags, (0, 1)).all():
                    raise TypeError(f"Episode.{name} must be bool (or 0/1), got {flags.dtype}")
                flags = flags.astype(np.bool_)
            self._check_len(name, flags, steps)
            setattr(self, name, flags)

        if not isinstance(self.metadata, dict):
            raise TypeError(f"Episode.metadata must be a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Episode.metadata must be JSON-serialisable: {exc}") from exc

    def _check_len(self, name: str, array: np.ndarray, steps: int) -> None:
        if array.shape[0] != steps:
            raise ValueError(
                f"Episode.{name} has length {array.shape[0]} but frames has "
                f"{self.frames.shape[0]} frames, so T-1 = {steps} steps are expected "
                f"({name} shape {tuple(array.shape)}, frames shape {tuple(self.frames.shape)})"
            )

    def __len__(self) -> int:
        """Number of frames ``T``."""
        return int(self.frames.shape[0])

    @property
    def num_steps(self) -> int:
        """Number of transitions ``T - 1``."""
        return len(self) - 1

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``."""
        return tuple(int(s) for s in self.frames.shape[1:])  # type: ignore[return-value]

    def step_arrays(self) -> dict[str, np.ndarray]:
        """The per-step arrays that are present, by name."""
        return {n: getattr(self, n) for n in STEP_FIELDS if getattr(self, n) is not None}

    @property
    def episode_return(self) -> float | None:
        """Sum of rewards, or ``None`` when the episode has no rewards."""
        return None if self.rewards is None else float(self.rewards.sum(dtype=np.float64))


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[..., h, w, 3]`` (numpy or torch) -> float32 ``[..., 3, h, w]`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8:
        raise TypeError(f"frames_to_tensor expects uint8 frames, got dtype {x.dtype}")
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames_to_tensor expects [..., H, W, 3], got {tuple(x.shape)}")
    x = x.movedim(-1, -3)  # ... h w c -> ... c h w
    return x.float().div(127.5).sub(1.0)


def tensor_to_frames(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float ``[..., 3, h, w]`` in [-1, 1] -> uint8 numpy ``[..., h, w, 3]`` (clamped, rounded)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_floating_point(x):
        raise TypeError(f"tensor_to_frames expects a float tensor in [-1, 1], got {x.dtype}")
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"tensor_to_frames expects [..., 3, H, W], got {tuple(x.shape)}")
    x = x.detach().float().add(1.0).mul(127.5).clamp(0.0, 255.0).round()
    return x.to(torch.uint8).movedim(-3, -1).cpu().numpy()
