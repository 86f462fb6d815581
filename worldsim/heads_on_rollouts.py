"""Reward and termination heads fitted on the dynamics model's own rollouts.

The heads are first trained beside the dynamics on real latents (``worldsim/heads.py``), but in
imagination they read latents the dynamics generated, which drift from real ones within a few
frames. Heads that only ever saw real latents then misread them: they miss most coins in
generated windows and find coins where there are none (``docs/dynamics.md``, Results). The
heads are refitted to what they will read:

1. **Pool.** ``build_pool`` draws windows of ``context + horizon`` latents uniformly from the
   given episodes (so rewards keep their natural rates), gives the dynamics the first
   ``context`` real latents, and lets it generate ``horizon`` frames under the window's recorded
   actions (teacher-forced actions, free-running frames: exactly the imagination setting). The
   pool keeps both the real and the generated clips with the window's rewards and terminations.
   ``end_fraction`` of the windows instead end at an episode's terminal transition (deaths are
   about 0.5% of transitions, so a uniform pool of 2,048 windows holds a few dozen); each window
   carries an importance weight that makes the weighted pool the uniform one again, so the
   heads stay calibrated (their termination probability is what sampled deaths draw from).
2. **Fit.** ``fit_heads`` (``worldsim/training/heads_refit.py``) trains the heads on batches of
   generated and real transitions of the pool (``real_weight`` weighs the real part), with the
   heads' own losses (two-hot reward, termination BCE). The reward head then predicts the
   expected reward given what the model shows, which is what an agent trained in imagination
   should maximise.
3. **Scores.** ``event_scores`` counts, for coins (reward > 0.5), losses (reward < -0.5) and
   terminations, how many the heads find (recall) and how many of their calls are right
   (precision) on a pool's real or generated clips, plus the mean predicted reward against the
   mean true one (a reward rate inflated by false coins shows here first). ``readout_scores``
   gives the same figures for the dynamics' own readout (``worldsim/readout.py``), which
   ``build_pool`` records while it generates the windows.

This module holds the pool and the scores; the quickstart runs the fit as its ``heads`` step
(``worldsim/training/heads_refit.py``) on the training episodes and scores a held-out pool
before and after.

einops legend: n windows, t frames of a clip (1 + horizon), c latent channels, h w latent grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from worldsim import flow
from worldsim.actions import ACTION_SOURCES, model_input
from worldsim.evaluation import sample_windows
from worldsim.flow import map_actions
from worldsim.nn.adaln import ActionInput


@dataclass
class RolloutPool:
    """Real and generated clips of the same windows, with what happened in them.

    ``real`` and ``generated`` are ``[n, t, c, h, w]`` normalised latents whose first frame is the
    last real context frame (so transition ``i`` is frame ``i`` -> ``i + 1``); ``actions``,
    ``rewards`` and ``terminated`` are ``[n, t - 1]`` (``actions`` a pair for ``both``)."""

    real: torch.Tensor
    generated: torch.Tensor
    actions: ActionInput
    rewards: torch.Tensor
    terminated: torch.Tensor
    weights: torch.Tensor | None = None  # [n] importance weights (None: uniform windows)
    # The dynamics' own readout of each generated transition (worldsim/readout.py), when it has
    # one: predicted reward and termination probability, [n, t - 1].
    readout_reward: torch.Tensor | None = None
    readout_termination: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.real.shape[0]

    def take(self, index: torch.Tensor) -> RolloutPool:
        return RolloutPool(
            self.real[index],
            self.generated[index],
            map_actions(self.actions, lambda a: a[index]),
            self.rewards[index],
            self.terminated[index],
            None if self.weights is None else self.weights[index],
            None if self.readout_reward is None else self.readout_reward[index],
            None if self.readout_termination is None else self.readout_termination[index],
        )


def _window_actions(latent_store, e: int, s: int, stop: int, steps: dict, source: str, label: str):
    """The window's actions in the dynamics' form; ``steps`` is the window's ``read_steps``."""
    lam = (
        torch.from_numpy(latent_store.read_labels(label, e, s, stop)).long()
        if source in ("latent", "both")
        else None
    )
    real = torch.from_numpy(steps["actions"]) if source in ("real", "both") else None
    return model_input(source, lam, real)


def _stack(items: list, join=torch.stack) -> ActionInput:
    """Stack (or ``join=torch.cat``) a list of action tensors or of ``both`` pairs."""
    if isinstance(items[0], tuple):
        return tuple(join(x) for x in zip(*items, strict=True))
    return join(items)


@torch.no_grad()
def build_pool(
    dynamics,
    latent_store,
    episodes: Sequence[int],
    *,
    windows: int = 2048,
    context: int = 2,
    horizon: int = 8,
    action_source: str = "latent",
    label: str = "lam",
    sampler_steps: int = 2,
    context_noise: float = 0.1,
    end_fraction: float = 0.0,
    batch: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> RolloutPool:
    """Generate ``windows`` clips of ``horizon`` frames from real contexts of ``episodes`` under
    their recorded actions (module docstring, item 1); ``end_fraction`` of them end at terminal
    transitions, with importance weights. The store must hold rewards."""
    if action_source not in ACTION_SOURCES:
        raise ValueError(f"build_pool: action_source must be one of {ACTION_SOURCES}, got {action_source!r}")
    if context < 1 or horizon < 1:
        raise ValueError(f"build_pool: context and horizon must be >= 1, got {context}, {horizon}")
    missing = [e for e in episodes if not latent_store.has(e, "rewards")]
    if missing:
        raise ValueError(
            f"build_pool: episodes {missing[:5]} of the latent store have no rewards; "
            "reward heads need recorded rewards"
        )
    if not 0.0 <= end_fraction < 1.0:
        raise ValueError(f"build_pool: end_fraction must lie in [0, 1), got {end_fraction}")
    span = context + horizon
    lengths = [latent_store.episode_length(i) for i in range(len(latent_store))]
    ends = ([e for e in episodes if lengths[e] >= span and _ends_terminal(latent_store, e)]
            if end_fraction > 0 else [])
    n_end = int(round(windows * end_fraction)) if ends else 0
    picks = sample_windows(lengths, list(episodes), span, windows - n_end, seed)
    weights = None
    if n_end:
        rng = np.random.default_rng(seed + 7)
        picks = picks + [(e, lengths[e] - span) for e in rng.choice(ends, size=n_end)]
        # q(w) = (1 - f) / N + f [w ends an episode] / |E|; weight p / q with p = 1 / N (uniform).
        # The weight belongs to the window, however it was drawn (uniform picks can be end windows).
        total = sum(max(lengths[e] - span + 1, 0) for e in episodes)
        f, end_set = n_end / windows, {(e, lengths[e] - span) for e in ends}
        w_end = (1 / total) / ((1 - f) / total + f / len(ends))
        weights = torch.tensor([w_end if pick in end_set else 1 / (1 - f) for pick in picks])
        weights = weights / weights.mean()
    g = torch.Generator(device=device).manual_seed(seed)
    real, gen, acts, rewards, terms, read_r, read_t = [], [], [], [], [], [], []
    dynamics = dynamics.eval()
    readout = getattr(dynamics, "readout", None) is not None
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("imagining windows for the heads", total=len(picks))
        for i in range(0, len(picks), batch):
            chunk = picks[i : i + batch]
            z = torch.stack(
                [
                    torch.from_numpy(latent_store.read_latents(e, s, s + span).astype(np.float32))
                    for e, s in chunk
                ]
            )
            z = latent_store.normalize(z).to(device)  # n t c h w
            steps = [latent_store.read_steps(e, s, s + span - 1) for e, s in chunk]
            a = _stack([_window_actions(latent_store, e, s, s + span - 1, st, action_source, label)
                        for (e, s), st in zip(chunk, steps, strict=True)])
            a = map_actions(a, lambda x: x.to(device))
            out = flow.rollout(
                dynamics,
                z[:, :context],
                map_actions(a, lambda x: x[:, : context - 1]),
                map_actions(a, lambda x: x[:, context - 1 :]),
                steps=sampler_steps,
                context_noise=context_noise,
                generator=g,
                readout=readout,
            )
            if readout:
                out, events = out
                events = dynamics.readout.predict(events)
                read_r.append(events["reward"].cpu())
                read_t.append(events["termination_prob"].cpu())
            real.append(z[:, context - 1 :].cpu())
            gen.append(torch.cat([z[:, context - 1 : context], out], dim=1).cpu())
            acts.append(map_actions(a, lambda x: x[:, context - 1 :].cpu()))
            rewards.append(torch.stack([torch.from_numpy(st["rewards"][context - 1 :]) for st in steps]))
            terms.append(
                torch.stack(
                    [
                        torch.from_numpy(
                            st.get("terminated", np.zeros(span - 1, bool))[context - 1 :]
                        )
                        for st in steps
                    ]
                )
            )
            bar.advance(task, len(chunk))
    return RolloutPool(
        torch.cat(real),
        torch.cat(gen),
        _stack(acts, join=torch.cat),
        torch.cat(rewards).float(),
        torch.cat(terms).bool(),
        weights,
        torch.cat(read_r) if readout else None,
        torch.cat(read_t) if readout else None,
    )


def _ends_terminal(latent_store, e: int) -> bool:
    steps = latent_store.read_steps(e)
    return "terminated" in steps and len(steps["terminated"]) > 0 and bool(steps["terminated"][-1])


def _scores(reward: torch.Tensor, termination_prob: torch.Tensor, pool: RolloutPool) -> dict:
    """Event counts of predictions ``[n * (t - 1)]`` against the pool's rewards and endings."""
    y, yt = pool.rewards.flatten(), pool.terminated.flatten()
    out: dict = {
        "transitions": int(y.numel()),
        "reward_per_step": float(y.mean()),
        "predicted_reward_per_step": float(reward.mean()),
    }
    for name, pred, true in (
        ("coin", reward > 0.5, y > 0.5),
        ("loss", reward < -0.5, y < -0.5),
        ("termination", termination_prob > 0.5, yt),
    ):
        tp = int((pred & true).sum())
        out[name] = {
            "true": int(true.sum()),
            "predicted": int(pred.sum()),
            "precision": tp / max(int(pred.sum()), 1),
            "recall": tp / max(int(true.sum()), 1),
        }
    return out


@torch.no_grad()
def event_scores(heads, pool: RolloutPool, which: str = "generated", batch: int = 512) -> dict:
    """Precision and recall of the heads' coins, losses and terminations on the pool's
    ``generated`` or ``real`` clips, and the mean predicted vs true reward per step."""
    if which not in ("generated", "real"):
        raise ValueError(f"event_scores: which must be 'generated' or 'real', got {which!r}")
    clips = pool.generated if which == "generated" else pool.real
    device = next(heads.parameters()).device
    rewards, probs = [], []
    for i in range(0, len(pool), batch):
        z = clips[i : i + batch].to(device)
        flat = lambda x: x.flatten(0, 1)  # noqa: E731
        acts = map_actions(pool.actions, lambda x: flat(x[i : i + batch]).to(device))  # noqa: B023
        p = heads.predict(flat(z[:, :-1]), flat(z[:, 1:]), acts)
        rewards.append(p["reward"].cpu())
        probs.append(p["termination_prob"].cpu())
    return _scores(torch.cat(rewards), torch.cat(probs), pool)


def readout_scores(pool: RolloutPool, dynamics=None, *, context_noise: float = 0.1,
                   batch: int = 256) -> dict:
    """The same figures as :func:`event_scores` for the dynamics' own readout: of the pool's
    generated transitions (read while they were generated) or, given the ``dynamics``, of its
    real clips read teacher-forced (every frame real, labelled ``context_noise`` as the
    sampler labels finished frames). The gap between the two is what generation loses."""
    if dynamics is None:
        if pool.readout_reward is None:
            raise ValueError("readout_scores: the pool was built by a dynamics without a readout")
        return _scores(pool.readout_reward.flatten(), pool.readout_termination.flatten(), pool)
    if getattr(dynamics, "readout", None) is None:
        raise ValueError("readout_scores: the dynamics has no readout (DynamicsConfig.readout)")
    device = next(dynamics.parameters()).device
    rewards, probs = [], []
    with torch.no_grad():
        for i in range(0, len(pool), batch):
            z = pool.real[i : i + batch].to(device)
            acts = map_actions(pool.actions, lambda x: x[i : i + batch].to(device))  # noqa: B023
            level = torch.full(z.shape[:2], float(context_noise), device=device)
            _, events = dynamics.eval()(z, level, acts, readout=True)
            p = dynamics.readout.predict({k: e[:, 1:] for k, e in events.items()})
            rewards.append(p["reward"].flatten().cpu())
            probs.append(p["termination_prob"].flatten().cpu())
    return _scores(torch.cat(rewards), torch.cat(probs), pool)


__all__ = ["RolloutPool", "build_pool", "event_scores", "readout_scores"]
