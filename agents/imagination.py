"""Imagination training: the actor-critic learns entirely inside the world model.

The worlds are ``worldsim/WorldModel-v0``'s vector env (``WorldModelVectorEnv``, ``num_envs``
worlds stepped in one batched Simulator call, tensors kept on the device). Every rollout starts
from real frames: the env's reset draws one of the bundle's start contexts (real frames of the
dataset) per world, and the model imagines ``horizon`` steps from there (DIAMOND: burn-in on real
frames, then imagine). Rewards and terminations come from the bundle's heads; actions are the
latent action codes (``Discrete(num_latent_actions)``) or the game's own (discrete, or a ``Box``
that the agent's Gaussian head reaches through the unit box). How the worlds run is
one :class:`~worldsim.world_options.WorldOptions`, by default the ``imagination`` preset
(``worldsim.world_options.PRESETS``: latents, endings drawn from the termination probability).

``train_in_imagination(bundle, out_dir, ...)`` builds the env, the agent and the
:class:`~agents.trainer.ActorCriticTrainer`, and trains (resuming from ``out_dir`` when it holds
a checkpoint). ``worldsim agent mode=train bundle=PATH`` calls it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces

from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.trainer import ActorCriticTrainer, TrainConfig
from worldsim.actions import box_from_unit
from worldsim.bundle import Bundle
from worldsim.env import WorldModelVectorEnv
from worldsim.world_options import WorldOptions, preset


class ImaginationSource:
    """A :class:`~agents.trainer.RolloutSource` over a ``WorldModelVectorEnv``.

    ``options``: the imagined worlds (default: the ``imagination`` preset of
    ``worldsim.world_options``: latents, endings drawn from the termination probability).
    ``options.action_type="latent"``: the agent picks latent action codes (works on label-free
    video). ``"real"``: the agent picks the game's real actions, which the world model plays as
    each action's most frequent code (the bundle's binding). Rare codes are the ones the
    dynamics saw least, and an agent free to pick them learns to trigger rewards the model
    invents; real actions keep it on well-trained codes and let it play the real game directly.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Bundle,
        num_envs: int,
        options: WorldOptions | None = None,
        *,
        max_episode_steps: int | None = None,
    ) -> None:
        self.options = options if options is not None else preset("imagination")
        self.env = WorldModelVectorEnv(
            num_envs,
            bundle,
            options=self.options,
            max_episode_steps=max_episode_steps,
            return_torch=True,
        )
        self.num_envs = num_envs
        self.action_space = self.env.single_action_space
        self.obs_shape = tuple(self.env.single_observation_space.shape)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return obs

    @property
    def num_actions(self) -> int | None:
        """Discrete actions of the worlds (``None`` for a ``Box``)."""
        return action_count(self.action_space)

    def step(self, actions: torch.Tensor):
        """``actions``: ``[b]`` ints, or ``[b, a]`` in the unit box for a ``Box`` world."""
        if isinstance(self.action_space, spaces.Box):
            actions = box_from_unit(actions, self.action_space)
        obs, reward, terminated, truncated, _ = self.env.step(actions.to(self.env.device))
        return obs, reward.float(), terminated.bool(), truncated.bool()

    def close(self) -> None:
        self.env.close()


def action_count(space: spaces.Space) -> int | None:
    """``n`` of a ``Discrete`` space, ``None`` for a bounded ``Box`` (a Gaussian policy);
    ``ValueError`` for anything else."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.Box) and len(space.shape) == 1 and space.is_bounded():
        return None
    raise ValueError(f"agents take a Discrete or a bounded 1-D Box action space, got {space}")


def agent_config(
    obs_type: str, obs_shape: tuple[int, ...], action_space: spaces.Space, **sizes: Any
) -> ActorCriticConfig:
    """The actor-critic config for a world's observations and actions (``sizes``: channels,
    hidden): logits for a ``Discrete`` space, a Gaussian head for a ``Box``."""
    n = action_count(action_space)
    head = {"num_actions": n} if n is not None else {"action_dim": int(action_space.shape[0])}
    return ActorCriticConfig(obs_type=obs_type, obs_shape=tuple(obs_shape), **head, **sizes)


def train_in_imagination(
    bundle: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    options: WorldOptions | None = None,
    num_envs: int = 16,
    train: TrainConfig | None = None,
    network: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train an actor-critic inside the bundle's world model; returns the trainer's summary.

    ``options``: the imagined worlds (default: the ``imagination`` preset); the agent sees their
    ``obs_type``, picks their ``action_type`` and trains on their ``device``. ``out_dir``
    receives ``checkpoint.pt``, ``curve.csv`` and ``curve.png``.
    """
    train = train or TrainConfig()
    torch.manual_seed(train.seed)
    source = ImaginationSource(bundle, num_envs, options, max_episode_steps=max_episode_steps)
    world = source.options
    model = ActorCritic(
        agent_config(world.obs_type, source.obs_shape, source.action_space, **(network or {}))
    ).to(world.device)
    meta = {
        "name": "imagination",
        "bundle": str(Path(bundle).resolve()),
        "obs_type": world.obs_type,
        "action_type": world.action_type,
        "num_envs": num_envs,
        "termination": world.termination,
        "termination_scale": world.termination_scale,
        "precision": world.precision,
        "game": source.env.sim.bundle.meta.get("game"),
    }
    trainer = ActorCriticTrainer(model, source, train, out_dir, meta=meta, resume=resume)
    try:
        return trainer.fit()
    finally:
        source.close()


__all__ = ["ImaginationSource", "action_count", "agent_config", "train_in_imagination"]
