"""The dynamics model: a spatiotemporal diffusion transformer (DiT) over latent frames.

Given a clip of latent frames, each at its own noise level, and the actions between them, the
network predicts the flow-matching velocity of every frame (see ``worldsim.flow`` for the
objective and the sampler, which take this network as an argument).

Architecture, top to bottom:

- per-frame patches (patch size p) -> tokens ``[b, t, n, d]``;
- ``depth`` DiT blocks; with ``attention="factorized"`` they alternate spatial attention
  (within a frame) and causal temporal attention (each token sees its own spatial position in
  frames <= its own); with ``attention="block_causal"`` every block attends to all tokens of
  frames <= its own. RoPE (2-D in space, 1-D in time, 3-D for block-causal) and QK-norm;
- adaLN-Zero conditioning **per frame**: ``c_t = emb(noise_level_t) + emb(step_size_t) +
  emb(action)``, where frame ``t + 1`` sees ``a_t`` and frame 0 a learned ``start`` vector
  (the transition-alignment convention of ``docs/architecture.md``); a learned ``null`` action
  replaces dropped actions for classifier-free guidance;
- a final adaLN + linear layer back to patches, zero-initialised (a fresh model predicts 0);
- with ``readout=True``, an :class:`~worldsim.readout.EventReadout` on the last block's tokens
  that predicts each frame's reward and termination from the model's own state (trained with
  the flow loss; ``forward(..., readout=True)`` and ``step(..., readout=True)`` return it).

Generation runs frame by frame with a :class:`~worldsim.nn.attention.KVCache`: ``prefill`` the
context once, then each denoising step of a new frame is a pass over that frame's n tokens
(``step``), and one more pass (``step(..., write=True)``) stores the finished frame.

einops legend: b batch, t time, c latent channels, h w latent grid, p patch, n tokens per frame,
d width, a action dim.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from worldsim.nn.adaln import ActionEmbedder, ActionInput, TimestepEmbedder, modulate
from worldsim.nn.attention import Attention, KVCache
from worldsim.nn.patchify import PatchEmbed, check_patch, unpatchify
from worldsim.presets import from_preset
from worldsim.readout import EventReadout

ATTENTION_MODES = ("factorized", "block_causal")
ACTION_INIT_STD = 1.0  # std of the learned action, start and null vectors at init


@dataclass
class DynamicsConfig:
    """Every default of the dynamics network lives here (presets below)."""

    latent_channels: int = 4  # c
    latent_height: int = 8  # h
    latent_width: int = 8  # w
    patch_size: int = 1  # p
    dim: int = 128  # d
    depth: int = 4  # DiT blocks (factorized: alternating spatial / temporal, so even)
    heads: int = 4
    mlp_ratio: float = 4.0
    attention: str = "factorized"  # factorized | block_causal
    qk_norm: bool = True
    rope_theta: float = 10000.0
    action_embedding: str = "discrete"  # discrete | continuous | both (worldsim/actions.py)
    num_actions: int = 8  # discrete codes (discrete, both)
    action_dim: int = 0  # continuous action width (continuous, both)
    shortcut: bool = True  # condition on the step size d (shortcut models)
    context_window: int = 16  # W: finished frames kept in the KV cache during generation
    frame_concat: bool = True  # also feed each frame's predecessor as extra input channels
    local_kernel: int = 0  # k > 0: a k x k conv stem on the latent grid and a depthwise conv per block
    readout: bool = False  # reward/termination read from the last block's tokens (worldsim/readout.py)
    reward_bins: int = 41  # readout: two-hot bins in symlog space
    reward_range: float = 5.0  # readout: the bins span [-range, range] in symlog space

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(
                f"DynamicsConfig.attention must be one of {ATTENTION_MODES}, got {self.attention!r}"
            )
        if self.attention == "factorized" and self.depth % 2:
            raise ValueError(
                f"DynamicsConfig.depth must be even with factorized attention, got {self.depth}"
            )
        if self.local_kernel < 0 or (self.local_kernel and self.local_kernel % 2 == 0):
            raise ValueError(
                f"DynamicsConfig.local_kernel must be 0 (off) or odd, got {self.local_kernel}"
            )
        if self.depth < 1 or self.dim < 1 or self.heads < 1 or self.context_window < 1:
            raise ValueError(
                "DynamicsConfig: depth, dim, heads and context_window must be positive"
            )
        check_patch(self.latent_height, self.latent_width, self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size) * (self.latent_width // self.patch_size)


PRESETS: dict[str, DynamicsConfig] = {
    # Tests: a forward pass in milliseconds.
    "tiny": DynamicsConfig(patch_size=2, dim=32, depth=2, heads=2, num_actions=4, context_window=8),
    # Two CPU cores, minutes: 64x64 games encoded to 8 x 16 x 16 latents, 2x2 patches -> 64
    # tokens per frame, local mixing (speed and quality: docs/dynamics.md, Results).
    "quickstart": DynamicsConfig(
        latent_channels=8,
        latent_height=16,
        latent_width=16,
        patch_size=2,
        dim=64,
        depth=4,
        heads=4,
        context_window=8,
        local_kernel=3,
    ),
    # One GPU, minutes: 9.9 M parameters, the same latents and tokens as "quickstart"
    # (docs/dynamics.md, Results).
    "medium": DynamicsConfig(
        latent_channels=8,
        latent_height=16,
        latent_width=16,
        patch_size=2,
        dim=256,
        depth=8,
        heads=8,
        context_window=8,
    ),
    # GPU sizes: 16x16 latents with 2x2 patches -> 64 tokens per frame.
    "base": DynamicsConfig(
        latent_channels=8,
        latent_height=16,
        latent_width=16,
        patch_size=2,
        dim=512,
        depth=12,
        heads=8,
    ),
    "large": DynamicsConfig(
        latent_channels=16,
        latent_height=16,
        latent_width=16,
        patch_size=2,
        dim=1024,
        depth=24,
        heads=16,
        context_window=32,
    ),
}


def config_from_preset(name: str, **overrides) -> DynamicsConfig:
    """A preset's config with fields replaced; unknown preset or field names raise ``ValueError``."""
    return from_preset(PRESETS, name, "dynamics", "DynamicsConfig", **overrides)


class DiTBlock(nn.Module):
    """One DiT block with adaLN-Zero: attention of one ``kind`` and an MLP, both gated."""

    def __init__(self, cfg: DynamicsConfig, kind: str, cache_index: int | None) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.heads, kind, cfg.qk_norm, cfg.rope_theta, cache_index)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        k = cfg.local_kernel
        self.local = nn.Conv2d(d, d, k, padding=k // 2, groups=d) if k else None

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, grid, window=None, cache=None, mode="full"
    ) -> torch.Tensor:
        """x ``[b, t, n, d]``, c ``[b, t, d]`` (one conditioning vector per frame)."""
        mods = self.adaLN_modulation(c)[
            :, :, None
        ]  # [b, t, 1, 6d]: broadcast over a frame's tokens
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=-1)
        x = x + gate_msa * self.attn(
            modulate(self.norm1(x), shift_msa, scale_msa), grid, window, cache, mode
        )
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        if self.local is not None:  # each token also sees its neighbours in its own frame
            h = h + _on_grid(self.local, h, grid)
        x = x + gate_mlp * self.mlp(h)
        return x


def _previous(z: torch.Tensor) -> torch.Tensor:
    """``z [b, t, ...]`` shifted one frame later in time, zeros before frame 0."""
    return torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)


def _on_grid(conv: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A 2-D ``conv`` over each frame's token grid: ``[b, t, n, d] -> [b, t, n, d']``."""
    b, t = x.shape[:2]
    y = conv(rearrange(x, "b t (gh gw) d -> (b t) d gh gw", gh=grid[0], gw=grid[1]))
    return rearrange(y, "(b t) d gh gw -> b t (gh gw) d", b=b, t=t)


class ConvStem(nn.Module):
    """A ``k x k`` conv over the latent grid whose features join the raw latents before
    patchifying: ``[b, t, c, h, w] -> [b, t, c + s, h, w]``. A token of 2x2 cells then knows
    the cells around it (of its frame and, with ``frame_concat``, of the frame before), so a
    move of one latent cell, which splits patches, is a local map, not an attention pattern."""

    def __init__(self, channels: int, features: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, features, kernel, padding=kernel // 2)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, t = z.shape[:2]
        y = self.act(self.conv(z.flatten(0, 1))).unflatten(0, (b, t))
        return torch.cat([z, y], dim=2)


class FinalLayer(nn.Module):
    """adaLN then a linear map from width d back to ``p*p*c`` values per token."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, :, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DynamicsModel(nn.Module):
    """Spatiotemporal DiT predicting flow-matching velocities of latent frames."""

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__()
        self.cfg = cfg = config
        self.grid = (cfg.latent_height // cfg.patch_size, cfg.latent_width // cfg.patch_size)
        in_channels = cfg.latent_channels * (2 if cfg.frame_concat else 1)
        self.stem = None
        if cfg.local_kernel:
            self.stem = ConvStem(in_channels, cfg.dim // 2, cfg.local_kernel)
            in_channels += cfg.dim // 2
        self.patch_embed = PatchEmbed(in_channels, cfg.dim, cfg.patch_size)
        self.noise_embed = TimestepEmbedder(cfg.dim)
        self.step_embed = TimestepEmbedder(cfg.dim) if cfg.shortcut else None
        self.action_embed = ActionEmbedder(
            cfg.dim, cfg.action_embedding, cfg.num_actions, cfg.action_dim
        )
        if cfg.attention == "factorized":
            kinds = ["spatial" if i % 2 == 0 else "temporal" for i in range(cfg.depth)]
        else:
            kinds = ["block"] * cfg.depth
        self.cached_layers = sum(k != "spatial" for k in kinds)
        cache_ids = iter(range(self.cached_layers))
        self.blocks = nn.ModuleList(
            [DiTBlock(cfg, k, None if k == "spatial" else next(cache_ids)) for k in kinds]
        )
        self.final = FinalLayer(cfg.dim, cfg.patch_size**2 * cfg.latent_channels)
        self.readout = (
            EventReadout(cfg.dim, cfg.reward_bins, cfg.reward_range) if cfg.readout else None
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init: xavier Linear layers, small embeddings, and every adaLN-Zero/output layer zeroed
        so each block starts as the identity and the model starts by predicting zero velocity."""

        def _basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic)
        embedders = [self.noise_embed] + ([self.step_embed] if self.step_embed is not None else [])
        for emb in embedders:
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
        # Action vectors start at unit scale per entry, like the noise embedding once trained:
        # the adaLN layers learn each part of c at a rate proportional to its size, and with
        # DiT's 0.02 the action (norm ~0.1 against the noise level's ~1-5) took thousands of
        # steps to be read at all, so short runs ignored it.
        if self.action_embed.codes is not None:
            nn.init.normal_(self.action_embed.codes.weight, std=ACTION_INIT_STD)
        nn.init.normal_(self.action_embed.start, std=ACTION_INIT_STD)
        nn.init.normal_(self.action_embed.null, std=ACTION_INIT_STD)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        if self.readout is not None:
            self.readout.initialize_weights()

    # --- conditioning -------------------------------------------------------------------------
    def _time_cond(self, noise_level: torch.Tensor, step_size: torch.Tensor | None) -> torch.Tensor:
        c = self.noise_embed(noise_level)
        if self.step_embed is not None:
            c = c + self.step_embed(
                torch.zeros_like(noise_level) if step_size is None else step_size
            )
        elif step_size is not None:
            raise ValueError(
                "step_size given but DynamicsConfig.shortcut is False (no step-size embedding)"
            )
        return c

    def _check_latents(self, z: torch.Tensor, frames_dim: bool = True) -> None:
        cfg = self.cfg
        want = (cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        if z.dim() != (5 if frames_dim else 4) or tuple(z.shape[-3:]) != want:
            lead = "[b, t, " if frames_dim else "[b, "
            raise ValueError(
                f"dynamics expects latents {lead}{', '.join(map(str, want))}], got {tuple(z.shape)}"
            )

    def _with_previous(self, z: torch.Tensor) -> torch.Tensor:
        """``z [b, t, c, h, w] -> [b, t, 2c, h, w]``: each frame next to the frame before it (as
        given, at its own noise level; zeros before frame 0, as for a world with an empty cache).

        Why: with factorized attention a token only sees its own position in earlier frames, so
        "copy the last frame, moved by the action" needs a spatial layer to gather neighbours
        first; with the predecessor in the input channels the first spatial layer can do it,
        and short CPU runs learn to copy and shift instead of predicting a blur."""
        if not self.cfg.frame_concat:
            return z
        return torch.cat([z, _previous(z)], dim=2)

    def _run(self, z: torch.Tensor, c: torch.Tensor, window, cache, mode, readout: bool = False):
        if self.stem is not None:
            z = self.stem(z)
        x = self.patch_embed(z)  # [b, t, n, d] (z holds 2c channels with frame_concat)
        for block in self.blocks:
            x = block(x, c, self.grid, window, cache, mode)
        out = self.final(x, c)  # [b, t, n, (p p c)]
        v = unpatchify(out, self.cfg.patch_size, self.cfg.latent_height, self.cfg.latent_width)
        if not readout:
            return v
        if self.readout is None:
            raise ValueError("readout requested but DynamicsConfig.readout is False")
        return v, self.readout(x, c)

    # --- full passes --------------------------------------------------------------------------
    def forward(
        self,
        z_noisy: torch.Tensor,
        noise_level: torch.Tensor,
        actions: ActionInput | None = None,
        step_size: torch.Tensor | None = None,
        null_mask: torch.Tensor | None = None,
        window: int | None = None,
        readout: bool = False,
        teacher: bool = False,
    ):
        """Velocity of every frame (and, with ``readout=True``, the readout's outputs).

        With ``teacher=True`` the clip is teacher-forced: ``z_noisy [b, 2T, ...]`` holds T clean
        (context-labelled) frames, then the same T frames noised, and ``noise_level`` /
        ``step_size`` are ``[b, 2T]``; ``actions`` and ``null_mask`` cover the T frames once
        (both halves get them). Noised frame j sees clean frames < j and itself
        (``worldsim.nn.attention.teacher_mask``), and its predecessor channels hold clean frame
        j - 1: the view of a new frame in cached generation, for every frame of the clip in
        one pass.

        Args:
            z_noisy: ``[b, t, c, h, w]``, each frame at its own noise level.
            noise_level: ``[b, t]`` in [0, 1] (0 clean, 1 pure noise).
            actions: ``[b, t-1]`` codes, ``[b, t-1, a]`` vectors, a tuple of both, or ``None``
                (every transition gets the ``null`` action).
            step_size: ``[b, t]`` shortcut step sizes (``None`` -> 0, plain flow matching).
            null_mask: ``[b, t-1]`` bool, transitions whose action is replaced by ``null``.
            window: frame i attends to frames i-window .. i only (``None``: all earlier frames).
            readout: also return the :class:`~worldsim.readout.EventReadout` outputs
                (``reward_logits [b, t, k]``, ``termination_logit [b, t]``).
        Returns:
            velocity ``[b, t, c, h, w]``, or ``(velocity, readout outputs)``.
        """
        self._check_latents(z_noisy)
        b, t = z_noisy.shape[:2]
        if noise_level.shape != (b, t):
            raise ValueError(f"noise_level must be [{b}, {t}], got {tuple(noise_level.shape)}")
        if step_size is not None and step_size.shape != (b, t):
            raise ValueError(f"step_size must be [{b}, {t}], got {tuple(step_size.shape)}")
        if teacher and t % 2:
            raise ValueError(f"a teacher-forced clip holds 2T frames (clean, then noised), got {t}")
        frames = t // 2 if teacher else t
        act = self.action_embed.sequence(actions, b, frames, null_mask)
        if not teacher:
            c = self._time_cond(noise_level, step_size) + act
            return self._run(self._with_previous(z_noisy), c, window, None, "full", readout)
        c = self._time_cond(noise_level, step_size) + act.repeat(1, 2, 1)
        z = z_noisy
        if self.cfg.frame_concat:  # both halves' predecessors are the clean frames
            z = torch.cat([z, _previous(z[:, :frames]).repeat(1, 2, 1, 1, 1)], dim=2)
        return self._run(z, c, window, None, "teacher", readout)

    # --- cached generation --------------------------------------------------------------------
    def init_cache(
        self, batch: int, window: int | None = None, device=None, dtype=torch.float32
    ) -> KVCache:
        """An empty KV cache for ``batch`` worlds keeping ``window`` frames (default: config)."""
        cfg = self.cfg
        device = device if device is not None else next(self.parameters()).device
        return KVCache(
            self.cached_layers,
            batch,
            window or cfg.context_window,
            cfg.tokens_per_frame,
            cfg.heads,
            cfg.dim // cfg.heads,
            device,
            dtype,
            frame_shape=(cfg.latent_channels, cfg.latent_height, cfg.latent_width)
            if cfg.frame_concat
            else None,
            layout="temporal" if cfg.attention == "factorized" else "block",
        )

    @torch.no_grad()
    def prefill(
        self, cache: KVCache, z: torch.Tensor, actions: ActionInput | None, noise_level: float = 0.0
    ) -> None:
        """Reset ``cache`` and fill it with the context clip ``z [b, t, c, h, w]`` (labelled with
        ``noise_level``) and its ``t - 1`` actions: one full pass with the cache's window."""
        self._check_latents(z)
        b, t = z.shape[:2]
        if cache.batch != b:
            raise ValueError(f"prefill: cache holds {cache.batch} worlds but the context has {b}")
        level = z.new_full((b, t), float(noise_level))
        c = self._time_cond(level, None) + self.action_embed.sequence(actions, b, t)
        cache.reset()
        self._run(self._with_previous(z), c, cache.window, cache, "prefill")
        cache.commit()
        if self.cfg.frame_concat:
            cache.set_last(z[:, -1])

    def step(
        self,
        cache: KVCache,
        z_new: torch.Tensor,
        noise_level: torch.Tensor,
        action: ActionInput | None,
        step_size: torch.Tensor | None = None,
        write: bool = False,
        readout: bool = False,
        chunk: int | None = None,
    ):
        """Velocity of one new frame ``z_new [b, c, h, w]`` at ``noise_level [b]`` that follows the
        cached frames through ``action`` (``[b]``, ``[b, a]``, a tuple, or ``None`` for ``null``).
        With ``write=True`` the frame's keys/values are appended to the cache (call it once per
        finished frame, with the context noise level). ``chunk``: run the pass over at most
        this many worlds at a time (same result; on CPUs a batch that fits the caches is faster
        than one big pass). Returns ``[b, c, h, w]``, or with
        ``readout=True`` ``(velocity, readout outputs)`` (``reward_logits [b, k]``,
        ``termination_logit [b]``)."""
        self._check_latents(z_new, frames_dim=False)
        b = z_new.shape[0]
        if cache.batch != b:
            raise ValueError(f"step: cache holds {cache.batch} worlds but z_new has {b}")
        if noise_level.shape != (b,):
            raise ValueError(f"step: noise_level must be [{b}], got {tuple(noise_level.shape)}")
        c = self._time_cond(noise_level[:, None], None if step_size is None else step_size[:, None])
        if action is None:
            act = self.action_embed.null.expand(b, -1)
        else:
            lead = self.action_embed.lead_shape(action)
            if lead != (b,):
                raise ValueError(
                    f"step: expected one action per world (leading shape ({b},)), got {lead}"
                )
            act = self.action_embed(action)
        # A world with nothing cached is at its first frame, which has no preceding action.
        act = torch.where((cache.filled == 0)[:, None], self.action_embed.start.to(act.dtype), act)
        z_in = z_new[:, None]  # [b, 1, c, h, w]
        if self.cfg.frame_concat:
            if cache.last is None:
                raise ValueError(
                    "step: frame_concat needs a cache from init_cache (with frame_shape)"
                )
            z_in = torch.cat([z_in, cache.previous_frame()[:, None].to(z_in.dtype)], dim=2)
        cond, mode = c + act[:, None], "write" if write else "read"
        if chunk is None or chunk >= b:
            out = self._run(z_in, cond, None, cache, mode, readout)
        else:
            parts = [slice(i, min(i + chunk, b)) for i in range(0, b, chunk)]
            outs = _map_parts(
                lambda p: self._run(z_in[p], cond[p], None, cache.view(p), mode, readout),
                parts,
                parallel=z_new.device.type == "cpu",
            )
            if readout:
                events = {k: torch.cat([o[1][k] for o in outs]) for k in outs[0][1]}
                out = (torch.cat([o[0] for o in outs]), events)
            else:
                out = torch.cat(outs)
        if write:
            cache.commit()
            if self.cfg.frame_concat:
                cache.set_last(z_new)
        if readout:
            v, events = out
            return v[:, 0], {k: x[:, 0] for k, x in events.items()}
        return out[:, 0]


_POOL: dict[int, ThreadPoolExecutor] = {}


def _map_parts(fn, parts: list[slice], parallel: bool) -> list:
    """``fn`` over batch parts. On a CPU with several threads the parts run side by side, one
    thread each (disjoint worlds and cache slices, the caller's grad mode), which keeps every
    core busy where small per-chunk ops would spend their time handing work between threads."""
    threads = torch.get_num_threads()
    if not parallel or threads < 2 or len(parts) < 2:
        return [fn(p) for p in parts]
    pool = _POOL.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="worldsim"))
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(part: slice):
        # Each worker sets its own intra-op threads to one: without it, once the pool had run,
        # the caller's later small ops (a one-world Simulator step) ran several times slower.
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(part)

    torch.set_num_threads(1)
    try:
        return list(pool.map(run, parts))
    finally:
        torch.set_num_threads(threads)


def build_dynamics(preset: str = "tiny", **overrides) -> DynamicsModel:
    """Shorthand: ``DynamicsModel(config_from_preset(preset, **overrides))``."""
    return DynamicsModel(config_from_preset(preset, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "DynamicsConfig",
    "DynamicsModel",
    "DiTBlock",
    "PRESETS",
    "config_from_preset",
    "build_dynamics",
    "count_parameters",
]
