"""Evaluation in the real game: does an agent trained in imagination play the real thing?

The agent acts through the bundle's action binding and sees the real game's frames the way it
saw the model's (resized to the bundle's frame size; encoded for latent observations), see
:mod:`agents.real_game`. Returns are undiscounted sums over the first episode of each world,
``episodes`` worlds per seed, capped at ``max_steps`` steps; we report the mean and the standard
deviation over seeds of the per-seed mean return.

``compare_in_real_game`` is the whole protocol of ``worldsim agent mode=eval``:

1. the imagination agent (from its checkpoint),
2. a uniformly random policy over the game's real actions,
3. the same actor-critic (same network, same hyper-parameters) trained in the real game for the
   same number of gradient updates (``agents.real_game.train_in_real_game``; reused from
   ``out_dir/real`` when already trained),
4. with ``matched_updates``, the same actor-critic trained in the real game for only that many
   updates (``out_dir/real_matched``): given as many real frames as the world model was trained
   on, the sample-efficiency baseline,

each on the same seeds, then writes ``eval.json`` and ``curves.png`` (the return curves of both
trainings against gradient updates).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.actor_critic import ActorCritic
from agents.imagination import action_count
from agents.real_game import RealGameSource, train_in_real_game
from agents.trainer import TrainConfig, load_checkpoint, plot_curves
from worldsim.data.atomic import atomic_write_json


class AgentPolicy:
    """An actor-critic as a policy over latent codes, or real actions with ``real=True``
    (sampled, or greedy)."""

    def __init__(
        self, model: ActorCritic, *, greedy: bool = False, seed: int = 0, real: bool = False
    ) -> None:
        self.model, self.greedy, self.real = model.eval(), greedy, real
        device = next(model.parameters()).device
        self.generator = torch.Generator(device).manual_seed(seed)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.act(obs, greedy=self.greedy, generator=self.generator)


class RandomPolicy:
    """Uniformly random real actions (the game's own action space, not latent codes): ``[b]``
    ints for ``num_actions`` discrete actions, or ``[b, a]`` uniform in the unit box for a
    continuous game (``num_actions=None``, ``action_dim=a``)."""

    real = True

    def __init__(self, num_actions: int | None, *, seed: int = 0, action_dim: int = 0) -> None:
        if (num_actions is None) == (action_dim == 0):
            raise ValueError(
                f"RandomPolicy: give num_actions (discrete) or action_dim (continuous), got "
                f"{num_actions}, {action_dim}"
            )
        self.num_actions, self.action_dim = num_actions, action_dim
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def for_space(cls, space, *, seed: int = 0) -> RandomPolicy:
        """Uniform over a ``Discrete`` space or a bounded 1-D ``Box`` (through the unit box)."""
        n = action_count(space)
        return cls(n, seed=seed, action_dim=0 if n is not None else int(space.shape[0]))

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        if self.action_dim:
            return torch.rand(obs.shape[0], self.action_dim, generator=self.generator) * 2 - 1
        return torch.randint(self.num_actions, (obs.shape[0],), generator=self.generator)


def summarize(values: list[float]) -> dict[str, Any]:
    """``{mean, std, n, values}`` of per-seed figures (population std; 0 for one seed)."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "n": len(values),
        "values": arr.tolist(),
    }


@torch.no_grad()
def evaluate_policy(
    policy: Callable[[torch.Tensor], torch.Tensor],
    source: RealGameSource,
    seeds: list[int],
    *,
    max_steps: int = 500,
) -> dict[str, Any]:
    """Mean return of the first episode of each of ``source.num_envs`` worlds, per seed.

    ``policy(obs [b, ...]) -> actions [b]``; ``policy.real`` tells whether it emits real actions
    (else latent codes, played through the binding). Episodes still running after
    ``max_steps`` steps are cut there.
    """
    if not seeds:
        raise ValueError("evaluate_policy: need at least one seed")
    if max_steps < 1:
        raise ValueError(f"evaluate_policy: max_steps must be >= 1, got {max_steps}")
    per_seed, lengths = [], []
    for seed in seeds:
        obs = source.reset(seed=int(seed))
        b = source.num_envs
        total = np.zeros(b)
        length = np.zeros(b, dtype=np.int64)
        running = np.ones(b, dtype=bool)
        for _ in range(max_steps):
            actions = policy(obs)
            obs, reward, terminated, truncated = source.step(
                actions, real=getattr(policy, "real", False)
            )
            total += reward.cpu().numpy() * running
            length += running
            running &= ~(terminated | truncated).cpu().numpy()
            if not running.any():
                break
        per_seed.append(float(total.mean()))
        lengths.append(float(length.mean()))
    out = summarize(per_seed)
    out["episode_length"] = float(np.mean(lengths))
    out["seeds"] = [int(s) for s in seeds]
    return out


def compare_in_real_game(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike | None = None,
    env_id: str | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    episodes: int = 8,
    max_steps: int = 500,
    greedy: bool = False,
    real_num_envs: int | None = None,
    train_real: bool = True,
    matched_updates: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The evaluation protocol of the module docstring; returns (and writes) the results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("meta", {})
    bundle = bundle or meta.get("bundle")
    if bundle is None:
        raise ValueError(f"{checkpoint}: the checkpoint names no bundle; pass bundle=PATH")
    obs_type = model.cfg.obs_type
    action_type = meta.get("action_type", "latent")  # checkpoints older than real-action agents: latent
    real = action_type == "real"
    source = RealGameSource(
        bundle, episodes, env_id=env_id, obs_type=obs_type, env_kwargs=env_kwargs
    )
    results: dict[str, Any] = {
        "game": source.env_id,
        "bundle": str(bundle),
        "checkpoint": str(checkpoint),
        "updates": int(ckpt["update"]),
        "action_type": action_type,
        "episodes_per_seed": episodes,
        "max_steps": max_steps,
    }
    try:
        agent = AgentPolicy(model, greedy=greedy, seed=0, real=real)
        results["imagination_return"] = evaluate_policy(
            agent, source, list(seeds), max_steps=max_steps
        )
        rand = RandomPolicy.for_space(source.real_action_space, seed=0)
        results["random_return"] = evaluate_policy(rand, source, list(seeds), max_steps=max_steps)
        curves = {"imagination": ckpt.get("rows", [])}
        runs = [("real", "real_return", "real game", int(ckpt["update"]))] if train_real else []
        if matched_updates is not None:
            if matched_updates < 1:
                raise ValueError(f"compare_in_real_game: matched_updates must be >= 1, got {matched_updates}")
            runs.append(("real_matched", "sample_matched_return", "real game, matched frames",
                         int(matched_updates)))
        known = {f.name for f in fields(TrainConfig)}
        saved = {k: v for k, v in ckpt["train_config"].items() if k in known}
        network = {"channels": model.cfg.channels, "hidden": model.cfg.hidden}
        for folder, key, label, updates in runs:
            train = TrainConfig(
                **{**saved, "updates": updates, "reset_each_update": False, "progress": progress}
            )
            summary = train_in_real_game(
                bundle,
                out / folder,
                env_id=source.env_id,
                num_envs=real_num_envs or int(meta.get("num_envs", 16)),
                obs_type=obs_type,
                action_type=action_type,
                train=train,
                network=network,
                env_kwargs=env_kwargs,
            )
            real_model, real_ckpt = load_checkpoint(summary["checkpoint"])
            real_agent = AgentPolicy(real_model, greedy=greedy, seed=0, real=real)
            results[key] = evaluate_policy(real_agent, source, list(seeds), max_steps=max_steps)
            results[key]["updates"] = updates
            results[f"{folder}_checkpoint"] = summary["checkpoint"]
            curves[label] = real_ckpt.get("rows", [])
        plot_curves(curves, out / "curves.png")
        results["plot"] = str(out / "curves.png")
    finally:
        source.close()
    atomic_write_json(out / "eval.json", results, indent=2)
    return results


__all__ = ["AgentPolicy", "RandomPolicy", "compare_in_real_game", "evaluate_policy", "summarize"]
