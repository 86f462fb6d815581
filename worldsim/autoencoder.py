"""Frame autoencoder: game frames <-> compact latent grids that the world model works in.

A convolutional encoder maps each frame ``[3, H, W]`` in ``[-1, 1]`` to a latent grid
``[c, H/f, W/f]`` (``f`` = spatial compression 4, 8 or 16: 2, 3 or 4 stride-2 stages, one fewer
with the 2x2 pixel-unshuffle stem, ``patch_size=2``) and a mirrored decoder maps it back. Optionally, a causal temporal stage merges every ``k`` frames
(``k`` = 2 or 4) into one latent frame; it is off by default because interactive play wants one
latent per frame.

Why a VAE with a tiny KL weight (the default, ``variational=True``, ``kl_weight=1e-6``) rather
than a plain autoencoder: the plain AE reconstructs slightly faster early on (about 1-2 dB
ahead after 120 steps on a fixed tiny batch), but the VAE's posterior noise keeps the latent
space smooth (nearby latents decode to nearby frames) and the KL term keeps its scale bounded.
That is what the diffusion dynamics needs, since its samples are never exactly on the
encoder's manifold, and the quickstart VAE still passes 30 dB on held-out episodes of the
default game well within 3 minutes on 2 CPU cores (docs/autoencoder.md). The posterior mean is
used for encoding (``encode(x)`` is deterministic); the latent cache then standardises each
channel with its dataset mean and std. ``variational=False`` gives a plain
autoencoder with a small L2 pull on the latents instead (``latent_l2_weight``).

The reconstruction loss is a mix of L1 (sharp edges on flat-coloured sprites) and MSE (what
PSNR measures); no perceptual term, because every such term needs downloaded weights.

Einops legend: b batch, t time (frames), n frames flattened with the batch, c channels,
h w spatial grid (latent), H W frame size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldsim.metrics import psnr
from worldsim.nn.conv import (
    CausalResBlock3d,
    Downsample2d,
    ResBlock2d,
    TemporalDownsample,
    TemporalUpsample,
    Upsample2d,
    group_norm,
)
from worldsim.presets import from_preset, replace_fields

SPATIAL_COMPRESSIONS = (4, 8, 16)
TEMPORAL_COMPRESSIONS = (1, 2, 4)


@dataclass
class AutoencoderConfig:
    """Every hyper-parameter of the autoencoder; the one home of their defaults."""

    frame_height: int = 64
    frame_width: int = 64
    in_channels: int = 3
    spatial_compression: int = 4  # 4, 8 or 16: 2, 3 or 4 stride-2 stages
    temporal_compression: int = 1  # 1 (off), 2 or 4: causal, frames merged per latent frame
    latent_channels: int = 8  # 4..16
    patch_size: int = 1  # 1 or 2: pixel-unshuffle (space-to-depth) before the first conv
    width: int = 32  # channels of the first stage; stage i has width * min(2**i, max_mult)
    max_mult: int = 4
    num_res_blocks: int = 1  # residual blocks per stage (and in the middle)
    variational: bool = True  # VAE (KL term) or plain AE (L2 pull on the latents)
    kl_weight: float = 1e-6
    latent_l2_weight: float = 1e-4  # used only when variational=False
    l1_weight: float = 1.0
    mse_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.spatial_compression not in SPATIAL_COMPRESSIONS:
            raise ValueError(
                f"AutoencoderConfig.spatial_compression must be one of {SPATIAL_COMPRESSIONS}, "
                f"got {self.spatial_compression}"
            )
        if self.temporal_compression not in TEMPORAL_COMPRESSIONS:
            raise ValueError(
                "AutoencoderConfig.temporal_compression must be one of "
                f"{TEMPORAL_COMPRESSIONS}, got {self.temporal_compression}"
            )
        if not 1 <= self.latent_channels <= 64:
            raise ValueError(
                f"AutoencoderConfig.latent_channels must be in 1..64 (4..16 recommended), "
                f"got {self.latent_channels}"
            )
        for name in ("frame_height", "frame_width"):
            size = getattr(self, name)
            if size <= 0 or size % self.spatial_compression:
                raise ValueError(
                    f"AutoencoderConfig.{name}={size} must be a positive multiple of "
                    f"spatial_compression={self.spatial_compression}"
                )
        if self.patch_size not in (1, 2):
            raise ValueError(f"AutoencoderConfig.patch_size must be 1 or 2, got {self.patch_size}")
        for name in ("in_channels", "width", "max_mult", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"AutoencoderConfig.{name} must be >= 1, got {getattr(self, name)}"
                )

    @property
    def num_stages(self) -> int:
        """Number of stride-2 down-sampling stages (the patch stem does the rest)."""
        return int(math.log2(self.spatial_compression // self.patch_size))

    def stage_channels(self) -> list[int]:
        """Channels at each resolution, full resolution first (``num_stages + 1`` entries)."""
        return [self.width * min(2**i, self.max_mult) for i in range(self.num_stages + 1)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (round-trips through ``config_from_dict``)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, AutoencoderConfig] = {
    # Seconds on CPU: unit tests.
    "tiny": AutoencoderConfig(
        frame_height=32, frame_width=32, latent_channels=4, width=8, max_mult=2
    ),
    # The CPU demo: minutes on 2 cores (docs/autoencoder.md, Results). The pixel-unshuffle stem
    # makes a step much cheaper than a full-resolution first stage would.
    "quickstart": AutoencoderConfig(latent_channels=8, width=32, max_mult=2, patch_size=2),
    # GPU sizes.
    "base": AutoencoderConfig(latent_channels=8, width=64, num_res_blocks=2),
    "large": AutoencoderConfig(
        frame_height=128,
        frame_width=128,
        spatial_compression=8,
        latent_channels=16,
        width=128,
        num_res_blocks=2,
    ),
}


def config_from_dict(
    values: dict[str, Any], base: AutoencoderConfig | None = None
) -> AutoencoderConfig:
    """Build a config from ``base`` (default: the dataclass defaults) and field overrides."""
    return replace_fields(base or AutoencoderConfig(), values, "autoencoder config")


def config_from_preset(name: str, **overrides: Any) -> AutoencoderConfig:
    """The preset ``name`` with fields overridden, e.g. ``config_from_preset('tiny', width=16)``."""
    return from_preset(PRESETS, name, "autoencoder", "autoencoder config", **overrides)


class Encoder(nn.Module):
    """Frames ``[n, 3, H, W]`` -> features ``[n, C, h, w]`` before the latent projection."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        chans = cfg.stage_channels()
        self.patch = nn.PixelUnshuffle(cfg.patch_size) if cfg.patch_size > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(cfg.in_channels * cfg.patch_size**2, chans[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(cfg.num_stages):
            layers += [ResBlock2d(chans[i]) for _ in range(cfg.num_res_blocks)]
            layers.append(Downsample2d(chans[i], chans[i + 1]))
        layers += [ResBlock2d(chans[-1]) for _ in range(cfg.num_res_blocks)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.conv_in(self.patch(x)))


class Decoder(nn.Module):
    """Features ``[n, C, h, w]`` -> frames ``[n, 3, H, W]`` (unbounded; clamp for display)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        chans = cfg.stage_channels()
        layers: list[nn.Module] = [ResBlock2d(chans[-1]) for _ in range(cfg.num_res_blocks)]
        for i in reversed(range(cfg.num_stages)):
            layers.append(Upsample2d(chans[i + 1], chans[i]))
            layers += [ResBlock2d(chans[i]) for _ in range(cfg.num_res_blocks)]
        self.body = nn.Sequential(*layers)
        self.norm_out = group_norm(chans[0])
        self.conv_out = nn.Conv2d(chans[0], cfg.in_channels * cfg.patch_size**2, 3, padding=1)
        self.unpatch = nn.PixelShuffle(cfg.patch_size) if cfg.patch_size > 1 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.unpatch(self.conv_out(F.silu(self.norm_out(self.body(h)))))


class Autoencoder(nn.Module):
    """Frame-wise convolutional (V)AE with optional causal temporal compression.

    Lightning-free: ``loss(x)`` returns a dict whose ``"loss"`` a trainer minimises.

    Shapes:
      ``encode``: ``[b, t, 3, H, W] -> [b, t/k, c, h, w]`` or ``[n, 3, H, W] -> [n, c, h, w]``
      ``decode``: the reverse; ``k`` = ``temporal_compression``, ``h = H / f``, ``w = W / f``.
    """

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        top = cfg.stage_channels()[-1]
        k = cfg.temporal_compression
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if k > 1:
            # Causal mixing over time, then merge each block of k frames (and the reverse).
            self.enc_time = nn.Sequential(CausalResBlock3d(top), TemporalDownsample(top, top, k))
            self.dec_time = nn.Sequential(TemporalUpsample(top, top, k), CausalResBlock3d(top))
        self.enc_norm = group_norm(top)
        moments = 2 * cfg.latent_channels if cfg.variational else cfg.latent_channels
        self.to_latent = nn.Conv2d(top, moments, 1)
        self.from_latent = nn.Conv2d(cfg.latent_channels, top, 3, padding=1)

    # ----------------------------------------------------------------- checks and shapes
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(c, h, w)`` of the latent of a ``height x width`` frame."""
        f = self.cfg.spatial_compression
        if height % f or width % f:
            raise ValueError(
                f"frame size {height}x{width} is not divisible by spatial_compression={f}"
            )
        return (self.cfg.latent_channels, height // f, width // f)

    def check_frames(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming expected and got shapes when ``x`` does not fit the config."""
        cfg = self.cfg
        expected = f"[B, T, {cfg.in_channels}, {cfg.frame_height}, {cfg.frame_width}] or [N, {cfg.in_channels}, {cfg.frame_height}, {cfg.frame_width}]"
        if not torch.is_floating_point(x):
            raise ValueError(
                f"autoencoder expects float frames in [-1, 1], got dtype {x.dtype}; convert "
                "uint8 frames with worldsim.data.frames_to_tensor"
            )
        if x.dim() not in (4, 5) or tuple(x.shape[-3:]) != (
            cfg.in_channels,
            cfg.frame_height,
            cfg.frame_width,
        ):
            raise ValueError(f"autoencoder expects frames {expected}, got {list(x.shape)}")
        k = cfg.temporal_compression
        if k > 1 and (x.dim() != 5 or x.shape[1] % k):
            raise ValueError(
                f"temporal_compression={k} needs clips [B, T, ...] with T divisible by {k}, "
                f"got {list(x.shape)}"
            )

    def check_latents(self, z: torch.Tensor) -> None:
        """Raise ``ValueError`` naming expected and got shapes when ``z`` does not fit."""
        c, h, w = self.latent_shape(self.cfg.frame_height, self.cfg.frame_width)
        if z.dim() not in (4, 5) or tuple(z.shape[-3:]) != (c, h, w):
            raise ValueError(
                f"autoencoder expects latents [B, T, {c}, {h}, {w}] or [N, {c}, {h}, {w}], "
                f"got {list(z.shape)}"
            )
        if self.cfg.temporal_compression > 1 and z.dim() != 5:
            raise ValueError(f"temporal_compression needs latents [B, T, ...], got {list(z.shape)}")

    # ----------------------------------------------------------------- encode / decode
    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and log-variance ``[b, t', c, h, w]`` (log-variance None for an AE)."""
        b, t = x.shape[:2]
        h = self.encoder(rearrange(x, "b t c H W -> (b t) c H W"))
        if self.cfg.temporal_compression > 1:
            h = rearrange(h, "(b t) c h w -> b c t h w", b=b)
            h = self.enc_time(h)
            t = h.shape[2]
            h = rearrange(h, "b c t h w -> (b t) c h w")
        moments = self.to_latent(F.silu(self.enc_norm(h)))
        moments = rearrange(moments, "(b t) c h w -> b t c h w", b=b, t=t)
        if not self.cfg.variational:
            return moments, None
        mean, logvar = moments.chunk(2, dim=2)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Frames in ``[-1, 1]`` -> latents; the posterior mean unless ``sample=True``."""
        self.check_frames(x)
        flat = x.dim() == 4
        mean, logvar = self._moments(x[:, None] if flat else x)
        z = mean
        if sample and logvar is not None:
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return z[:, 0] if flat else z

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents -> frames, clamped to ``[-1, 1]`` unless ``clamp=False``."""
        self.check_latents(z)
        flat = z.dim() == 4
        x = self._decode(z[:, None] if flat else z)
        x = x.clamp(-1.0, 1.0) if clamp else x
        return x[:, 0] if flat else x

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        h = self.from_latent(rearrange(z, "b t c h w -> (b t) c h w"))
        if self.cfg.temporal_compression > 1:
            h = self.dec_time(rearrange(h, "(b t) c h w -> b c t h w", b=b))
            h = rearrange(h, "b c t h w -> (b t) c h w")
        return rearrange(self.decoder(h), "(b t) c H W -> b t c H W", b=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct frames (posterior mean, unclamped): same shape as ``x``."""
        return self.decode(self.encode(x), clamp=False)

    # ----------------------------------------------------------------- objective
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training objective on frames in ``[-1, 1]``.

        Returns ``loss`` (to minimise) and its parts: ``l1``, ``mse`` (on the ``[-1, 1]``
        scale), ``kl`` (per latent element, VAE) or ``latent_l2`` (AE), and ``psnr`` (dB on
        ``[0, 1]`` frames, detached, for logging).
        """
        self.check_frames(x)
        clip = x if x.dim() == 5 else x[:, None]
        mean, logvar = self._moments(clip)
        cfg = self.cfg
        if logvar is not None:
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
            reg = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
            reg_name, reg_weight = "kl", cfg.kl_weight
        else:
            z = mean
            reg = mean.pow(2).mean()
            reg_name, reg_weight = "latent_l2", cfg.latent_l2_weight
        recon = self._decode(z)
        l1 = (recon - clip).abs().mean()
        mse = (recon - clip).pow(2).mean()
        total = cfg.l1_weight * l1 + cfg.mse_weight * mse + reg_weight * reg
        with torch.no_grad():
            db = psnr(((recon + 1) / 2).clamp(0, 1), (clip + 1) / 2).clamp(max=60.0).mean()
        return {"loss": total, "l1": l1, "mse": mse, reg_name: reg, "psnr": db}

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the config and every parameter and buffer.

        Two autoencoders with the same fingerprint produce the same latents, so the latent
        cache records it and refuses to mix latents from different weights.
        """
        digest = hashlib.sha256(repr(sorted(self.cfg.to_dict().items())).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
