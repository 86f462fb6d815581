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
frames in :class:`KVCache`: a ring of ``W + 1`` slots per layer holding the last ``W`` frames and
one free slot for the frame being generated. Keys are stored already rotated, at the frame's
time position on the cache's clock (the count of frames the cache has seen); the new frame's
query and key are rotated at the current clock. RoPE only sees position differences, so this is
exactly the geometry of a sliding-window forward pass, and each step writes one frame in place:
no cached key is rotated, copied or moved again (angles are computed in float64 per position,
so they stay exact however long the clock runs). The slots sit where the attention reads them
(``[b, n, h, S, e]`` for temporal layers, ``[b, h, S, n, e]`` for block layers), so attention
reads the ring as a view, and the order of the slots does not matter to it. Each batch element
tracks how many of its slots are filled, so one world in a batch can be reset
(``cache.reset(mask)``) while the others continue. A full forward with ``window=W`` (frame i
attends to frames i-W .. i) is the uncached twin of cached generation, and the tests check that
the two agree.

einops legend: b batch, t time, n tokens per frame, d width, h heads, e head width,
S ring slots (W + 1), L cached layers, W window, f frames written at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldsim.nn.rope import AxialRotaryEmbedding, apply_rope, grid_positions

ATTENTION_KINDS = ("spatial", "temporal", "block")


def teacher_mask(frames: int, window: int | None = None, device=None) -> torch.Tensor:
    """Which frames each frame attends to in a teacher-forced clip: ``[2T, 2T]`` bool.

    The clip holds T clean frames, then the same T frames noised. Clean frame i sees clean
    frames <= i (as in a causal pass); noised frame j sees the clean frames < j and itself,
    which is what a new frame sees in cached generation (the finished frames, then itself).
    ``window``: no frame sees a clean frame more than ``window`` frames older than it.
    """
    time = torch.arange(frames, device=device).repeat(2)  # [2T]
    noised = torch.arange(2 * frames, device=device) >= frames
    delta = time[:, None] - time[None, :]  # query - key
    older = torch.where(noised[:, None], delta > 0, delta >= 0)
    if window is not None:
        older = older & (delta <= window)
    return (older & ~noised[None, :]) | torch.eye(2 * frames, dtype=torch.bool, device=device)


class KVCache:
    """Keys/values of the last ``window`` finished frames of each cached attention layer.

    Tensors: ``k``, ``v`` ``[L, b, n, h, S, e]`` (``layout="temporal"``) or ``[L, b, h, S, n, e]``
    (``layout="block"``), ``S = W + 1`` ring slots; keys post-QK-norm and rotated at their
    frame's clock position. ``head``: the slot of the oldest frame (logical slot ``j`` is
    physical slot ``(head + j) % S``; logical ``W`` is the free slot of the frame being
    generated); ``clock``: the time position of that frame. ``filled [b]``: how many of the
    newest slots hold frames of each element's current episode. With ``frame_shape=(c, h, w)``
    the cache also keeps ``last [b, c, h, w]``, the latest finished frame itself (zeros for an
    empty element), for models that read the previous frame directly
    (``DynamicsConfig.frame_concat``); :meth:`set_last` updates it.
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
        layout: str = "temporal",
    ) -> None:
        if window < 1:
            raise ValueError(f"KVCache window must be >= 1 frame, got {window}")
        if layout not in ("temporal", "block"):
            raise ValueError(f"KVCache layout must be 'temporal' or 'block', got {layout!r}")
        slots = window + 1
        if layout == "temporal":
            shape = (num_layers, batch, tokens, heads, slots, head_dim)
        else:
            shape = (num_layers, batch, heads, slots, tokens, head_dim)
        self.layout = layout
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.head, self.clock = 0, 0
        self.filled = torch.zeros(batch, dtype=torch.long, device=device)
        self.last = (
            torch.zeros((batch, *frame_shape), device=device, dtype=dtype)
            if frame_shape is not None
            else None
        )
        self._written: list[int | None] = [None] * num_layers  # frames each layer wrote

    # --- shape ------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def slots(self) -> int:
        return self.k.shape[4] if self.layout == "temporal" else self.k.shape[3]

    @property
    def window(self) -> int:
        return self.slots - 1

    @property
    def tokens(self) -> int:
        return self.k.shape[2] if self.layout == "temporal" else self.k.shape[4]

    @property
    def _slot_dim(self) -> int:  # the slot axis of one layer's [b, ...] tensor
        return 3 if self.layout == "temporal" else 2

    def physical(self, logical: torch.Tensor | int) -> torch.Tensor:
        """Physical slots of logical slots (0 oldest .. W-1 newest, W the free slot)."""
        return (torch.as_tensor(logical) + self.head) % self.slots

    # --- reading ----------------------------------------------------------------------------
    def valid(self) -> torch.Tensor:
        """``[b, W]`` bool, in logical order: which slots hold frames of the current episode."""
        slots = torch.arange(self.window, device=self.filled.device)
        return slots[None, :] >= (self.window - self.filled)[:, None]

    def all_full(self) -> bool:
        return bool((self.filled >= self.window).all())

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's ring ``(k, v)`` as attention reads it: ``[(b n), h, S, e]`` (temporal) or
        ``[b, h, (S n), e]`` (block), views of the cache."""
        k, v = self.k[index], self.v[index]
        if self.layout == "temporal":
            b, n, h, s, e = k.shape
            return k.reshape(b * n, h, s, e), v.reshape(b * n, h, s, e)
        b, h, s, n, e = k.shape
        return k.reshape(b, h, s * n, e), v.reshape(b, h, s * n, e)

    def mask(self) -> torch.Tensor | None:
        """Attention mask over the ring for one new frame (``None`` when every window is full):
        ``[(b n), 1, 1, S]`` (temporal) or ``[b, 1, 1, (S n)]`` (block), True where allowed."""
        if self.all_full():
            return None
        slots = torch.arange(self.slots, device=self.filled.device)
        logical = (slots - self.head) % self.slots  # [S]
        ok = (logical[None, :] == self.window) | (
            logical[None, :] >= (self.window - self.filled)[:, None]
        )  # [b, S]
        n = self.tokens
        if self.layout == "temporal":
            return ok[:, None, None, None, :].expand(-1, n, 1, 1, -1).reshape(-1, 1, 1, self.slots)
        return ok[:, None, None, :, None].expand(-1, 1, 1, -1, n).reshape(self.batch, 1, 1, -1)

    # --- writing ----------------------------------------------------------------------------
    def _check_frames(self, where: str, k: torch.Tensor) -> None:
        h, e = (self.k.shape[3], self.k.shape[5]) if self.layout == "temporal" else (
            self.k.shape[2], self.k.shape[5])
        if k.dim() != 5 or k.shape[0] != self.batch or tuple(k.shape[2:]) != (self.tokens, h, e):
            raise ValueError(
                f"KVCache.{where}: expected [{self.batch}, f, {self.tokens}, {h}, {e}], "
                f"got {tuple(k.shape)}"
            )

    def _put(self, index: int, physical: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write frames ``k, v [b, f, n, h, e]`` into the physical slots ``[f]`` of a layer."""
        order = (0, 2, 3, 1, 4) if self.layout == "temporal" else (0, 3, 1, 2, 4)
        dim = self._slot_dim
        physical = physical.to(self.k.device)
        self.k[index].index_copy_(dim, physical, k.permute(order).to(self.k.dtype))
        self.v[index].index_copy_(dim, physical, v.permute(order).to(self.v.dtype))

    def write_current(
        self, index: int, k: torch.Tensor, v: torch.Tensor, stage: bool = False
    ) -> None:
        """Put the frame being generated, ``k, v [b, 1, n, h, e]``, in layer ``index``'s free
        slot, where the window's frames are untouched. With ``stage`` the frame is finished:
        :meth:`commit` makes it the newest of the window."""
        self._check_frames("write_current", k)
        if k.shape[1] != 1:
            raise ValueError(f"KVCache.write_current takes one frame, got {k.shape[1]}")
        slot, dim = (self.head + self.window) % self.slots, self._slot_dim
        k, v = (x[:, 0] if self.layout == "temporal" else x[:, 0].transpose(1, 2) for x in (k, v))
        self.k[index].select(dim, slot).copy_(k)  # [b, n, h, e] (temporal) / [b, h, n, e] (block)
        self.v[index].select(dim, slot).copy_(v)
        if stage:
            self._written[index] = 0

    def write_context(self, index: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Put the last ``f <= W`` frames of a context, ``k, v [b, f, n, h, e]`` (rotated at
        clock positions ``clock - f .. clock - 1``), in layer ``index``'s newest slots;
        :meth:`commit` then counts them as the whole window of every element."""
        self._check_frames("write_context", k)
        k, v = k[:, -self.window :], v[:, -self.window :]
        f = k.shape[1]
        self._put(index, self.physical(torch.arange(self.window - f, self.window)), k, v)
        self._written[index] = f

    def commit(self) -> None:
        """Apply what every layer wrote in this pass: a generated frame becomes the newest of
        the window (the ring turns by one slot, the clock by one frame), a context becomes the
        window."""
        if any(w is None for w in self._written):
            missing = [i for i, w in enumerate(self._written) if w is None]
            raise RuntimeError(f"KVCache.commit: layers {missing} staged nothing in this pass")
        f = self._written[0]
        if f == 0:
            self.head = (self.head + 1) % self.slots
            self.clock += 1
            self.filled = (self.filled + 1).clamp(max=self.window)
        else:
            self.filled = torch.full_like(self.filled, f)
        self._written[:] = [None] * self.num_layers

    def set_last(self, frame: torch.Tensor) -> None:
        """Record ``frame [b, c, h, w]`` as every element's latest finished frame."""
        if self.last is None:
            raise RuntimeError("KVCache.set_last: this cache was built without frame_shape")
        if frame.shape != self.last.shape:
            raise ValueError(
                f"KVCache.set_last: expected {tuple(self.last.shape)}, got {tuple(frame.shape)}"
            )
        self.last.copy_(frame.detach())

    def previous_frame(self) -> torch.Tensor:
        """``last`` with empty elements zeroed (a first frame has no predecessor)."""
        if self.last is None:
            raise RuntimeError("KVCache.previous_frame: this cache was built without frame_shape")
        keep = (self.filled > 0).to(self.last.dtype)[:, None, None, None]
        return self.last * keep

    def discard(self) -> None:
        """Forget what layers wrote in this pass without committing it."""
        self._written[:] = [None] * self.num_layers

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
        """A new cache holding the chosen batch elements (a copy, on the same ring and clock)."""
        out = KVCache.__new__(KVCache)
        out.layout, out.head, out.clock = self.layout, self.head, self.clock
        out.k = self.k[:, index].clone()
        out.v = self.v[:, index].clone()
        out.filled = self.filled[index].clone()
        out.last = None if self.last is None else self.last[index].clone()
        out._written = [None] * self.num_layers
        return out

    def view(self, part: slice) -> KVCache:
        """The batch elements ``part`` as a cache sharing this one's storage: what a pass over
        the view writes lands here, and its staged frames are this cache's to commit."""
        out = KVCache.__new__(KVCache)
        out.layout, out.head, out.clock = self.layout, self.head, self.clock
        out.k, out.v, out.filled = self.k[:, part], self.v[:, part], self.filled[part]
        out.last = None if self.last is None else self.last[part]
        out._written = self._written  # shared: commit() on this cache applies the view's writes
        return out

    def assign(self, index: torch.Tensor | list[int] | slice, other: KVCache) -> None:
        """Overwrite the chosen batch elements with the contents of ``other``: a cache from
        :meth:`select` of this one (same ring and clock), or one whose elements are empty."""
        if (
            other.layout != self.layout
            or other.k.shape[0] != self.k.shape[0]
            or other.k.shape[2:] != self.k.shape[2:]
        ):
            raise ValueError(
                f"KVCache.assign: layout {other.layout} {tuple(other.k.shape)} does not match "
                f"{self.layout} {tuple(self.k.shape)}"
            )
        if other.clock != self.clock and bool((other.filled > 0).any()):
            raise ValueError(
                f"KVCache.assign: the other cache's frames sit at clock {other.clock}, this one "
                f"is at {self.clock}; build it with select() from this cache"
            )
        k, v = other.k, other.v
        if other.head != self.head:  # line up logical slots (contents of empty elements only)
            shift = self.head - other.head
            k, v = (x.roll(shift, dims=1 + self._slot_dim) for x in (k, v))
        self.k[:, index] = k.to(self.k.dtype)
        self.v[:, index] = v.to(self.v.dtype)
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
        self, frames: int, grid: tuple[int, int], device, teacher: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables of a clip of ``frames`` frames (``teacher``: two halves at the same times)."""
        key = (frames, grid, str(device), teacher)
        if key not in self._tables:
            times = frames // 2 if teacher else frames
            if self.kind == "spatial":
                pos = grid_positions(*grid, device=device)  # [n, 2]
            elif self.kind == "temporal":
                pos = torch.arange(times, device=device)[:, None]  # [t, 1]
            else:
                pos = grid_positions(times, *grid, device=device)  # [(t n), 3]
            if teacher and self.kind != "spatial":
                pos = torch.cat([pos, pos])
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
        attending to the cache), ``write`` (as ``read``, and stages the frame into the cache),
        ``teacher`` (x is a clip of T clean frames followed by the same T frames noised: see
        :func:`teacher_mask`).
        ``window``: in full/prefill/teacher passes, frame i sees frames i-window .. i only.
        """
        b, t, n, _ = x.shape
        q, k, v = self._project(x)
        if mode == "teacher":
            out = self._full(q, k, v, grid, window, teacher=True)
        elif self.kind == "spatial" or mode in ("full", "prefill"):
            if mode == "prefill" and self.kind != "spatial":
                f = min(t, cache.window)
                cos, sin = self._rope_at(cache.clock - f, f, grid, x.device)
                cache.write_context(self.cache_index, apply_rope(k[:, -f:], cos, sin), v[:, -f:])
            out = self._full(q, k, v, grid, window)
        else:
            if t != 1:
                raise ValueError(f"cached attention takes one new frame, got t={t}")
            out = self._cached(q, k, v, cache, grid, stage=mode == "write")
        return self.proj(out)

    def _rope_at(self, start: int, f: int, grid: tuple[int, int], device):
        """Tables rotating frames ``[b, f, n, h, e]`` at time positions ``start .. start+f-1``:
        ``[f, 1, 1, e]`` (temporal) or ``[f, n, 1, e]`` (block)."""
        key = ("at", start, f, grid, str(device))
        if key not in self._tables:
            if len(self._tables) > 64:  # the clock moves on: keep the table small
                self._tables = {k: t for k, t in self._tables.items() if k[0] != "at"}
            if self.kind == "temporal":
                cos, sin = self.rope(torch.arange(start, start + f, device=device)[:, None])
                self._tables[key] = (cos[:, None, None], sin[:, None, None])
            else:
                pos = grid_positions(f, *grid, device=device)  # [(f n), 3]
                pos[:, 0] += start
                cos, sin = self.rope(pos)
                n = grid[0] * grid[1]
                self._tables[key] = (cos.view(f, n, 1, -1), sin.view(f, n, 1, -1))
        return self._tables[key]

    def _full(self, q, k, v, grid, window, teacher: bool = False) -> torch.Tensor:
        b, t, n = q.shape[:3]
        cos, sin = self._rope_tables(t, grid, q.device, teacher)
        if self.kind == "spatial":
            q, k, v = (rearrange(a, "b t n h e -> (b t) h n e") for a in (q, k, v))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            out = F.scaled_dot_product_attention(q, k, v)
            return rearrange(out, "(b t) h n e -> b t n (h e)", b=b)
        frame = torch.arange(t, device=q.device)
        allowed = None
        if teacher:
            allowed = teacher_mask(t // 2, window, q.device)
        elif window is not None and window < t - 1:
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

    def _cached(self, q, k, v, cache: KVCache, grid, stage: bool) -> torch.Tensor:
        """q, k, v ``[b, 1, n, h, e]`` of the frame at the cache's clock; attends to the ring
        (``stage``: the frame is finished, :meth:`KVCache.commit` keeps it)."""
        b, _, n = q.shape[:3]
        cos, sin = self._rope_at(cache.clock, 1, grid, q.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.write_current(self.cache_index, k, v, stage)
        ck, cv = cache.layer(self.cache_index)
        mask = cache.mask()
        if self.kind == "temporal":
            q = rearrange(q, "b t n h e -> (b n) h t e")
            out = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask)
            return rearrange(out, "(b n) h t e -> b t n (h e)", b=b)
        q = rearrange(q, "b t n h e -> b h (t n) e")
        out = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask)
        return rearrange(out, "b h (t n) e -> b t n (h e)", t=1)
