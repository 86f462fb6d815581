"""Rotary position embeddings (RoPE, Su et al. 2021) over one or more axes.

RoPE rotates pairs of query/key channels by an angle proportional to the token's position, so
the dot product of a rotated query at position ``p`` and a rotated key at position ``m`` depends
only on ``p - m``. For several axes (time, row, column) the head's channel pairs are split into
one group per axis, each rotated by that axis's coordinate ("axial" RoPE): spatial attention
uses (row, col), temporal attention uses (time,), block-causal attention uses all three.

We use the "half-split" pairing (channel ``i`` pairs with ``i + dh/2``), as GPT-NeoX and LLaMA
implementations do, which needs no interleaving reshapes.

einops legend: n tokens (positions), k axes, dh head width, f = dh/2 frequency pairs.
"""

from __future__ import annotations

import torch
from torch import nn


def split_pairs(num_pairs: int, num_axes: int) -> list[int]:
    """Share ``num_pairs`` frequency pairs among ``num_axes`` axes, the first axes getting more."""
    base, extra = divmod(num_pairs, num_axes)
    return [base + (1 if i < extra else 0) for i in range(num_axes)]


class AxialRotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE over ``num_axes`` integer coordinates.

    Args:
        head_dim: channels per attention head (even; at least ``2 * num_axes``).
        num_axes: how many coordinates each position has (1 for time, 2 for (row, col), ...).
        theta: base of the geometric frequency ladder, per axis.
    """

    def __init__(self, head_dim: int, num_axes: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        if head_dim // 2 < num_axes:
            raise ValueError(
                f"RoPE: head_dim={head_dim} has {head_dim // 2} channel pairs, fewer than the {num_axes} axes"
            )
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.pairs = split_pairs(head_dim // 2, num_axes)
        freqs = [theta ** (-torch.arange(p, dtype=torch.float64) / p) for p in self.pairs]
        # One frequency per pair, grouped by axis: [f].
        self.register_buffer("inv_freq", torch.cat(freqs).float(), persistent=False)
        axis_of_pair = torch.cat(
            [torch.full((p,), i, dtype=torch.long) for i, p in enumerate(self.pairs)]
        )
        self.register_buffer("axis_of_pair", axis_of_pair, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions ``[n, k]`` (or ``[n]`` when ``k == 1``) -> (cos, sin), each ``[n, dh]``."""
        if positions.dim() == 1:
            positions = positions[:, None]
        if positions.dim() != 2 or positions.shape[1] != self.num_axes:
            raise ValueError(
                f"RoPE expected positions [n, {self.num_axes}], got {tuple(positions.shape)}"
            )
        # Angles in float64 then cast: exact for the small integer positions used here.
        pos = positions.to(torch.float64)[:, self.axis_of_pair]  # [n, f]
        angles = pos * self.inv_freq.to(torch.float64)  # [n, f]
        angles = torch.cat([angles, angles], dim=-1)  # [n, dh]  (half-split pairing)
        return angles.cos().float(), angles.sin().float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., n, dh]`` by tables ``[n, dh]`` (or any shape that broadcasts to x's
    with the same last dim, e.g. ``[f, n, 1, dh]`` against ``[b, f, n, h, dh]``)."""
    if x.shape[-1] != cos.shape[-1] or cos.dim() > x.dim() or any(
        c not in (1, d) for c, d in zip(reversed(cos.shape[:-1]), reversed(x.shape[:-1]))
    ):
        raise ValueError(
            f"apply_rope: tables {tuple(cos.shape)} do not broadcast to x {tuple(x.shape)}"
        )
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def grid_positions(*sizes: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer coordinates of a row-major grid: ``grid_positions(t, h, w) -> [(t h w), 3]``."""
    axes = [torch.arange(s, device=device) for s in sizes]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)
