"""Held-out evaluation of a trained world model: rollout PSNR/SSIM over horizons, Genie's
delta-t-PSNR, the copy-last-frame baseline, and the reward/termination heads.

Protocol (teacher-forced actions, autoregressive frames): from a held-out episode take a window
of ``context + H`` frames; give the model the first ``context`` real latents and their actions,
then let it generate ``H`` frames, each from its own previous outputs and the episode's next
action. Frames are decoded and compared with the real pixels (resized to the autoencoder's
frame size). The same windows are also rolled out with uniformly random actions, and scored by
repeating the last context frame (copy-last). delta-t-PSNR at t (Genie) is PSNR with the
inferred actions minus PSNR with random actions, t frames after the context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from worldsim import flow
from worldsim.actions import model_input
from worldsim.data import frames_to_tensor
from worldsim.metrics import psnr, ssim

HORIZONS = (1, 2, 4, 8, 16)


def sample_windows(lengths: Sequence[int], episodes: Sequence[int], window: int, count: int,
                   seed: int) -> list[tuple[int, int]]:
    """``count`` (episode, start) pairs drawn uniformly among windows of the given episodes."""
    valid = [(e, lengths[e] - window + 1) for e in episodes if lengths[e] >= window]
    if not valid:
        raise ValueError(f"no held-out episode has {window} frames (longest: "
                         f"{max((lengths[e] for e in episodes), default=0)})")
    total = np.array([n for _, n in valid])
    rng = np.random.default_rng(seed)
    picks = rng.choice(total.sum(), size=count, replace=total.sum() < count)
    cum = np.cumsum(total)
    out = []
    for p in picks:
        k = int(np.searchsorted(cum, p, side="right"))
        out.append((valid[k][0], int(p - (cum[k - 1] if k else 0))))
    return out


def _real_frames(store, latent_store, episode: int, start: int, stop: int, size: tuple[int, int]) -> torch.Tensor:
    x = frames_to_tensor(store.read_frames(episode, start, stop))  # t c H W in [-1, 1]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="area")
    return x


@torch.no_grad()
def rollout_metrics(autoencoder, dynamics, latent_store, store, episodes: Sequence[int], *,
                    action_source: str = "latent", label: str = "lam", horizons: Sequence[int] = HORIZONS,
                    context: int = 2, num_windows: int = 128, steps: int = 4, num_codes: int | None = None,
                    seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Rollout figures on held-out ``episodes`` (indices into both stores, which align).

    Returns ``rollout_psnr`` / ``rollout_ssim`` (horizon -> value, with the inferred actions),
    ``random_psnr``, ``copy_last_psnr`` (the last real context frame repeated),
    ``copy_last_decoded_psnr`` (the same frame as the autoencoder decodes it: what a model that
    predicts "nothing moves" perfectly in latent space scores), and ``delta_psnr_<t>`` for each
    horizon t.
    """
    H = max(horizons)
    window = context + H
    lengths = [latent_store.episode_length(i) for i in range(len(latent_store))]
    picks = sample_windows(lengths, episodes, window, num_windows, seed)
    size = (autoencoder.cfg.frame_height, autoencoder.cfg.frame_width)
    z, lam, real, px = [], [], [], []
    for e, s in picks:
        z.append(torch.from_numpy(latent_store.read_latents(e, s, s + window).astype(np.float32)))
        if action_source in ("latent", "both"):
            lam.append(torch.from_numpy(latent_store.read_labels(label, e, s, s + window - 1)))
        if action_source in ("real", "both"):
            real.append(torch.from_numpy(latent_store.read_steps(e, s, s + window - 1)["actions"]))
        px.append(_real_frames(store, latent_store, e, s, s + window, size))
    z = latent_store.normalize(torch.stack(z)).to(device)  # b t c h w
    px = torch.stack(px).to(device)
    lam = torch.stack(lam).long().to(device) if lam else None
    real = torch.stack(real).to(device) if real else None
    acts = model_input(action_source, lam, real)
    mean = latent_store.mean.to(device).view(1, 1, -1, 1, 1)
    std = latent_store.std.to(device).view(1, 1, -1, 1, 1)

    def cut(a, sl):
        return tuple(x[:, sl] for x in a) if isinstance(a, tuple) else a[:, sl]

    def run(a) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed)
        gen = flow.rollout(dynamics, z[:, :context], cut(a, slice(0, context - 1)), cut(a, slice(context - 1, None)),
                           steps=steps, generator=g)
        return autoencoder.decode(gen * std + mean).clamp(-1, 1)  # b H c h w

    def random_like(a):
        if isinstance(a, tuple):
            return tuple(random_like(x) for x in a)
        if a.dtype.is_floating_point:
            return torch.randn_like(a)
        n = num_codes or int(a.max().item()) + 1
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        r = torch.randint(0, n, a.shape, generator=g).to(a.device)
        r[:, : context - 1] = a[:, : context - 1]  # the context keeps its own actions
        return r

    target = (px[:, context:] + 1) / 2
    copy_last = ((px[:, context - 1 : context] + 1) / 2).expand_as(target)
    # the same baseline through the codec: the last context frame as the autoencoder draws it
    decoded_last = autoencoder.decode(z[:, context - 1 : context] * std + mean).clamp(-1, 1)
    copy_decoded = ((decoded_last + 1) / 2).expand_as(target)
    model = (run(acts) + 1) / 2
    rand = (run(random_like(acts)) + 1) / 2

    def at(x: torch.Tensor, fn) -> dict[str, float]:
        return {str(h): float(fn(x[:, h - 1], target[:, h - 1]).clamp(max=60).mean()) for h in horizons}

    out = {
        "rollout_psnr": at(model, psnr),
        "rollout_ssim": at(model, ssim),
        "random_psnr": at(rand, psnr),
        "copy_last_psnr": at(copy_last, psnr),
        "copy_last_decoded_psnr": at(copy_decoded, psnr),
        "windows": len(picks),
        "context": context,
        "sampler_steps": steps,
    }
    for h in horizons:
        out[f"delta_psnr_{h}"] = out["rollout_psnr"][str(h)] - out["random_psnr"][str(h)]
    return out


@torch.no_grad()
def heads_metrics(heads, latent_store, episodes: Sequence[int], *, action_source: str = "latent", label: str = "lam",
                  device: str | torch.device = "cpu") -> dict:
    """Reward sign accuracy, reward MAE and termination accuracy over every held-out transition."""
    correct_sign = correct_term = total = 0
    abs_err = 0.0
    for e in episodes:
        z = latent_store.normalize(torch.from_numpy(latent_store.read_latents(e).astype(np.float32))).to(device)
        steps = latent_store.read_steps(e)
        if "rewards" not in steps:
            return {}
        a = (latent_store.read_labels(label, e) if action_source != "real" else steps["actions"])
        pred = heads.predict(z[:-1], z[1:], torch.as_tensor(a).to(device))
        r = torch.as_tensor(steps["rewards"]).float().to(device)
        term = torch.as_tensor(steps["terminated"]).to(device) if "terminated" in steps else torch.zeros_like(r).bool()
        correct_sign += int((torch.sign(pred["reward"].round()) == torch.sign(r)).sum())
        correct_term += int(((pred["termination_prob"] > 0.5) == term.bool()).sum())
        abs_err += float((pred["reward"] - r).abs().sum())
        total += r.numel()
    if total == 0:
        return {}
    return {"reward_sign_accuracy": correct_sign / total, "reward_mae": abs_err / total,
            "termination_accuracy": correct_term / total}
