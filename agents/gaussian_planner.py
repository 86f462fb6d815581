"""Latent-space planners over continuous actions: CEM (with iCEM's coloured noise and elite
keeping) and MPPI over Gaussian action sequences.

The continuous counterpart of :class:`~agents.planners.SequencePlanner`, talking to the world
through the same :class:`~agents.planners.PlanningModel` (whose ``action_space`` is a
``gymnasium.spaces.Box``) and scoring with the same objectives. Actions live in the Box; the
search happens in the Box rescaled to [-1, 1] per dimension, so one ``init_std`` suits any
range.

Search distribution: a mean ``mu [t, a]`` and a standard deviation ``sigma [t, a]`` per step
and action dimension (zero mean, ``init_std`` at first). Each iteration draws ``population``
sequences ``mu + sigma * noise``, clipped to the Box, where ``noise [p, t, a]`` is

- **coloured** along time (iCEM, Pinneri et al. 2020): Gaussian noise whose power spectrum
  falls as ``1 / f^beta`` (``noise_beta``; 0 is white noise, iCEM uses 2-4 for robot
  control), drawn in the frequency domain and scaled to unit variance per step, so sampled
  sequences are smooth pushes rather than jitter;

and the update is

- **CEM**: the ``elites`` best sequences give the new mean and standard deviation, smoothed
  ``mu <- (1 - alpha) mu + alpha mean_elite`` (and the same for ``sigma``); a fraction
  ``keep_elites`` of the elites joins the next iteration's population unchanged (iCEM's elite
  keeping), and the best sequence seen is always re-scored;
- **MPPI**: weights ``w = softmax(score / temperature)`` over the whole population; the new
  mean and standard deviation are the weighted ones, smoothed as above (as TD-MPC's MPPI
  does; the original keeps ``sigma`` fixed, which converges slower within a small budget).

CEM executes the best sequence seen, MPPI its final mean. The next plan starts from the last
mean shifted by the executed steps (the tail padded with zeros), ``sigma`` reset to
``init_std``, and the kept elites shifted the same way. ``min_std`` bounds ``sigma`` below.

**Budget.** As for the discrete planners: one model call is one world advanced one step; a plan
costs exactly ``population x iterations x horizon`` calls.

einops legend: p population, t horizon step, a action dimensions, e elites.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from agents.planners import PlanResult, check_search
from worldsim.actions import box_from_unit


def coloured_noise(
    beta: float, shape: tuple[int, int, int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise ``[p, t, a]`` with power spectrum ``~ 1 / f^beta`` along ``t`` and unit
    variance at every step (``beta = 0``: white noise)."""
    p, t, a = shape
    if beta == 0 or t < 2:
        return torch.randn(shape, generator=generator)
    freqs = torch.fft.rfftfreq(t)  # [f], f = 0 .. 1/2
    scale = torch.ones_like(freqs)
    scale[1:] = freqs[1:] ** (-beta / 2)
    scale[0] = scale[1]  # the constant component as strong as the slowest wave
    real = torch.randn(p, a, len(freqs), generator=generator)
    imag = torch.randn(p, a, len(freqs), generator=generator)
    signal = torch.fft.irfft(torch.complex(real, imag) * scale, n=t)  # [p, a, t]
    std = _irfft_std(scale**2, t)
    return (signal / std).transpose(1, 2).contiguous()


def _irfft_std(power: torch.Tensor, t: int) -> torch.Tensor:
    """Std of every sample of ``irfft(c * sqrt(power), n=t)`` for ``c`` with independent unit
    real and imaginary parts: the constant term (and for even ``t`` the Nyquist term) counts
    its real part once, every other term its conjugate pair, ``4 |power|`` in all."""
    weight = torch.full_like(power, 4.0)
    weight[0] = 1.0
    if t % 2 == 0:
        weight[-1] = 1.0
    return torch.sqrt((weight * power).sum()) / t


class GaussianPlanner:
    """CEM or MPPI (``method``) over continuous action sequences; see the module docstring."""

    def __init__(
        self,
        model,
        objective,
        *,
        method: str = "cem",
        horizon: int = 8,
        population: int = 64,
        iterations: int = 3,
        elites: int = 8,
        alpha: float = 0.9,
        temperature: float = 0.1,
        init_std: float = 0.5,
        min_std: float = 0.05,
        noise_beta: float = 2.0,
        keep_elites: float = 0.3,
        seed: int = 0,
    ) -> None:
        check_search(method, horizon, population, iterations, elites, alpha, temperature)
        if not (0 < min_std <= init_std and noise_beta >= 0 and 0 <= keep_elites <= 1):
            raise ValueError(
                "planner: need 0 < min_std <= init_std, noise_beta >= 0, 0 <= keep_elites <= 1; "
                f"got {min_std}, {init_std}, {noise_beta}, {keep_elites}"
            )
        space = getattr(model, "action_space", None)
        if not isinstance(space, spaces.Box):
            raise ValueError(
                f"GaussianPlanner plans over a Box action space; the model has {space!r} "
                "(discrete actions: agents.planners.SequencePlanner)"
            )
        self.model, self.objective, self.method = model, objective, method
        self.horizon, self.population, self.iterations, self.elites = (
            horizon, population, iterations, elites,
        )
        self.alpha, self.temperature = alpha, temperature
        self.init_std, self.min_std = init_std, min_std
        self.noise_beta, self.keep_elites = noise_beta, keep_elites
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"GaussianPlanner needs a bounded Box, got {space}")
        self.space, self.dim = space, int(np.prod(space.shape))
        self.generator = torch.Generator().manual_seed(seed)
        self.model_calls = 0
        self._mean: torch.Tensor | None = None  # [t, a] in [-1, 1] units
        self._kept: torch.Tensor | None = None  # [e, t, a]
        self._best: torch.Tensor | None = None  # [t, a]

    @property
    def calls_per_plan(self) -> int:
        return self.population * self.iterations * self.horizon

    @property
    def warm(self) -> bool:
        """Whether a previous plan exists to warm-start from."""
        return self._mean is not None

    def to_box(self, unit: torch.Tensor) -> torch.Tensor:
        """[-1, 1] units -> the Box's range."""
        return box_from_unit(unit, self.space)

    def _shifted(self, seq: torch.Tensor | None, executed: int) -> torch.Tensor | None:
        if seq is None:
            return None
        pad = torch.zeros(*seq.shape[:-2], min(executed, self.horizon), self.dim)
        return torch.cat([seq[..., executed:, :], pad], dim=-2)

    def shift(self, executed: int) -> None:
        """Warm start: drop the ``executed`` first steps of the last mean, elites and best plan."""
        self._mean = self._shifted(self._mean, executed)
        self._kept = self._shifted(self._kept, executed)
        self._best = self._shifted(self._best, executed)

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self._mean = self._kept = self._best = None

    def plan(self, context: np.ndarray) -> PlanResult:
        """Search from context frames ``[k, H, W, 3]`` (uint8); exactly ``calls_per_plan`` calls.
        ``PlanResult.actions``: ``[t, a]`` float32 in the Box; ``probs``: the final mean and
        standard deviation stacked, ``[2, t, a]`` in [-1, 1] units."""
        self.model.set_context(context, self.population)
        shape = (self.horizon, self.dim)
        mean = torch.zeros(shape) if self._mean is None else self._mean.clone()
        std = torch.full(shape, self.init_std)
        kept, best_seq, best_score, calls = self._kept, self._best, -float("inf"), 0
        for _ in range(self.iterations):
            noise = coloured_noise(self.noise_beta, (self.population, *shape), self.generator)
            seqs = (mean + std * noise).clamp(-1, 1)  # p t a
            n_kept = 0
            if kept is not None and self.method == "cem":
                n_kept = min(len(kept), self.population - 1)
                seqs[1 : 1 + n_kept] = kept[:n_kept]
            if best_seq is not None:
                seqs[0] = best_seq  # elitism: the best sequence so far is always re-scored
            latents, rewards = self.model.rollout(self.to_box(seqs))
            calls += self.population * self.horizon
            scores = self.objective(latents, rewards).float().cpu()
            top = int(scores.argmax())
            if float(scores[top]) >= best_score:
                best_score, best_seq = float(scores[top]), seqs[top].clone()
            if self.method == "cem":
                elite = seqs[scores.topk(self.elites).indices]  # e t a
                new_mean, new_std = elite.mean(0), elite.std(0, unbiased=False)
                std = ((1 - self.alpha) * std + self.alpha * new_std).clamp(min=self.min_std)
                kept = elite[: max(int(round(self.keep_elites * self.elites)), 0)]
            else:
                weights = torch.softmax((scores - scores.max()) / self.temperature, 0)
                new_mean = torch.einsum("p,pta->ta", weights, seqs)
                spread = torch.einsum("p,pta->ta", weights, (seqs - new_mean).pow(2)).sqrt()
                std = ((1 - self.alpha) * std + self.alpha * spread).clamp(min=self.min_std)
            mean = (1 - self.alpha) * mean + self.alpha * new_mean
        self.model_calls += calls
        self._mean, self._best = mean, best_seq
        self._kept = kept if self.method == "cem" and kept is not None and len(kept) else None
        chosen = best_seq if self.method == "cem" else mean
        return PlanResult(self.to_box(chosen).float(), best_score, torch.stack([mean, std]), calls)


__all__ = ["GaussianPlanner", "coloured_noise"]
