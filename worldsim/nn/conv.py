"""Convolutional building blocks: residual blocks, resampling, causal temporal convolutions.

These are the layers of the frame autoencoder (``worldsim.autoencoder``) and of anything else
that works on feature maps. They follow the usual latent-diffusion autoencoder recipe
(GroupNorm -> SiLU -> conv, pre-activation residual blocks), with two habits that make small
models train fast from scratch:

1. the last convolution of every residual block starts at zero, so a fresh block is the
   identity and a deep stack behaves like a shallow one early in training;
2. down-sampling is a learned stride-2 convolution and up-sampling is nearest-neighbour
   followed by a convolution, which avoids the checkerboard artefacts of transposed convs.

Temporal layers work on ``[b, c, t, h, w]`` (Conv3d layout) and are *causal*: an output at time
``t`` only sees inputs at times ``<= t`` (or, for the resampling layers, only the inputs of its
own block of ``factor`` frames).

Einops legend: b batch, c channels, t time, h w spatial grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count ``<= max_groups`` that divides ``channels`` (GroupNorm needs that)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with a group count that fits ``channels``; eps as in latent-diffusion VAEs."""
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


class ResBlock2d(nn.Module):
    """Pre-activation residual block: ``x + conv(act(norm(conv(act(norm(x))))))``.

    A 1x1 convolution projects the skip path when ``in_channels != out_channels``. The second
    convolution is zero-initialised, so the block starts as the identity (or the projection).

    Shapes: ``[b, in_channels, h, w] -> [b, out_channels, h, w]``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample2d(nn.Module):
    """Halve the spatial size with a learned 3x3 stride-2 convolution.

    Shapes: ``[b, in_channels, h, w] -> [b, out_channels, h/2, w/2]`` (h and w even).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2d(nn.Module):
    """Double the spatial size: nearest-neighbour up-sampling, then a 3x3 convolution.

    Shapes: ``[b, in_channels, h, w] -> [b, out_channels, 2h, 2w]``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CausalConv3d(nn.Module):
    """3D convolution that is causal in time: output ``t`` sees inputs ``t-k+1 .. t`` only.

    Time is padded on the left by ``kernel_t - 1`` copies of the first frame (so a clip's first
    output is not pulled towards zero); space is zero-padded symmetrically ("same" size).

    Shapes: ``[b, in_channels, t, h, w] -> [b, out_channels, t, h, w]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_t: int = 3, kernel_s: int = 3
    ) -> None:
        super().__init__()
        if kernel_t < 1 or kernel_s < 1 or kernel_s % 2 == 0:
            raise ValueError(
                f"CausalConv3d: kernel_t must be >= 1 and kernel_s odd and >= 1, "
                f"got kernel_t={kernel_t}, kernel_s={kernel_s}"
            )
        self.pad_t = kernel_t - 1
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (kernel_t, kernel_s, kernel_s),
            padding=(0, kernel_s // 2, kernel_s // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_t:
            first = x[:, :, :1].expand(-1, -1, self.pad_t, -1, -1)
            x = torch.cat([first, x], dim=2)
        return self.conv(x)


class CausalResBlock3d(nn.Module):
    """Residual block of two causal 3D convolutions; zero-initialised second conv.

    Shapes: ``[b, c, t, h, w] -> [b, c, t, h, w]``; output ``t`` depends on inputs ``<= t``.
    """

    def __init__(self, channels: int, kernel_t: int = 3) -> None:
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = CausalConv3d(channels, channels, kernel_t)
        self.norm2 = group_norm(channels)
        self.conv2 = CausalConv3d(channels, channels, kernel_t)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GroupNorm normalises over (c, t, h, w) jointly, which would leak future frames into
        # the statistics of past ones; normalise each frame on its own instead.
        h = self.conv1(F.silu(_framewise(self.norm1, x)))
        h = self.conv2(F.silu(_framewise(self.norm2, h)))
        return x + h


def _framewise(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D norm to every frame of ``[b, c, t, h, w]`` separately."""
    b, c, t, h, w = x.shape
    y = norm(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, c, h, w).transpose(1, 2)


class TemporalDownsample(nn.Module):
    """Merge each block of ``factor`` consecutive frames into one (kernel = stride = factor).

    Output ``j`` depends on inputs ``j*factor .. (j+1)*factor - 1`` only, so it never sees a
    later block. Shapes: ``[b, c, t, h, w] -> [b, c_out, t/factor, h, w]`` (t divisible).
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv3d(in_channels, out_channels, (factor, 1, 1), stride=(factor, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % self.factor:
            raise ValueError(
                f"TemporalDownsample: time length {x.shape[2]} is not divisible by the "
                f"temporal compression factor {self.factor}"
            )
        return self.conv(x)


class TemporalUpsample(nn.Module):
    """Expand each frame into ``factor`` frames (the transpose of ``TemporalDownsample``).

    Output frames ``j*factor .. (j+1)*factor - 1`` depend on input ``j`` only.
    Shapes: ``[b, c, t, h, w] -> [b, c_out, t*factor, h, w]``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(
            in_channels, out_channels, (factor, 1, 1), stride=(factor, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
