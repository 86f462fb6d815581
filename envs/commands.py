"""``worldsim collect``: record a game, or import a folder of gameplay videos, into an EpisodeStore.

Registered as a ``worldsim.commands`` entry point (see pyproject.toml), so that the
``worldsim`` package never imports ``envs``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from envs import BUILTIN_GAMES
from envs.record import record
from worldsim.actions import POLICIES
from worldsim.config import ConfigError, typed
from worldsim.data.video_import import import_videos


def resolve_env_id(env_cfg: DictConfig) -> str:
    """The gymnasium id of an ``env`` config node; ``id: null`` means the default built-in game."""
    return env_cfg.id if env_cfg.id is not None else BUILTIN_GAMES[0]


def resolve_policy(name: str):
    """``random``, ``sticky``, or ``package.module:function`` for a callable policy."""
    if name in POLICIES:
        return name
    module, sep, attr = name.partition(":")
    if not sep:
        raise ConfigError(f"policy={name!r}: expected random, sticky or module.path:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"policy={name!r} cannot be loaded: {err}") from err


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def collect(cfg: DictConfig) -> dict:
    """Fill ``cfg.out`` with ``cfg.episodes`` episodes (or import ``cfg.videos``); returns the summary.

    Every value is checked first (``episodes=abc`` names the key and the type it needs), the
    store folder is created only once there is something to write, and a one-line summary of
    what was written, and where, is printed at the end.
    """
    out = Path(typed(cfg, "out", str))
    size = typed(cfg, "env.size", int, minimum=8)
    progress = typed(cfg, "progress", bool)
    if cfg.videos is not None:
        videos = Path(typed(cfg, "videos", str))
        if not videos.is_dir():
            raise ConfigError(f"videos={videos}: no such folder")
        fps = typed(cfg, "fps", float, optional=True)
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps={fps!r}: expected a number > 0 or null")
        summary = import_videos(
            videos,
            out,
            size=(size, size),
            fps=fps,
            max_episode_len=typed(cfg, "max_episode_len", int, minimum=2),
            skip_bad=typed(cfg, "skip_bad", bool),
            progress=progress,
        )
        bad = f", {len(summary['bad'])} bad (skipped)" if summary["bad"] else ""
        print(
            f"collect: {summary['files']} video files ({len(summary['imported'])} imported, "
            f"{len(summary['skipped'])} already there{bad}): {summary['episodes_written']} "
            f"episodes, {summary['frames_written']} frames written to {out}"
        )
        return summary
    summary = record(
        resolve_env_id(cfg.env),
        typed(cfg, "episodes", int, minimum=0),
        out,
        policy=resolve_policy(typed(cfg, "policy", str)),
        num_envs=typed(cfg, "num_envs", int, minimum=1),
        seed=typed(cfg, "seed", int, minimum=0),
        size=size,
        frame_skip=typed(cfg, "env.frame_skip", int, minimum=1),
        max_steps=typed(cfg, "max_steps", int, minimum=1, optional=True),
        sticky_prob=typed(cfg, "sticky_prob", float, minimum=0.0, maximum=1.0),
        progress=progress,
        env_kwargs=OmegaConf.to_container(cfg.env.kwargs),
    )
    print(
        f"collect: {summary['episodes_written']} episodes, {summary['frames_written']} frames "
        f"written to {out}; it holds {summary['episodes_in_store']} episodes "
        f"({_size(summary['bytes_on_disk'])})"
    )
    return summary
