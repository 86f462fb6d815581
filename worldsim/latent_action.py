"""Latent action model (LAM): discover a game's actions from video alone (Genie, Bruce et al. 2024).

For every transition ``x_t -> x_{t+1}`` of a clip, an *encoder* sees the past frames
``x_{t-K+1..t}`` (``K = context``) and the next frame ``x_{t+1}`` and emits a small continuous
vector, which a vector quantiser snaps to one of ``num_codes`` codes (8 by default). A *decoder*
then predicts ``x_{t+1}`` from the past frames and that code only. The code is the decoder's
one window onto the future, and it holds at most ``log2(num_codes)`` bits, so training pushes
it to carry what the past cannot predict: the player's action.

Architecture (convolutional, so it trains on CPU in minutes):

1. The input is a generic ``[b, t, c, h, w]`` tensor: normalised latents of the frame
   autoencoder by default (``input="latent"``), or pixels in ``[-1, 1]`` (``input="pixel"``).
   The switch changes only the stems: latents enter at their own resolution, pixels go
   through ``log2(pixel_downsample)`` stride-2 convolutions (and the decoder's head mirrors
   that with up-sampling stages).
2. The encoder stacks the ``K`` past frames, the next frame and the difference
   ``x_{t+1} - x_t`` along channels (the difference makes motion a first-order feature),
   runs residual blocks, halves the grid down to 4x4, and pools mean and max over space
   (max pooling keeps the signal of a small moving sprite) into ``action_dim`` numbers.
3. The decoder sees only the ``K`` past frames; every residual block is FiLM-modulated by the
   quantised action vector. It predicts the residual ``x_{t+1} - x_t`` (``predict_residual``),
   which is zero wherever nothing moves, so the loss focuses on what changed. With
   ``decoder_levels > 0`` it is a small U-Net, so every cell sees the whole frame.
4. Padding: the first transitions of a clip lack ``K`` past frames; the first frame is repeated.
5. The decoder cannot cheat: it never receives ``x_{t+1}``; the code reaches it through the
   straight-through estimator only (``tests/test_latent_action.py`` checks both).

Einops legend: b batch, t time, k context frames, c channels, h w input grid, g feature grid,
n transitions flattened with the batch, a action_dim, d width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldsim.data.clips import resize_frames
from worldsim.data.episode import frames_to_tensor
from worldsim.metrics import codebook_usage
from worldsim.nn.conv import Downsample2d, ResBlock2d, Upsample2d, group_norm
from worldsim.nn.quantizer import UPDATES, VectorQuantizer
from worldsim.presets import from_preset, replace_fields

INPUTS = ("latent", "pixel")
WEIGHTINGS = ("none", "change")


@dataclass
class LatentActionConfig:
    """Every hyper-parameter of the latent action model; the one home of their defaults."""

    input: str = "latent"  # "latent" (autoencoder latents) or "pixel" (frames in [-1, 1])
    in_channels: int = 8
    frame_height: int = 16
    frame_width: int = 16
    pixel_downsample: int = 4  # pixel input only: stem stride, a power of 2
    context: int = 2  # K past frames seen by encoder and decoder
    num_codes: int = 8  # |A|
    action_dim: int = 16  # width of the continuous action bottleneck
    width: int = 64  # channels of the feature grid
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    # Halvings of the decoder's grid (a U-Net: down, then up with skips, FiLM at every scale), so
    # every predicted cell sees the whole frame, e.g. whether the camera is held at a level edge.
    decoder_levels: int = 0
    predict_residual: bool = True  # decoder predicts x_{t+1} - x_t
    beta: float = 0.25  # commitment weight
    cosine_codes: bool = True
    quantizer_update: str = "ema"  # "ema" or "loss"
    ema_decay: float = 0.99
    dead_code_steps: int = 50  # reset codes unused for this many training steps (0: never)
    warmup_steps: int = 200  # continuous bottleneck for this many training steps, then k-means
    # Reconstruction weighting: "none" (plain MSE) or "change" (each transition's error divided
    # by how much its frame changed, so a small change such as a sprite's pose counts as much as
    # a whole-screen scroll; see ``LatentActionModel.loss``).
    recon_weighting: str = "none"
    change_floor: float = 0.1  # "change": floor of the divisor, as a fraction of the batch mean

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(
                f"LatentActionConfig.input must be one of {INPUTS}, got {self.input!r}"
            )
        if self.recon_weighting not in WEIGHTINGS:
            raise ValueError(
                f"LatentActionConfig.recon_weighting must be one of {WEIGHTINGS}, "
                f"got {self.recon_weighting!r}"
            )
        if self.quantizer_update not in UPDATES:
            raise ValueError(
                f"LatentActionConfig.quantizer_update must be one of {UPDATES}, "
                f"got {self.quantizer_update!r}"
            )
        if self.num_codes < 2:
            raise ValueError(f"LatentActionConfig.num_codes must be >= 2, got {self.num_codes}")
        for name in (
            "in_channels",
            "context",
            "action_dim",
            "width",
            "encoder_blocks",
            "decoder_blocks",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"LatentActionConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.decoder_levels < 0 or min(self.grid) % 2**self.decoder_levels:
            raise ValueError(
                f"LatentActionConfig.decoder_levels={self.decoder_levels}: the feature grid "
                f"{self.grid} must be divisible by 2**decoder_levels"
            )
        if self.warmup_steps < 0:
            raise ValueError(
                f"LatentActionConfig.warmup_steps must be >= 0, got {self.warmup_steps}"
            )
        down = self.stem_downsample
        if down < 1 or down & (down - 1):
            raise ValueError(
                f"LatentActionConfig.pixel_downsample must be a power of 2, got {self.pixel_downsample}"
            )
        for name in ("frame_height", "frame_width"):
            size = getattr(self, name)
            if size < 1 or size % down:
                raise ValueError(
                    f"LatentActionConfig.{name}={size} must be a positive multiple of the stem "
                    f"downsampling {down} (pixel_downsample for input='pixel', 1 for 'latent')"
                )

    @property
    def stem_downsample(self) -> int:
        """Spatial reduction of the stem: ``pixel_downsample`` for pixels, 1 for latents."""
        return self.pixel_downsample if self.input == "pixel" else 1

    @property
    def grid(self) -> tuple[int, int]:
        """The feature grid ``(g_h, g_w)`` the encoder and decoder trunks work on."""
        return self.frame_height // self.stem_downsample, self.frame_width // self.stem_downsample

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (``config_from_dict`` rebuilds it)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, LatentActionConfig] = {
    # Seconds on CPU: unit tests.
    "tiny": LatentActionConfig(
        in_channels=4,
        frame_height=8,
        frame_width=8,
        context=1,
        action_dim=8,
        width=16,
        encoder_blocks=1,
        decoder_blocks=1,
        dead_code_steps=20,
        warmup_steps=50,
    ),
    # The CPU demo on the quickstart autoencoder's latents (8 x 16 x 16), minutes on 2 cores:
    # single transitions and a narrow trunk, so 2 CPU threads take ~25 steps a second (a
    # 4 px move is a one-cell shift of the grid: two 3x3 blocks see it). 16 codes, a longer
    # continuous warm-up and the change-weighted loss: on Scroller a move shows as a scroll, a
    # sprite moving at a level edge, or only a pose change against a wall; with 8 codes and
    # plain MSE the last kind shared NOOP's code (docs/latent_actions.md has the comparison).
    "quickstart": LatentActionConfig(
        context=1,
        width=32,
        action_dim=8,
        decoder_blocks=2,
        num_codes=16,
        warmup_steps=1000,
        recon_weighting="change",
        change_floor=1.0,
    ),
    # The same on 64x64 pixels, for data without a latent cache.
    "quickstart_pixel": LatentActionConfig(
        input="pixel", in_channels=3, frame_height=64, frame_width=64, pixel_downsample=4
    ),
    # GPU sizes.
    "base": LatentActionConfig(
        width=128, action_dim=32, context=4, encoder_blocks=3, decoder_blocks=4
    ),
    "large": LatentActionConfig(
        in_channels=16, width=256, action_dim=32, context=4, encoder_blocks=4, decoder_blocks=6
    ),
}


def config_from_dict(
    values: dict[str, Any], base: LatentActionConfig | None = None
) -> LatentActionConfig:
    """Build a config from ``base`` (default: the dataclass defaults) and field overrides."""
    return replace_fields(base or LatentActionConfig(), values, "latent action config")


def config_from_preset(name: str, **overrides: Any) -> LatentActionConfig:
    """The preset ``name`` with fields overridden, e.g. ``config_from_preset('tiny', num_codes=4)``."""
    return from_preset(PRESETS, name, "latent action", "latent action config", **overrides)


def transition_windows(x: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip ``[b, t, c, h, w]`` -> past ``[b, t-1, k, c, h, w]`` and next ``[b, t-1, c, h, w]``.

    Transition ``j`` goes from frame ``j`` to ``j + 1``; its past is frames ``j-k+1 .. j``,
    with indices below 0 replaced by frame 0 (the first frame repeated).
    """
    t = x.shape[1]
    steps = torch.arange(t - 1, device=x.device)[:, None]
    offsets = torch.arange(-context + 1, 1, device=x.device)[None, :]
    idx = (steps + offsets).clamp_min(0)  # [t-1, k]
    return x[:, idx], x[:, 1:]


def _stem(in_channels: int, width: int, down: int) -> nn.Sequential:
    """Frames ``[n, in, h, w]`` -> ``[n, width, h/down, w/down]``: a conv, then stride-2 stages."""
    stages = int(math.log2(down))
    chans = [max(width // 2 ** (stages - i), 8) for i in range(stages + 1)]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1)]
    for i in range(stages):
        layers += [nn.SiLU(), Downsample2d(chans[i], chans[i + 1])]
    return nn.Sequential(*layers)


class FiLMResBlock(nn.Module):
    """Residual block whose middle activation is scaled and shifted by a conditioning vector.

    Shapes: ``x [n, d, g_h, g_w]``, ``cond [n, a]`` -> ``[n, d, g_h, g_w]``. The last
    convolution starts at zero, so a fresh block is the identity.
    """

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = group_norm(width)
        self.film = nn.Sequential(
            nn.Linear(cond_dim, width), nn.SiLU(), nn.Linear(width, 2 * width)
        )
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # [n, d, 1, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class ActionEncoder(nn.Module):
    """(past ``[n, k, c, h, w]``, next ``[n, c, h, w]``) -> continuous action ``[n, a]``."""

    def __init__(self, cfg: LatentActionConfig) -> None:
        super().__init__()
        c, d = cfg.in_channels, cfg.width
        self.stem = _stem(c * (cfg.context + 2), d, cfg.stem_downsample)
        blocks: list[nn.Module] = [ResBlock2d(d) for _ in range(cfg.encoder_blocks)]
        size = min(cfg.grid)
        while size > 4 and size % 2 == 0:
            blocks += [Downsample2d(d), ResBlock2d(d)]
            size //= 2
        self.trunk = nn.Sequential(*blocks)
        self.norm = group_norm(d)
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, cfg.action_dim))

    def forward(self, past: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        diff = nxt - past[:, -1]
        x = torch.cat([rearrange(past, "n k c h w -> n (k c) h w"), nxt, diff], dim=1)
        h = F.silu(self.norm(self.trunk(self.stem(x))))  # [n, d, g, g]
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # [n, 2d]
        return self.head(pooled)


class ActionDecoder(nn.Module):
    """(past ``[n, k, c, h, w]``, action vector ``[n, a]``) -> next frame ``[n, c, h, w]``.

    ``decoder_blocks`` FiLM blocks at the feature grid, then ``decoder_levels`` U-Net levels:
    halve the grid with a FiLM block at each smaller scale, come back up adding the skips.
    """

    def __init__(self, cfg: LatentActionConfig) -> None:
        super().__init__()
        c, d = cfg.in_channels, cfg.width
        self.predict_residual = cfg.predict_residual
        self.stem = _stem(c * cfg.context, d, cfg.stem_downsample)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.blocks = nn.ModuleList(
            FiLMResBlock(d, cfg.action_dim) for _ in range(cfg.decoder_blocks)
        )
        levels = cfg.decoder_levels
        self.down = nn.ModuleList(Downsample2d(d) for _ in range(levels))
        self.down_blocks = nn.ModuleList(FiLMResBlock(d, cfg.action_dim) for _ in range(levels))
        self.up = nn.ModuleList(Upsample2d(d) for _ in range(levels))
        self.up_blocks = nn.ModuleList(FiLMResBlock(d, cfg.action_dim) for _ in range(levels))
        head: list[nn.Module] = []
        chans = d
        for _ in range(int(math.log2(cfg.stem_downsample))):
            head += [group_norm(chans), nn.SiLU(), Upsample2d(chans, max(chans // 2, 8))]
            chans = max(chans // 2, 8)
        self.head = nn.Sequential(
            *head, group_norm(chans), nn.SiLU(), nn.Conv2d(chans, c, 3, padding=1)
        )

    def forward(self, past: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = self.stem(rearrange(past, "n k c h w -> n (k c) h w"))
        h = h + self.action_in(action)[:, :, None, None]  # the action broadcast over the grid
        for block in self.blocks:
            h = block(h, action)
        skips = []
        for down, block in zip(self.down, self.down_blocks):
            skips.append(h)
            h = block(down(h), action)  # [n, d, g/2, g/2], ...
        for up, block in zip(self.up, self.up_blocks):
            h = block(up(h) + skips.pop(), action)
        out = self.head(h)
        return past[:, -1] + out if self.predict_residual else out


class LatentActionModel(nn.Module):
    """Genie's latent action model: encoder, vector quantiser, decoder. Lightning-free.

    ``loss(x)`` trains it on clips ``[b, t, c, h, w]``; ``infer_actions(x)`` labels every
    transition; ``decode_with_action(past, code)`` shows what a code does.
    """

    def __init__(self, cfg: LatentActionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ActionEncoder(cfg)
        self.quantizer = VectorQuantizer(
            cfg.num_codes,
            cfg.action_dim,
            beta=cfg.beta,
            cosine=cfg.cosine_codes,
            update=cfg.quantizer_update,
            decay=cfg.ema_decay,
            dead_code_steps=cfg.dead_code_steps,
        )
        self.decoder = ActionDecoder(cfg)
        # Training steps taken (forward passes in training mode): drives the warm-up switch.
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    @property
    def warming_up(self) -> bool:
        """True while training runs with the continuous bottleneck (the first ``warmup_steps``)."""
        return int(self.train_steps) < self.cfg.warmup_steps

    def _bottleneck(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Continuous actions ``[n, a]`` -> (decoder input ``[n, a]``, codes ``[n]``, losses).

        In training mode during the warm-up the decoder gets the normalised continuous vector
        (codes are only reported); at the first step after it, the codebook is initialised by
        k-means on the recent encoder outputs, and from then on the vector is quantised.
        """
        if self.training:
            warm = self.warming_up
            self.train_steps.add_(1)
            if warm:
                cont = self.quantizer.passthrough(z)
                zero = z.new_zeros(())
                return (
                    cont,
                    self.quantizer.nearest(z.detach()),
                    {"vq_loss": zero, "commitment": zero, "codebook": zero},
                )
            if self.cfg.warmup_steps and not bool(self.quantizer.initialized):
                self.quantizer.kmeans_init()
        q = self.quantizer(z)
        return (
            q.quantized,
            q.indices,
            {"vq_loss": q.loss, "commitment": q.commitment, "codebook": q.codebook},
        )

    # ------------------------------------------------------------------ checks
    def _check_clip(self, x: torch.Tensor, what: str) -> None:
        cfg = self.cfg
        want = (cfg.in_channels, cfg.frame_height, cfg.frame_width)
        if x.dim() != 5 or tuple(x.shape[2:]) != want or x.shape[1] < 2:
            raise ValueError(
                f"LatentActionModel.{what} expects a clip [b, t>=2, {', '.join(map(str, want))}] "
                f"({cfg.input} input), got {list(x.shape)}"
            )

    # ------------------------------------------------------------------ parts
    def encode(self, past: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """Continuous actions ``[n, a]`` of transitions (past ``[n, k, c, h, w]``, next ``[n, c, h, w]``)."""
        return self.encoder(past, nxt)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run every transition of a clip ``[b, t, c, h, w]``.

        Returns ``pred [b, t-1, c, h, w]`` (predicted next frames), ``codes [b, t-1]``,
        ``actions [b, t-1, a]`` (continuous, before quantisation) and the quantiser's losses.
        """
        self._check_clip(x, "forward")
        b = x.shape[0]
        past, nxt = transition_windows(x, self.cfg.context)
        past = rearrange(past, "b t k c h w -> (b t) k c h w")
        nxt = rearrange(nxt, "b t c h w -> (b t) c h w")
        z = self.encoder(past, nxt)  # [n, a]
        action, codes, losses = self._bottleneck(z)
        pred = self.decoder(past, action)
        return {
            "pred": rearrange(pred, "(b t) c h w -> b t c h w", b=b),
            "target": rearrange(nxt, "(b t) c h w -> b t c h w", b=b),
            "codes": rearrange(codes, "(b t) -> b t", b=b),
            "actions": rearrange(z, "(b t) a -> b t a", b=b),
            **losses,
        }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training objective on a clip ``[b, t, c, h, w]``.

        ``loss`` = reconstruction + quantiser loss, where the reconstruction is the MSE between
        predicted and real next frame (``recon_weighting="none"``) or, with ``"change"``, each
        transition's squared error divided by its own change ``mean((x_{t+1} - x_t)^2)`` plus
        ``change_floor`` times the batch's mean change (weights rescaled to mean 1). Plain MSE
        lets a whole-screen scroll drown a sprite's small change, so a LAM trained on it lumps
        moves pushed into a wall with NOOP. Also returns ``recon`` (always the plain MSE),
        ``commitment``, ``codebook``, this batch's ``perplexity`` and ``codes_used`` (floats
        as 0-dim tensors, for logging) and the detached ``codes [b, t-1]``. In training mode
        the quantiser updates its codes and resets dead ones as a side effect.
        """
        out = self(x)
        recon = F.mse_loss(out["pred"], out["target"])
        objective = recon
        if self.cfg.recon_weighting == "change":
            # Per transition n: err_n / (change_n + floor * mean(change)), the weights (detached)
            # rescaled to mean 1. A still transition is held to predicting no change; a move whose
            # only trace is a sprite's pose weighs as much as one that scrolls the screen.
            past = x[:, :-1]
            err = (out["pred"] - out["target"]).pow(2).flatten(2).mean(2)  # [b, t-1]
            change = (out["target"] - past).pow(2).flatten(2).mean(2).detach()
            weight = 1.0 / (change + self.cfg.change_floor * change.mean() + 1e-8)
            objective = (err * weight / weight.mean()).mean()
        codes = out["codes"].detach()
        usage = codebook_usage(codes.cpu(), self.cfg.num_codes)
        return {
            "loss": objective + out["vq_loss"],
            "recon": recon.detach(),
            "commitment": out["commitment"].detach(),
            "codebook": out["codebook"].detach(),
            "perplexity": torch.tensor(usage["perplexity"]),
            "codes_used": torch.tensor(float(usage["codes_used"])),
            "codes": codes,
        }

    @torch.no_grad()
    def infer_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[b, t-1]`` (int64) of every transition of a clip ``[b, t, c, h, w]``.

        Pure inference: no quantiser statistics change, whatever the module's mode.
        """
        self._check_clip(x, "infer_actions")
        past, nxt = transition_windows(x, self.cfg.context)
        b = x.shape[0]
        z = self.encoder(
            rearrange(past, "b t k c h w -> (b t) k c h w"),
            rearrange(nxt, "b t c h w -> (b t) c h w"),
        )
        return rearrange(self.quantizer.nearest(z), "(b t) -> b t", b=b)

    def decode_with_action(self, past: torch.Tensor, code: torch.Tensor | int) -> torch.Tensor:
        """Predict the next frame ``[b, c, h, w]`` from past frames and a latent action.

        ``past`` is ``[b, t, c, h, w]`` (the last ``context`` frames are used; a shorter past is
        padded by repeating its first frame) or one frame ``[b, c, h, w]``; ``code`` is an int
        or a LongTensor ``[b]`` of codes in ``[0, num_codes)``.
        """
        cfg = self.cfg
        if past.dim() == 4:
            past = past[:, None]
        want = (cfg.in_channels, cfg.frame_height, cfg.frame_width)
        if past.dim() != 5 or tuple(past.shape[2:]) != want:
            raise ValueError(
                f"decode_with_action expects past [b, t, {', '.join(map(str, want))}] or "
                f"[b, {', '.join(map(str, want))}], got {list(past.shape)}"
            )
        k = cfg.context
        if past.shape[1] < k:
            pad = past[:, :1].expand(-1, k - past.shape[1], -1, -1, -1)
            past = torch.cat([pad, past], dim=1)
        past = past[:, -k:]
        code = torch.as_tensor(code, device=past.device)
        code = code.expand(past.shape[0]) if code.dim() == 0 else code
        if code.shape != (past.shape[0],):
            raise ValueError(
                f"decode_with_action: code must be an int or [{past.shape[0]}], got {list(code.shape)}"
            )
        return self.decoder(past, self.quantizer.lookup(code))

    def codebook_usage(self) -> dict[str, float]:
        """Quantiser usage over recent training steps: perplexity, codes_used, dead, resets."""
        return self.quantizer.usage()


# ---------------------------------------------------------------------- labelling a dataset
def _episodes(source: Any, cfg: LatentActionConfig) -> Iterator[torch.Tensor]:
    """Yield each episode of ``source`` as a float tensor ``[t, c, h, w]`` the model accepts.

    ``source`` is a ``LatentStore`` (latents, normalised with the cache's statistics), an
    ``EpisodeStore`` (uint8 frames, converted to ``[-1, 1]`` and resized to the model's frame
    size), or an iterable of ``[t, c, h, w]`` float tensors/arrays or ``[t, h, w, 3]`` uint8 frames.
    """
    if hasattr(source, "read_latents") and hasattr(source, "normalize"):
        for i in range(len(source)):
            yield source.normalize(torch.from_numpy(source.read_latents(i)).float())
        return
    if hasattr(source, "read_frames"):
        source = (source.read_frames(i) for i in range(len(source)))
    for x in source:
        x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if x.dtype == torch.uint8:
            frames = (
                resize_frames(x, (cfg.frame_height, cfg.frame_width)) if x.shape[-1] == 3 else x
            )
            x = frames_to_tensor(frames)
        yield x.float()


@torch.no_grad()
def label_transitions(
    model: LatentActionModel, source: Any, *, batch_size: int = 256
) -> list[np.ndarray]:
    """Latent action of every transition of every episode: a list of int64 arrays ``[t - 1]``.

    ``source``: see ``_episodes`` (a ``LatentStore``, an ``EpisodeStore`` or an iterable of
    episodes). Runs batched and without gradients on the model's device; the first
    transitions of an episode see its first frame repeated as their missing past.
    """
    cfg = model.cfg
    device = next(model.parameters()).device
    want = (cfg.in_channels, cfg.frame_height, cfg.frame_width)
    labels = []
    for i, x in enumerate(_episodes(source, cfg)):
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"label_transitions: episode {i} has shape {list(x.shape)}, the model expects "
                f"[t, {', '.join(map(str, want))}] ({cfg.input} input)"
            )
        x = x.to(device)
        t = x.shape[0]
        steps = torch.arange(t - 1, device=device)[:, None]
        idx = (steps + torch.arange(-cfg.context + 1, 1, device=device)[None]).clamp_min(
            0
        )  # [t-1, k]
        codes = []
        for s in range(0, t - 1, batch_size):
            e = min(s + batch_size, t - 1)
            z = model.encoder(x[idx[s:e]], x[s + 1 : e + 1])
            codes.append(model.quantizer.nearest(z).cpu())
        labels.append(torch.cat(codes).numpy().astype(np.int64) if codes else np.zeros(0, np.int64))
    return labels


def label_store(
    model: LatentActionModel, latent_store: Any, name: str = "lam", *, batch_size: int = 256
) -> list[np.ndarray]:
    """Label every transition of a ``LatentStore`` and save them as its label set ``name``.

    Read them back with ``latent_store.read_labels(name, i, start, stop)``. Returns the labels.
    """
    labels = label_transitions(model, latent_store, batch_size=batch_size)
    latent_store.write_labels(name, labels)
    return labels
