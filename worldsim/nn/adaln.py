"""adaLN-Zero helpers: the modulation itself and the embedders that make the conditioning vector.

In a DiT block (Peebles & Xie 2023) a conditioning vector ``c`` (here one per frame) is mapped by
``adaLN_modulation = Sequential(SiLU(), Linear(d, 6 d))`` to shift/scale/gate triples; the
LayerNorms carry no affine parameters, and zero-initialising that Linear makes a fresh block the
identity. This file holds the pieces that build ``c``:

- :class:`TimestepEmbedder`: a scalar in [0, 1] (noise level, or shortcut step size) ->
  sinusoidal features -> MLP.
- :class:`ActionEmbedder`: discrete codes, continuous vectors, or both (summed), plus two learned
  vectors: ``start`` for frames with no preceding action (frame 0 of a clip) and ``null`` for
  dropped actions (classifier-free guidance).

einops legend: b batch, t time, d width, a action dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ActionInput = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
ACTION_EMBEDDINGS = ("discrete", "continuous", "both")  # how a network embeds actions (worldsim/actions.py)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` (shift/scale broadcast against x)."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Scalar ``s`` in [0, 1] -> ``[..., d]``: sinusoidal features of ``s * scale``, then an MLP."""

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def sinusoidal(self, s: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=s.device, dtype=torch.float32) / half
        )
        args = (s.float() * self.scale)[..., None] * freqs  # [..., half]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s ``[...]`` -> ``[..., d]``."""
        return self.mlp(self.sinusoidal(s).to(self.mlp[0].weight.dtype))


class ActionEmbedder(nn.Module):
    """Embed actions for the per-frame conditioning, with ``start`` and ``null`` vectors.

    Args:
        dim: output width d.
        embedding: ``discrete`` (int codes in ``[0, num_actions)``), ``continuous``
            (float vectors of ``action_dim``), or ``both``: a tuple ``(codes, vectors)`` whose
            two embeddings are summed (latent action code + the game's real action; a discrete
            real action can be given one-hot as the vector).
        num_actions: number of discrete codes (``discrete`` and ``both``).
        action_dim: width of continuous vectors (``continuous`` and ``both``).
    """

    def __init__(
        self, dim: int, embedding: str, num_actions: int = 0, action_dim: int = 0
    ) -> None:
        super().__init__()
        if embedding not in ACTION_EMBEDDINGS:
            raise ValueError(f"action_embedding must be one of {ACTION_EMBEDDINGS}, got {embedding!r}")
        if embedding in ("discrete", "both") and num_actions < 1:
            raise ValueError(
                f"action_embedding={embedding!r} needs num_actions >= 1, got {num_actions}"
            )
        if embedding in ("continuous", "both") and action_dim < 1:
            raise ValueError(f"action_embedding={embedding!r} needs action_dim >= 1, got {action_dim}")
        self.embedding = embedding
        self.num_actions = num_actions
        self.action_dim = action_dim
        self.codes = nn.Embedding(num_actions, dim) if embedding != "continuous" else None
        self.vectors = (
            nn.Sequential(nn.Linear(action_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            if embedding != "discrete"
            else None
        )
        self.start = nn.Parameter(torch.zeros(dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.is_floating_point():
            raise ValueError(f"discrete actions must be integers, got dtype {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_actions):
            raise ValueError(
                f"discrete actions must lie in [0, {self.num_actions}), got range "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return self.codes(codes.long())

    def _check_vectors(self, vec: torch.Tensor) -> torch.Tensor:
        if vec.shape[-1] != self.action_dim:
            raise ValueError(
                f"continuous actions must end in action_dim={self.action_dim}, got {tuple(vec.shape)}"
            )
        return self.vectors(vec.to(self.vectors[0].weight.dtype))

    def forward(self, actions: ActionInput) -> torch.Tensor:
        """actions ``[*lead]`` codes, ``[*lead, a]`` vectors, or a tuple of both -> ``[*lead, d]``."""
        if self.embedding == "discrete":
            if isinstance(actions, tuple):
                raise ValueError("action_embedding='discrete' takes a tensor of codes, not a tuple")
            return self._check_codes(actions)
        if self.embedding == "continuous":
            if isinstance(actions, tuple):
                raise ValueError("action_embedding='continuous' takes a tensor of vectors, not a tuple")
            return self._check_vectors(actions)
        if not (isinstance(actions, tuple) and len(actions) == 2):
            raise ValueError("action_embedding='both' takes a tuple (codes [*lead], vectors [*lead, a])")
        codes, vec = actions
        if codes.shape != vec.shape[:-1]:
            raise ValueError(
                f"action_embedding='both': codes {tuple(codes.shape)} and vectors {tuple(vec.shape)} disagree"
            )
        return self._check_codes(codes) + self._check_vectors(vec)

    def lead_shape(self, actions: ActionInput) -> tuple[int, ...]:
        """The leading (batch, time) shape of an action input."""
        if self.embedding == "both":
            return tuple(actions[0].shape)
        if self.embedding == "continuous":
            return tuple(actions.shape[:-1])
        return tuple(actions.shape)

    def sequence(
        self,
        actions: ActionInput | None,
        batch: int,
        frames: int,
        null_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-frame action conditioning ``[b, t, d]`` for a clip: frame 0 gets ``start``,
        frame ``t + 1`` gets ``embed(a_t)`` (``actions`` has ``t - 1`` steps), ``None`` -> ``null``.

        ``null_mask [b, t-1]`` (bool) replaces chosen actions by ``null`` (CFG dropout).
        """
        start = self.start.expand(batch, 1, -1)
        if frames == 1:
            return start
        if actions is None:
            return torch.cat([start, self.null.expand(batch, frames - 1, -1)], dim=1)
        lead = self.lead_shape(actions)
        if lead != (batch, frames - 1):
            raise ValueError(
                f"actions must cover the {frames - 1} transitions of {frames} frames: expected leading "
                f"shape ({batch}, {frames - 1}), got {lead}"
            )
        emb = self(actions)  # [b, t-1, d]
        if null_mask is not None:
            emb = torch.where(null_mask[..., None], self.null.to(emb.dtype), emb)
        return torch.cat([start.to(emb.dtype), emb], dim=1)
