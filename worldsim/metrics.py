"""Metrics computed locally, with nothing downloaded: PSNR, SSIM, codebook use, NMI.

Image metrics take float tensors in [0, 1] (or uint8, converted) shaped ``[..., C, H, W]`` and
return one value per leading element, so a batch of clips ``[b, t, c, h, w]`` gives ``[b, t]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1]/[0, 1] -> float32 [0, 1]. Floats are assumed in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float()


def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over the last three dims ``(c h w)``.

    Identical images give +inf; callers that average should clamp (see ``mean_psnr``).
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    pred, target = to_unit(pred), to_unit(target)
    mse = (pred - target).pow(2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(max_val**2 / mse)


def mean_psnr(pred: torch.Tensor, target: torch.Tensor, cap: float = 60.0) -> float:
    """Mean PSNR in dB with each image's value capped (a perfect frame counts as ``cap``)."""
    return float(psnr(pred, target).clamp(max=cap).mean())


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    max_val: float = 1.0,
    window: int = 7,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, mean over ``(c h w)``.

    The window shrinks to the image size for small frames; constants K1=0.01, K2=0.03.
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ, pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    pred, target = to_unit(pred), to_unit(target)
    lead = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    x = pred.reshape(-1, c, h, w)
    y = target.reshape(-1, c, h, w)
    size = min(window, h, w)
    kernel = _gaussian_window(size, sigma, x.device, x.dtype).expand(c, 1, size, size)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=c)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1).reshape(lead)


def codebook_usage(codes: torch.Tensor | np.ndarray, num_codes: int) -> dict[str, float]:
    """Perplexity of the code histogram and the number of codes used at least once."""
    codes = torch.as_tensor(np.asarray(codes)).flatten().long()
    if codes.numel() == 0:
        return {"perplexity": 0.0, "codes_used": 0}
    counts = torch.bincount(codes, minlength=num_codes).double()
    p = counts / counts.sum()
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())
    return {"perplexity": math.exp(entropy), "codes_used": int((counts > 0).sum())}


def normalized_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """NMI between two discrete labelings, normalised by the arithmetic mean of the entropies.

    This is the same normalisation as scikit-learn's default (``average_method='arithmetic'``).
    Two constant labelings give 1.0; one constant and one not gives 0.0.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"NMI: label arrays differ in length, {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        raise ValueError("NMI: empty label arrays")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.float64)
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    ha, hb = entropy(pa), entropy(pb)
    if ha == 0.0 and hb == 0.0:
        return 1.0
    if ha == 0.0 or hb == 0.0:
        return 0.0
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pa[:, None] * pb[None, :])[nz])).sum())
    return max(0.0, mi / ((ha + hb) / 2))
