"""Stage 2: the latent action model, trained on latent clips (default) or pixel clips, with no
action labels. Codebook use is logged every step; the dead-code reset lives in the model."""

from __future__ import annotations

import torch

from worldsim.data import frames_to_tensor
from worldsim.metrics import codebook_usage, normalized_mutual_information
from worldsim.training.base import StageModule


class LatentActionModule(StageModule):
    """``batch["latents"]`` float [b, t, c, h, w] (latent input) or ``batch["frames"]`` uint8
    [b, t, h, w, 3] (pixel input)."""

    @staticmethod
    def clip(batch: dict) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"]
        return frames_to_tensor(batch["frames"])

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.net.loss(self.clip(batch))

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = self.net.infer_actions(self.clip(batch))  # b t-1
        usage = codebook_usage(codes.cpu(), self.net.cfg.num_codes)
        out = {"perplexity": torch.tensor(usage["perplexity"]), "codes_used": torch.tensor(float(usage["codes_used"]))}
        if "actions" in batch and batch["actions"].dim() == 2:
            out["nmi"] = torch.tensor(normalized_mutual_information(codes.cpu().numpy(), batch["actions"].cpu().numpy()))
        return out
