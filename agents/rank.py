"""Imagined return by policy: what a world model pays each policy, before any real game is run.

An imagination agent can only be as good as the model's ranking of policies: if the model pays
a random policy as much as a good one, no optimiser inside it can find the good one. This ranks
any set of agent checkpoints (and a uniformly random policy) by the return they earn in the same
imagined worlds:

1. ``rollouts`` batches of ``num_envs`` worlds, each batch reset from the same seeded real start
   contexts for every policy (common random starts, so the policies differ only by their
   actions and the model's own draws);
2. each world runs ``horizon`` steps and counts its rewards up to its first ending (terminated
   or truncated), like one imagined rollout of ``worldsim agent mode=train``. Which start
   contexts are drawn moves the figures a lot (on the `medium` bundle, 32 worlds pay random
   0.03 to 0.14 depending on the seed), so rank with many worlds (``num_envs x rollouts``);
3. per policy: the return per world (mean, and std over the batches), its positive and negative
   parts, and the endings per world. A policy the model favours over random but which loses
   in the real game points at the model; one the model pays less than another policy it could
   have learned points at the optimiser (docs/agents.md).

Checkpoints carry their ``meta`` (name, training update, the bundle they trained on) into the
results, so a wrong file shows up as such.

einops legend: b worlds, t steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluate import AgentPolicy, RandomPolicy, summarize
from agents.imagination import ImaginationSource, agent_config
from agents.trainer import load_checkpoint
from worldsim.bundle import Bundle
from worldsim.data.atomic import atomic_write_json
from worldsim.world_options import WorldOptions

RANDOM = "random"


def _load_policies(
    checkpoints: dict[str, str | os.PathLike], source: ImaginationSource, seed: int, greedy: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    policies: dict[str, Any] = {RANDOM: RandomPolicy.for_space(source.action_space, seed=seed)}
    info: dict[str, dict[str, Any]] = {
        RANDOM: {"checkpoint": None, "name": RANDOM, "update": None, "trained_on": None}
    }
    for label, path in checkpoints.items():
        if label == RANDOM:
            raise ValueError(f"policy label {RANDOM!r} is reserved for the random policy")
        model, ckpt = load_checkpoint(path)
        cfg, meta = model.cfg, ckpt.get("meta", {})
        env = source.env
        if tuple(cfg.obs_shape) != tuple(source.obs_shape) or cfg.obs_type != env.obs_type:
            raise ValueError(
                f"{path}: the agent sees {cfg.obs_type} {tuple(cfg.obs_shape)}, these imagined "
                f"worlds give {env.obs_type} {tuple(source.obs_shape)}"
            )
        want = agent_config(cfg.obs_type, cfg.obs_shape, source.action_space)
        if (cfg.num_actions, cfg.action_dim) != (want.num_actions, want.action_dim):
            have = f"{cfg.action_dim}-D continuous" if cfg.continuous else str(cfg.num_actions)
            take = f"{want.action_dim}-D continuous" if want.continuous else str(want.num_actions)
            raise ValueError(
                f"{path}: the agent has {have} actions, these imagined worlds take "
                f"{take} ({env.action_type} actions)"
            )
        policies[label] = AgentPolicy(model, greedy=greedy, seed=seed)
        info[label] = {
            "checkpoint": str(path),
            "name": meta.get("name"),
            "update": ckpt.get("update"),
            "trained_on": meta.get("bundle"),
        }
    return policies, info


@torch.no_grad()
def imagined_returns(
    bundle: str | os.PathLike | Bundle,
    checkpoints: dict[str, str | os.PathLike],
    *,
    options: WorldOptions | None = None,
    num_envs: int = 32,
    rollouts: int = 2,
    horizon: int = 15,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, Any]:
    """Imagined return per world of a random policy and each checkpoint (module docstring).

    ``checkpoints`` maps a label to an agent checkpoint (file or run directory); ``options``:
    the imagined worlds (default: the ``imagination`` preset, as the agents train in). Returns
    ``{"policies": {label: {return, positive, negative, endings, checkpoint info}}, "setup": ...}``;
    ``return`` is :func:`agents.evaluate.summarize` over the ``rollouts`` batch means.
    """
    if rollouts < 1 or horizon < 1:
        raise ValueError(f"rollouts and horizon must be >= 1, got {rollouts}, {horizon}")
    source = ImaginationSource(bundle, num_envs, options)
    world = source.options
    try:
        policies, info = _load_policies(checkpoints, source, seed, greedy)
        results: dict[str, Any] = {}
        for label, policy in policies.items():
            totals: dict[str, list[float]] = {"return": [], "positive": [], "negative": []}
            endings = 0.0
            for r in range(rollouts):
                # the seed fixes the start contexts and the model's own draws (the env reseeds
                # the Simulator's generator), alike for every policy
                obs = source.reset(seed=seed + r)
                alive = torch.ones(num_envs, dtype=torch.bool, device=obs.device)
                rewards = []  # t x [b]
                for _ in range(horizon):
                    obs, reward, terminated, truncated = source.step(policy(obs).to(obs.device))
                    rewards.append(reward * alive)
                    endings += float((terminated & alive).sum())
                    alive &= ~(terminated | truncated)
                rew = torch.stack(rewards).cpu()  # [t, b]
                totals["return"].append(float(rew.sum(0).mean()))
                totals["positive"].append(float(rew.clamp(min=0).sum(0).mean()))
                totals["negative"].append(float(rew.clamp(max=0).sum(0).mean()))
            results[label] = {
                "return": summarize(totals["return"]),
                "positive": float(np.mean(totals["positive"])),
                "negative": float(np.mean(totals["negative"])),
                "endings": endings / (rollouts * num_envs),
                **info[label],
            }
    finally:
        source.close()
    setup = {
        "bundle": str(Path(bundle).resolve()) if isinstance(bundle, (str, os.PathLike)) else None,
        "num_envs": num_envs,
        "rollouts": rollouts,
        "horizon": horizon,
        "seed": seed,
        "greedy": greedy,
        "sampler_steps": world.sampler_steps,
        "termination": world.termination,
        "termination_scale": world.termination_scale,
        "precision": world.precision,
    }
    return {"policies": results, "setup": setup}


def write_rank(results: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """``rank.json`` (atomically) and ``rank.png`` (a bar per policy, std over batches)."""
    import matplotlib  # lazy, as in agents.trainer.plot_curves (import time, the Agg backend)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): the backend pyplot loads

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rank.json"
    atomic_write_json(path, results, indent=2)
    labels = list(results["policies"])
    means = [results["policies"][k]["return"]["mean"] for k in labels]
    stds = [results["policies"][k]["return"]["std"] for k in labels]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(labels), 3.5))
    ax.bar(labels, means, yerr=stds, capsize=4, color="tab:blue")
    ax.axhline(0, color="black", linewidth=0.8)
    s = results["setup"]
    ax.set_ylabel(f"imagined return per world ({s['horizon']} steps)")
    name = Path(s["bundle"]).name if s["bundle"] else "bundle"
    ax.set_title(f"{name}: {s['rollouts']} x {s['num_envs']} worlds", fontsize=9)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(out / "rank.png", dpi=100)
    plt.close(fig)
    return path


__all__ = ["RANDOM", "imagined_returns", "write_rank"]
