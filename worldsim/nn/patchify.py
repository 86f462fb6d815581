"""Per-frame patches: latent frames <-> token sequences.

A latent frame ``[c, h, w]`` is cut into ``(h/p) * (w/p)`` non-overlapping ``p x p`` patches,
each flattened to ``p*p*c`` values and projected to the model width (as ViT/DiT's PatchEmbed
does with a strided conv; a Linear on the flattened patch is the same map). The reverse,
:func:`unpatchify`, folds per-token outputs back into frames.

einops legend: b batch, t time, c latent channels, h w latent grid, p patch size,
n = (h/p)(w/p) tokens per frame, d width.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def check_patch(h: int, w: int, patch: int) -> tuple[int, int]:
    """Return the token grid ``(h/p, w/p)``, or raise naming the sizes that do not divide."""
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"latent grid {h}x{w} is not divisible by patch size {patch}")
    return h // patch, w // patch


def patchify(z: torch.Tensor, patch: int) -> torch.Tensor:
    """z ``[b, t, c, h, w]`` -> ``[b, t, n, (p p c)]``."""
    if z.dim() != 5:
        raise ValueError(f"patchify expects latents [b, t, c, h, w], got {tuple(z.shape)}")
    check_patch(z.shape[-2], z.shape[-1], patch)
    return rearrange(z, "b t c (gh p1) (gw p2) -> b t (gh gw) (p1 p2 c)", p1=patch, p2=patch)


def unpatchify(x: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    """x ``[b, t, n, (p p c)]`` -> ``[b, t, c, h, w]``."""
    gh, gw = check_patch(h, w, patch)
    if x.shape[2] != gh * gw:
        raise ValueError(f"unpatchify: {x.shape[2]} tokens do not make a {gh}x{gw} grid")
    return rearrange(
        x, "b t (gh gw) (p1 p2 c) -> b t c (gh p1) (gw p2)", gh=gh, gw=gw, p1=patch, p2=patch
    )


class PatchEmbed(nn.Module):
    """Latent frames ``[b, t, c, h, w]`` -> tokens ``[b, t, n, d]``."""

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.channels = channels
        self.patch = patch
        self.proj = nn.Linear(patch * patch * channels, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 5 or z.shape[2] != self.channels:
            raise ValueError(
                f"PatchEmbed expects [b, t, {self.channels}, h, w], got {tuple(z.shape)}"
            )
        return self.proj(patchify(z, self.patch))
