"""The real game seen the way an agent of a bundle sees its world model.

``RealGameSource`` runs ``num_envs`` copies of a real game (``envs.make_env``) in a Gymnasium
``SyncVectorEnv`` (auto-reset ``NEXT_STEP``, like the world model's vector env) and converts at
the boundary:

- **observations**: the game's frames are resized to the bundle's frame size
  (``worldsim.data.clips.resize_frames``: area when shrinking) and, for ``obs_type="latents"``,
  encoded with the bundle's autoencoder and normalised with its latent statistics
  (``Simulator.encode``), exactly what the world model's env would hand the agent;
- **actions**: with ``action_type="latent"`` the agent's latent codes become real actions
  through the bundle's binding (``ActionBinding.code_to_action``; a code the binding never saw
  plays real action 0, the Simulator's own convention); with ``action_type="real"`` the agent's
  actions are the game's own. ``step(..., real=True)`` takes real actions directly (the random
  baseline).

It is a :class:`~agents.trainer.RolloutSource`, so the same trainer trains the same actor-critic
on real rollouts (``train_in_real_game``: n-step returns, rollouts continue across updates), the
baseline of "trained in the real game for the same number of gradient updates".

einops legend: b worlds, H W frame size, c h w latent shape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.actor_critic import ActorCritic
from agents.imagination import action_count, agent_config
from agents.trainer import ActorCriticTrainer, TrainConfig
from envs import BUILTIN_GAMES, make_env
from worldsim.actions import ACTION_TYPES, box_from_unit
from worldsim.bundle import Bundle, load_bundle
from worldsim.data.clips import resize_frames
from worldsim.simulator import Simulator
from worldsim.world_options import OBS_TYPES, WorldOptions


def resolve_game(bundle: Bundle, env_id: str | None) -> str:
    """The real game of a bundle: ``env_id`` when given, else the bundle's ``meta["game"]`` when
    that names a known game, else the default built-in game."""
    if env_id:
        return env_id
    game = bundle.meta.get("game")
    if game and (game in gym.registry or game.startswith("ALE/")):
        return game
    if game and not str(game).startswith("untrained"):
        raise ValueError(
            f"bundle {bundle.path}: meta game {game!r} is not a registered game; pass env=ID"
        )
    return BUILTIN_GAMES[0]


def code_table(bundle: Bundle) -> np.ndarray:
    """``[num_codes]`` real action of each latent code (unbound codes -> 0)."""
    if bundle.binding is None:
        raise ValueError(
            f"bundle {bundle.path} has no binding.json: its latent action codes cannot be played "
            "in the real game (record the game with actions to fit a binding)"
        )
    table = bundle.binding.code_to_action
    return np.where(table < 0, 0, table).astype(np.int64)


class FrameConverter:
    """Real frames ``[b, S, S, 3]`` -> the agent's observations (pixels or latents)."""

    def __init__(self, sim: Simulator, obs_type: str) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        self.sim, self.obs_type = sim, obs_type

    def frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames resized to the bundle's frame size, ``[b, H, W, 3]``."""
        x = torch.as_tensor(np.ascontiguousarray(frames))
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"real frames must be uint8 [b, H, W, 3], got {x.dtype} {tuple(x.shape)}"
            )
        return resize_frames(x, self.sim.frame_size)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = self.frames(frames)
        if self.obs_type == "pixels":
            return x.to(self.sim.device)
        return self.sim.encode(x[:, None])[:, 0].float()  # b 1 H W 3 -> b c h w


class RealGameSource:
    """``num_envs`` real games speaking the agent's language (see the module docstring)."""

    def __init__(
        self,
        bundle: str | os.PathLike | Bundle,
        num_envs: int,
        *,
        env_id: str | None = None,
        obs_type: str = "latents",
        action_type: str = "latent",
        max_episode_steps: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
        loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.bundle = loaded
        self.action_type = action_type
        self.env_id = resolve_game(loaded, env_id)
        self.sim = Simulator(loaded, WorldOptions(device=device))  # its autoencoder encodes frames
        self.convert = FrameConverter(self.sim, obs_type)
        self.codes = torch.as_tensor(code_table(loaded)) if action_type == "latent" else None
        self.num_envs = num_envs
        size = self.sim.frame_size[0]
        kwargs = dict(env_kwargs or {})

        def make() -> gym.Env:
            env = make_env(self.env_id, size=size, **kwargs)
            if max_episode_steps is not None:
                env = gym.wrappers.TimeLimit(env, max_episode_steps)
            return env

        self.envs = gym.vector.SyncVectorEnv([make for _ in range(num_envs)])
        self.real_action_space = space = self.envs.single_action_space
        try:
            self.num_real_actions = action_count(space)  # None: a Box (a Gaussian policy)
        except ValueError as err:
            raise ValueError(f"{self.env_id}: {err}") from None
        self.action_space = space if self.codes is None else gym.spaces.Discrete(len(self.codes))
        self.num_actions = len(self.codes) if self.codes is not None else self.num_real_actions
        self.obs_shape = (
            (*self.sim.frame_size, 3) if obs_type == "pixels" else tuple(self.sim.latent_shape)
        )
        self.last_frames: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> torch.Tensor:
        frames, _ = self.envs.reset(seed=seed)
        self.last_frames = frames
        return self.convert(frames)

    def step(self, actions: torch.Tensor, *, real: bool = False):
        """``actions``: ``[b]`` ints (latent codes, or real actions with ``real=True`` or
        ``action_type="real"``), or ``[b, a]`` in the unit box for a game with a ``Box``."""
        real = real or self.action_type == "real"
        if real and self.num_real_actions is None:
            acts = box_from_unit(torch.as_tensor(actions).cpu(), self.real_action_space)
        else:
            acts = torch.as_tensor(actions).cpu().long()
            n, kind = (self.num_real_actions, "real actions") if real else (self.num_actions, "latent codes")
            if acts.numel() and (int(acts.min()) < 0 or int(acts.max()) >= n):
                raise ValueError(f"{kind} must lie in [0, {n}), got {acts.tolist()}")
            if not real:
                acts = self.codes[acts]
        frames, reward, terminated, truncated, _ = self.envs.step(acts.numpy())
        self.last_frames = frames
        dev = self.sim.device
        return (
            self.convert(frames),
            torch.as_tensor(reward, dtype=torch.float32, device=dev),
            torch.as_tensor(terminated, device=dev),
            torch.as_tensor(truncated, device=dev),
        )

    def close(self) -> None:
        self.envs.close()


def train_in_real_game(
    bundle: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    env_id: str | None = None,
    num_envs: int = 16,
    obs_type: str = "latents",
    action_type: str = "latent",
    train: TrainConfig | None = None,
    network: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    resume: bool = True,
) -> dict[str, Any]:
    """Train the same actor-critic on real rollouts (n-step returns); same files as imagination."""
    train = train or TrainConfig(reset_each_update=False)
    torch.manual_seed(train.seed)
    source = RealGameSource(
        bundle,
        num_envs,
        env_id=env_id,
        obs_type=obs_type,
        action_type=action_type,
        max_episode_steps=max_episode_steps,
        env_kwargs=env_kwargs,
        device=device,
    )
    model = ActorCritic(
        agent_config(obs_type, source.obs_shape, source.action_space, **(network or {}))
    ).to(device)
    meta = {
        "name": "real game",
        "bundle": str(Path(bundle).resolve()),
        "obs_type": obs_type,
        "action_type": action_type,
        "num_envs": num_envs,
        "game": source.env_id,
    }
    trainer = ActorCriticTrainer(model, source, train, out_dir, meta=meta, resume=resume)
    try:
        return trainer.fit()
    finally:
        source.close()


__all__ = ["FrameConverter", "RealGameSource", "code_table", "resolve_game", "train_in_real_game"]
