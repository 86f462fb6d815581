"""Stage 1: the frame autoencoder, trained on single frames (or short clips with temporal
compression), reported by reconstruction PSNR/SSIM on held-out episodes."""

from __future__ import annotations

import numpy as np
import torch

from worldsim.data import frames_to_tensor, tensor_to_frames
from worldsim.metrics import psnr, ssim
from worldsim.training.base import StageModule
from worldsim.video import grid


class AutoencoderModule(StageModule):
    """``batch["frames"]``: uint8 [b, t, h, w, 3]."""

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.net.loss(frames_to_tensor(batch["frames"]))

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames_to_tensor(frames)  # b t c h w in [-1, 1]
        return self.net.decode(self.net.encode(x)).clamp(-1, 1)

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        x = frames_to_tensor(batch["frames"])
        x_hat = self.reconstruct(batch["frames"])
        x, x_hat = (x + 1) / 2, (x_hat + 1) / 2
        return {"recon_psnr": psnr(x_hat, x).clamp(max=60).mean(), "recon_ssim": ssim(x_hat, x).mean()}

    @torch.no_grad()
    def make_samples(self, batch: dict) -> dict[str, np.ndarray]:
        """A grid: held-out frames on the top row, their reconstructions below."""
        frames = batch["frames"][:8].to(self.device)
        recon = tensor_to_frames(self.reconstruct(frames))  # b t h w c
        real = frames.cpu().numpy()
        b, t = real.shape[:2]
        rows = np.concatenate([real.reshape(b * t, *real.shape[2:]), recon.reshape(b * t, *recon.shape[2:])])
        image = grid(list(rows[:, None]), ncols=b * t)  # [1, H, W, 3]: real above, recon below
        return {"recon": image}
