"""Multi-head attention over latent video tokens, with RoPE, QK-norm and a rolling KV cache.

One :class:`Attention` module serves three patterns over tokens ``x [b, t, n, d]``:

- ``spatial``: each frame's n tokens attend to each other (2-D RoPE over (row, col)).
- ``temporal``: each token attends to the same spatial position in frames <= its own (1-D RoPE
  over time, causal mask), as in Genie's factorised ST-transformer.
- ``block``: each token attends to every token of frames <= its own (3-D RoPE over
  (time, row, col), block-causal mask).

Queries and keys go through RMSNorm per head (QK-norm, Dehghani et al. 2023) before RoPE, which
keeps attention logits bounded and training stable without tuning the softmax temperature.

**KV cache.** For generation, the temporal/block layers keep the keys and values of finished
frames in :class:`KVCache`: a window of the last ``W`` frames per layer, stored *before* RoPE
is applied. At every read, the cached frames sit at time positions ``0 .. W-1`` and the new frame
at ``W``; since RoPE only sees position differences, this is exactly the geometry of a
sliding-window forward pass, no matter how many frames each batch element has produced, and the
positions never grow without bound. Each batch element tracks how many of its slots are filled,
so one world in a batch can be reset (``cache.reset(mask)``) while the others continue.
A full forward with ``window=W`` (frame i attends to frames i-W .. i) is the uncached twin of
cached generation, and the tests check that the two agree.

einops legend: b batch, t time, n tokens per frame, d width, h heads, e head width,
s key frames (cache slots + the new frame), L cached layers, W window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldsim.nn.rope import AxialRotaryEmbedding, apply_rope, grid_positions

ATTENTION_KINDS = ("spatial", "temporal", "block")


class KVCache:
    """Keys/values of the last ``window`` finished frames for each cached attention layer.

    Tensors: ``k``, ``v`` ``[L, b, W, n, h, e]`` (pre-RoPE, post-QK-norm), newest frame last;
    ``filled [b]`` how many of the last slots hold real frames for each batch element.
    Writes are staged per layer during a forward pass and applied together by :meth:`commit`.
    With ``frame_shape=(c, h, w)`` the cache also keeps ``last [b, c, h, w]``, the latest
    finished frame itself (zeros for an empty element), for models that read the previous frame
    directly (``DynamicsConfig.frame_concat``); :meth:`set_last` updates it.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        window: int,
        tokens: int,
        heads: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        frame_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"KVCache window must be >= 1 frame, got {window}")
        shape = (num_layers, batch, window, tokens, heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.filled = torch.zeros(batch, dtype=torch.long, device=device)
        self.last = (
            torch.zeros((batch, *frame_shape), device=device, dtype=dtype)
            if frame_shape is not None
            else None
        )
        self._pending: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    # --- shape ------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def window(self) -> int:
        return self.k.shape[2]

    # --- reading ----------------------------------------------------------------------------
    def valid(self) -> torch.Tensor:
        """``[b, W]`` bool: which slots hold frames of the element's current episode."""
        slots = torch.arange(self.window, device=self.filled.device)
        return slots[None, :] >= (self.window - self.filled)[:, None]

    def all_full(self) -> bool:
        return bool((self.filled >= self.window).all())

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached ``(k, v)`` of one layer, each ``[b, W, n, h, e]``."""
        return self.k[index], self.v[index]

    # --- writing ----------------------------------------------------------------------------
    def stage(self, index: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Stage new frames ``k, v [b, f, n, h, e]`` for layer ``index``; applied by :meth:`commit`."""
        if k.shape[0] != self.batch or k.shape[2:] != self.k.shape[3:]:
            raise ValueError(
                f"KVCache.stage: expected [{self.batch}, f, {', '.join(map(str, self.k.shape[3:]))}], "
                f"got {tuple(k.shape)}"
            )
        self._pending[index] = (k[:, -self.window :], v[:, -self.window :])

    def commit(self) -> None:
        """Roll every layer's window forward by the staged frames and count them as filled."""
        if any(p is None for p in self._pending):
            missing = [i for i, p in enumerate(self._pending) if p is None]
            raise RuntimeError(f"KVCache.commit: layers {missing} staged nothing in this pass")
        f = self._pending[0][0].shape[1]
        new_k = torch.stack([p[0] for p in self._pending]).to(self.k.dtype)  # [L, b, f, n, h, e]
        new_v = torch.stack([p[1] for p in self._pending]).to(self.v.dtype)
        self.k = torch.cat([self.k[:, :, f:], new_k], dim=2)
        self.v = torch.cat([self.v[:, :, f:], new_v], dim=2)
        self.filled = (self.filled + f).clamp(max=self.window)
        self._pending = [None] * self.num_layers

    def set_last(self, frame: torch.Tensor) -> None:
        """Record ``frame [b, c, h, w]`` as every element's latest finished frame."""
        if self.last is None:
            raise RuntimeError("KVCache.set_last: this cache was built without frame_shape")
        if frame.shape != self.last.shape:
            raise ValueError(
                f"KVCache.set_last: expected {tuple(self.last.shape)}, got {tuple(frame.shape)}"
            )
        self.last = frame.detach().to(self.last.dtype).clone()

    def previous_frame(self) -> torch.Tensor:
        """``last`` with empty elements zeroed (a first frame has no predecessor)."""
        if self.last is None:
            raise RuntimeError("KVCache.previous_frame: this cache was built without frame_shape")
        keep = (self.filled > 0).to(self.last.dtype)[:, None, None, None]
        return self.last * keep

    def discard(self) -> None:
        """Drop staged writes (a pass that should not change the cache)."""
        self._pending = [None] * self.num_layers

    # --- batch management -------------------------------------------------------------------
    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Empty the window of every element (``mask=None``) or of those where ``mask [b]`` is True."""
        if mask is None:
            self.filled.zero_()
            return
        mask = torch.as_tensor(mask, device=self.filled.device)
        if mask.shape != (self.batch,) or mask.dtype != torch.bool:
            raise ValueError(
                f"KVCache.reset: mask must be bool [{self.batch}], got {mask.dtype} {tuple(mask.shape)}"
            )
        self.filled = torch.where(mask, torch.zeros_like(self.filled), self.filled)

    def select(self, index: torch.Tensor | list[int] | slice) -> KVCache:
        """A new cache holding the chosen batch elements (a copy)."""
        out = KVCache.__new__(KVCache)
        out.k = self.k[:, index].clone()
        out.v = self.v[:, index].clone()
        out.filled = self.filled[index].clone()
        out.last = None if self.last is None else self.last[index].clone()
        out._pending = [None] * self.num_layers
        return out

    def assign(self, index: torch.Tensor | list[int] | slice, other: KVCache) -> None:
        """Overwrite the chosen batch elements with the contents of ``other``."""
        if other.k.shape[0] != self.k.shape[0] or other.k.shape[2:] != self.k.shape[2:]:
            raise ValueError(
                f"KVCache.assign: layout {tuple(other.k.shape)} does not match {tuple(self.k.shape)}"
            )
        self.k[:, index] = other.k.to(self.k.dtype)
        self.v[:, index] = other.v.to(self.v.dtype)
        self.filled[index] = other.filled
        if self.last is not None and other.last is not None:
            self.last[index] = other.last.to(self.last.dtype)

    def to(self, device: torch.device | str) -> KVCache:
        self.k, self.v, self.filled = self.k.to(device), self.v.to(device), self.filled.to(device)
        if self.last is not None:
            self.last = self.last.to(device)
        return self


class Attention(nn.Module):
    """Self-attention of one pattern (``spatial``, ``temporal`` or ``block``) with RoPE + QK-norm.

    Args:
        dim: model width d; heads: number of heads h (``d % h == 0``).
        kind: attention pattern, see the module docstring.
        qk_norm: RMSNorm on queries and keys per head.
        rope_theta: RoPE frequency base.
        cache_index: this layer's slot in a :class:`KVCache` (temporal/block layers only).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kind: str,
        qk_norm: bool = True,
        rope_theta: float = 10000.0,
        cache_index: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.kind, self.heads, self.head_dim = kind, heads, dim // heads
        self.cache_index = cache_index
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        num_axes = {"spatial": 2, "temporal": 1, "block": 3}[kind]
        self.rope = AxialRotaryEmbedding(self.head_dim, num_axes, rope_theta)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _rope_tables(
        self, frames: int, grid: tuple[int, int], device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (frames, grid, str(device))
        if key not in self._tables:
            if self.kind == "spatial":
                pos = grid_positions(*grid, device=device)  # [n, 2]
            elif self.kind == "temporal":
                pos = torch.arange(frames, device=device)[:, None]  # [t, 1]
            else:
                pos = grid_positions(frames, *grid, device=device)  # [(t n), 3]
            self._tables[key] = self.rope(pos)
        return self._tables[key]

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x ``[b, t, n, d]`` -> q, k, v ``[b, t, n, h, e]`` (q, k normalised, not rotated)."""
        q, k, v = rearrange(
            self.qkv(x), "b t n (three h e) -> three b t n h e", three=3, h=self.heads
        )
        return self.q_norm(q), self.k_norm(k), v

    def forward(
        self,
        x: torch.Tensor,
        grid: tuple[int, int],
        window: int | None = None,
        cache: KVCache | None = None,
        mode: str = "full",
    ) -> torch.Tensor:
        """x ``[b, t, n, d]`` -> ``[b, t, n, d]``.

        ``mode``: ``full`` (no cache), ``prefill`` (full pass over the clip that also stages the
        last W frames' keys/values into ``cache``), ``read`` (x is one new frame ``t == 1``
        attending to the cache), ``write`` (as ``read``, and stages the frame into the cache).
        ``window``: in full/prefill passes, frame i sees frames i-window .. i only.
        """
        b, t, n, _ = x.shape
        q, k, v = self._project(x)
        if self.kind == "spatial" or mode in ("full", "prefill"):
            if mode == "prefill" and self.kind != "spatial":
                cache.stage(self.cache_index, k, v)
            out = self._full(q, k, v, grid, window)
        else:
            if t != 1:
                raise ValueError(f"cached attention takes one new frame, got t={t}")
            ck, cv = cache.layer(self.cache_index)
            if mode == "write":
                cache.stage(self.cache_index, k, v)
            valid = None if cache.all_full() else cache.valid()
            out = self._cached(q, torch.cat([ck, k], 1), torch.cat([cv, v], 1), grid, valid)
        return self.proj(out)

    def _full(self, q, k, v, grid, window) -> torch.Tensor:
        b, t, n = q.shape[:3]
        cos, sin = self._rope_tables(t, grid, q.device)
        if self.kind == "spatial":
            q, k, v = (rearrange(a, "b t n h e -> (b t) h n e") for a in (q, k, v))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            out = F.scaled_dot_product_attention(q, k, v)
            return rearrange(out, "(b t) h n e -> b t n (h e)", b=b)
        frame = torch.arange(t, device=q.device)
        allowed = None
        if window is not None and window < t - 1:
            delta = frame[:, None] - frame[None, :]
            allowed = (delta >= 0) & (delta <= window)  # [t, t]
        if self.kind == "temporal":
            q, k, v = (rearrange(a, "b t n h e -> (b n) h t e") for a in (q, k, v))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if allowed is None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            return rearrange(out, "(b n) h t e -> b t n (h e)", b=b)
        q, k, v = (rearrange(a, "b t n h e -> b h (t n) e") for a in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if allowed is None:
            delta = frame[:, None] - frame[None, :]
            allowed = delta >= 0
        mask = allowed.repeat_interleave(n, 0).repeat_interleave(n, 1)  # [(t n), (t n)]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return rearrange(out, "b h (t n) e -> b t n (h e)", t=t)

    def _cached(self, q, k, v, grid, valid) -> torch.Tensor:
        """q ``[b, 1, n, h, e]``; k, v ``[b, s, n, h, e]`` (cache slots + the new frame)."""
        b, s, n = k.shape[:3]
        cos, sin = self._rope_tables(s, grid, q.device)
        mask = None
        if valid is not None:
            mask = torch.cat([valid, valid.new_ones(b, 1)], dim=1)  # [b, s]
        if self.kind == "temporal":
            q = rearrange(q, "b t n h e -> (b n) h t e")
            k, v = (rearrange(a, "b s n h e -> (b n) h s e") for a in (k, v))
            q, k = apply_rope(q, cos[-1:], sin[-1:]), apply_rope(k, cos, sin)
            if mask is not None:
                mask = rearrange(mask, "b s -> b 1 1 s").repeat_interleave(n, 0)  # [(b n), 1, 1, s]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return rearrange(out, "(b n) h t e -> b t n (h e)", b=b)
        q = rearrange(q, "b t n h e -> b h (t n) e")
        k, v = (rearrange(a, "b s n h e -> b h (s n) e") for a in (k, v))
        q, k = apply_rope(q, cos[-n:], sin[-n:]), apply_rope(k, cos, sin)
        if mask is not None:
            mask = rearrange(mask.repeat_interleave(n, 1), "b sn -> b 1 1 sn")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return rearrange(out, "b h (t n) e -> b t n (h e)", t=1)
