"""``worldsim collect``: record a game, or import a folder of gameplay videos, into an EpisodeStore.

Registered as a ``worldsim.commands`` entry point (see pyproject.toml), so that the
``worldsim`` package never imports ``envs``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from worldsim.config import ConfigError, require


def resolve_env_id(env_cfg: DictConfig) -> str:
    """The gymnasium id of an ``env`` config node; ``id: null`` means the default built-in game."""
    from envs import BUILTIN_GAMES

    return env_cfg.id if env_cfg.id is not None else BUILTIN_GAMES[0]


def resolve_policy(name: str):
    """``random``, ``sticky``, or ``package.module:function`` for a callable policy."""
    if name in ("random", "sticky"):
        return name
    module, sep, attr = name.partition(":")
    if not sep:
        raise ConfigError(f"policy={name!r}: expected random, sticky or module.path:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"policy={name!r} cannot be loaded: {err}") from err


def collect(cfg: DictConfig) -> dict:
    """Fill ``cfg.out`` with ``cfg.episodes`` episodes (or import ``cfg.videos``); returns the summary."""
    out = Path(require(cfg, "out"))
    if cfg.videos is not None:
        from worldsim.data.video_import import import_videos

        return import_videos(
            Path(cfg.videos),
            out,
            size=(cfg.env.size, cfg.env.size),
            fps=cfg.fps,
            max_episode_len=cfg.max_episode_len,
            skip_bad=cfg.skip_bad,
        )
    from envs.record import record

    return record(
        resolve_env_id(cfg.env),
        int(cfg.episodes),
        out,
        policy=resolve_policy(cfg.policy),
        num_envs=int(cfg.num_envs),
        seed=int(cfg.seed),
        size=int(cfg.env.size),
        frame_skip=int(cfg.env.frame_skip),
        max_steps=cfg.max_steps,
        sticky_prob=float(cfg.sticky_prob),
        progress=bool(cfg.progress),
        env_kwargs=OmegaConf.to_container(cfg.env.kwargs),
    )
