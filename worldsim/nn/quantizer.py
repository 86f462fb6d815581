"""Vector quantiser (VQ-VAE) with cosine codes, EMA or loss updates, and dead-code reset.

A continuous vector ``z`` is replaced by its nearest codebook entry ``e_k``; the forward pass
uses ``e_k`` and the backward pass copies the gradient of ``e_k`` to ``z`` (the
straight-through estimator of van den Oord et al. 2017). The encoder is pulled towards its
code by the commitment loss ``beta * ||z - sg(e_k)||^2``.

Implementation details, each chosen for the small codebooks (|A| = 8) of a latent action model:

1. **Cosine codes** (``cosine=True``, Yu et al. 2022, "ViT-VQGAN"): ``z`` and the codebook are
   l2-normalised before the nearest-neighbour search, so every code lives on the unit sphere
   and no code can be starved by having a small norm. The quantised output is also unit-norm.
2. **Codebook updates** either by exponential moving averages of the assigned vectors
   (``update="ema"``, the VQ-VAE-2 recipe: stable, no optimiser involved) or by the codebook
   loss ``||sg(z) - e_k||^2`` (``update="loss"``, the codebook is then a normal parameter).
3. **Dead-code reset**: a code that no vector chose for ``dead_code_steps`` training steps is
   re-initialised from a random one of the recent encoder outputs (a ring buffer of
   ``buffer_size`` vectors), as in Jukebox / Dhariwal et al. 2020. This is what keeps every
   code in use when the encoder starts with all its outputs in one corner of the space.
4. **Warm-up and k-means initialisation** (``passthrough`` then ``kmeans_init``): a latent
   action model whose codes start random collapses, because codes that carry nothing teach
   the decoder to ignore them, and then the encoder gets no gradient through the
   straight-through estimator. Training first with the bottleneck continuous (``passthrough``
   returns the normalised vector and fills the recent buffer) lets the encoder learn to carry
   the change; ``kmeans_init`` then places the codes on the clusters of those outputs
   (k-means++ seeding, Lloyd steps, spherical when ``cosine``) before quantisation starts.
5. **Usage tracking**: ``usage()`` reports the perplexity and the number of codes chosen over
   an exponential moving average of the assignment histogram, and how many resets happened.

Einops legend: n vectors (any leading dims flattened), d code dimension, k codebook entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

UPDATES = ("ema", "loss")


@dataclass
class QuantizerOutput:
    """What ``VectorQuantizer.forward`` returns.

    ``quantized`` has the input's shape and carries the straight-through gradient; ``indices``
    has the input's leading shape; ``loss`` = ``beta * commitment`` (+ ``codebook`` for
    ``update="loss"``); ``perplexity`` is that of this batch's code histogram.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment: torch.Tensor
    codebook: torch.Tensor
    perplexity: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser over ``num_codes`` codes of width ``dim``.

    Args:
        num_codes: codebook size k (>= 2).
        dim: code width d.
        beta: commitment weight.
        cosine: l2-normalise inputs and codes (search by cosine similarity).
        update: ``"ema"`` (moving averages) or ``"loss"`` (codebook loss + optimiser).
        decay: EMA decay of the codebook (``update="ema"``) and of the usage statistics.
        dead_code_steps: reset a code unused for this many training steps (0 disables).
        buffer_size: recent encoder outputs kept to draw replacement codes from.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        beta: float = 0.25,
        cosine: bool = True,
        update: str = "ema",
        decay: float = 0.99,
        dead_code_steps: int = 50,
        buffer_size: int = 1024,
    ) -> None:
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(
                f"VectorQuantizer needs num_codes >= 2 and dim >= 1, got {num_codes}, {dim}"
            )
        if update not in UPDATES:
            raise ValueError(f"VectorQuantizer update must be one of {UPDATES}, got {update!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"VectorQuantizer decay must be in (0, 1), got {decay}")
        if dead_code_steps < 0 or buffer_size < 1:
            raise ValueError(
                f"VectorQuantizer needs dead_code_steps >= 0 and buffer_size >= 1, "
                f"got {dead_code_steps}, {buffer_size}"
            )
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.cosine, self.update, self.decay = beta, cosine, update, decay
        self.dead_code_steps = dead_code_steps
        init = torch.randn(num_codes, dim)
        init = F.normalize(init, dim=-1) if cosine else init
        if update == "loss":
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        # Usage statistics (buffers, so they travel with the state dict).
        self.register_buffer("usage_ema", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("num_resets", torch.zeros((), dtype=torch.long))
        self.register_buffer("recent", torch.zeros(buffer_size, dim))
        self.register_buffer("recent_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ lookup
    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1) if self.cosine else z

    def codes(self) -> torch.Tensor:
        """The codebook ``[k, d]`` as used for search (unit-norm when ``cosine``)."""
        return self._prepare(self.codebook)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer ``indices [*lead]`` -> ``[*lead, d]``."""
        if indices.is_floating_point():
            raise ValueError(f"VectorQuantizer.lookup takes integer indices, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(
                f"code indices must lie in [0, {self.num_codes}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return F.embedding(indices.long(), self.codes())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``[*lead]`` of the nearest code for each vector of ``z [*lead, d]``."""
        flat = self._prepare(z.reshape(-1, self.dim).float())
        codes = self.codes().float()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every code.
        dist = codes.pow(2).sum(-1)[None, :] - 2.0 * flat @ codes.t()  # [n, k]
        return dist.argmin(-1).reshape(z.shape[:-1])

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z [*lead, d]``; in training mode also update codes and usage."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer expects [..., {self.dim}], got {tuple(z.shape)}")
        lead = z.shape[:-1]
        flat = self._prepare(z.reshape(-1, self.dim))  # [n, d]
        indices = self.nearest(flat)  # [n]
        onehot = F.one_hot(indices, self.num_codes).type(flat.dtype)  # [n, k]
        if self.training:
            self._track(flat.detach(), onehot.detach())
        code = F.embedding(indices, self.codes())  # [n, d]; after an EMA step, the new codes
        commitment = F.mse_loss(flat, code.detach())
        codebook = F.mse_loss(code, flat.detach()) if self.update == "loss" else flat.new_zeros(())
        # Straight-through estimator, written so the forward value is exactly the code.
        quantized = code.detach() + (flat - flat.detach())
        probs = onehot.mean(0)
        perplexity = torch.exp(-(probs * (probs + 1e-10).log()).sum())
        return QuantizerOutput(
            quantized=quantized.reshape(*lead, self.dim),
            indices=indices.reshape(lead),
            loss=self.beta * commitment + codebook,
            commitment=commitment,
            codebook=codebook,
            perplexity=perplexity.detach(),
        )

    def passthrough(self, z: torch.Tensor) -> torch.Tensor:
        """The continuous bottleneck of the warm-up: ``z [*lead, d]`` normalised as the search is.

        No quantisation; in training mode the vectors go into the recent buffer that
        ``kmeans_init`` clusters.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer expects [..., {self.dim}], got {tuple(z.shape)}")
        flat = self._prepare(z.reshape(-1, self.dim))
        if self.training:
            self._remember(flat.detach())
        return flat.reshape(z.shape)

    @torch.no_grad()
    def kmeans_init(
        self, vectors: torch.Tensor | None = None, iters: int = 20, seed: int = 0
    ) -> torch.Tensor:
        """Set the codebook to ``num_codes`` k-means centroids of ``vectors [n, d]``.

        ``vectors`` defaults to the recent buffer (the encoder outputs of the last steps).
        Seeding is k-means++ (each new centre drawn with probability proportional to the
        squared distance to the nearest chosen one), then ``iters`` Lloyd steps; with
        ``cosine`` the centroids are re-normalised each step (spherical k-means). An empty
        cluster takes the vector farthest from its centre. Usage statistics restart and
        ``initialized`` is set. Returns the cluster sizes ``[k]``.
        """
        if vectors is None:
            vectors = self.recent[: int(min(self.recent_count, self.recent.shape[0]))]
        x = self._prepare(vectors.reshape(-1, self.dim).float())
        if x.shape[0] < self.num_codes:
            raise ValueError(
                f"kmeans_init needs at least num_codes={self.num_codes} vectors, got {x.shape[0]}"
            )
        gen = torch.Generator(device="cpu").manual_seed(seed)
        first = int(torch.randint(0, x.shape[0], (1,), generator=gen))
        centres = [x[first]]
        for _ in range(1, self.num_codes):
            d2 = torch.cdist(x, torch.stack(centres)).pow(2).amin(-1)
            probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / len(d2))
            centres.append(x[int(torch.multinomial(probs.cpu(), 1, generator=gen))])
        c = torch.stack(centres)  # [k, d]
        for _ in range(iters):
            dist = torch.cdist(x, c)  # [n, k]
            assign = dist.argmin(-1)
            onehot = F.one_hot(assign, self.num_codes).float()
            counts = onehot.sum(0)
            new = onehot.t() @ x / counts.clamp_min(1)[:, None]
            for j in (counts == 0).nonzero().flatten().tolist():
                far = int(dist.gather(1, assign[:, None]).squeeze(1).argmax())
                new[j] = x[far]
                assign[far] = j
            c = self._prepare(new)
        counts = F.one_hot(torch.cdist(x, c).argmin(-1), self.num_codes).sum(0).float()
        self.codebook.data.copy_(c.to(self.codebook.dtype))
        if self.update == "ema":
            self.ema_count.copy_(counts.clamp_min(1.0))
            self.ema_sum.copy_(c * self.ema_count[:, None])
        self.usage_ema.copy_(counts / counts.sum())
        self.steps_unused.zero_()
        self.initialized.fill_(True)
        return counts

    # ------------------------------------------------------------------ training-time state
    @torch.no_grad()
    def _track(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        """EMA codebook update, usage statistics, recent-vector buffer, dead-code reset."""
        counts = onehot.sum(0).float()  # [k]
        if self.update == "ema":
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(
                onehot.t().float() @ flat.float(), alpha=1 - self.decay
            )
            # Laplace smoothing keeps a rarely chosen code's mean finite.
            n = self.ema_count.sum()
            smoothed = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
            self.codebook.copy_(self._prepare(self.ema_sum / smoothed[:, None]))
        self.usage_ema.mul_(self.decay).add_(
            counts / counts.sum().clamp_min(1), alpha=1 - self.decay
        )
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        self._remember(flat)
        if self.dead_code_steps:
            self.reset_dead_codes()

    @torch.no_grad()
    def _remember(self, flat: torch.Tensor) -> None:
        """Write the newest vectors into the ring buffer ``recent``."""
        size = self.recent.shape[0]
        flat = flat[-size:].to(self.recent.dtype)
        start = int(self.recent_count) % size
        idx = (torch.arange(flat.shape[0], device=flat.device) + start) % size
        self.recent[idx] = flat
        self.recent_count.add_(flat.shape[0])

    @torch.no_grad()
    def reset_dead_codes(self, min_unused: int | None = None) -> int:
        """Re-initialise codes unused for ``min_unused`` steps (default ``dead_code_steps``).

        Replacements are distinct random vectors of the recent buffer (with a little noise so
        two codes reset from one vector still separate). Returns the number of codes reset.
        """
        threshold = self.dead_code_steps if min_unused is None else min_unused
        dead = (self.steps_unused >= max(threshold, 1)).nonzero().flatten()
        available = int(min(self.recent_count, self.recent.shape[0]))
        if dead.numel() == 0 or available == 0:
            return 0
        pick = torch.randint(0, available, (dead.numel(),), device=dead.device)
        new = self.recent[pick]
        new = new + 0.01 * new.norm(dim=-1, keepdim=True).clamp_min(1e-6) * torch.randn_like(new)
        new = self._prepare(new)
        self.codebook.data[dead] = new.to(self.codebook.dtype)
        if self.update == "ema":
            mean_count = self.ema_count.mean().clamp_min(1.0)
            self.ema_count[dead] = mean_count
            self.ema_sum[dead] = new * mean_count
        self.usage_ema[dead] = 1.0 / self.num_codes
        self.steps_unused[dead] = 0
        self.num_resets.add_(dead.numel())
        return int(dead.numel())

    def usage(self) -> dict[str, float]:
        """Codebook use over the recent training steps (EMA of the assignment histogram).

        ``perplexity`` (1 = one code, k = uniform), ``codes_used`` (codes with EMA share above
        1% of uniform), ``dead`` (codes unused for at least half of ``dead_code_steps``),
        ``resets`` (total codes reset so far).
        """
        p = self.usage_ema / self.usage_ema.sum().clamp_min(1e-12)
        entropy = -(p * (p + 1e-12).log()).sum()
        horizon = max(self.dead_code_steps // 2, 1)
        return {
            "perplexity": float(entropy.exp()),
            "codes_used": int((p > 0.01 / self.num_codes).sum()),
            "dead": int((self.steps_unused >= horizon).sum()),
            "resets": int(self.num_resets),
        }
