"""The built-in games' gymnasium ids and their registration under ``worldsim/``."""

from __future__ import annotations

import gymnasium as gym

#: Built-in game ids; the first is the quickstart's default.
BUILTIN_GAMES: tuple[str, ...] = ("worldsim/Scroller-v0", "worldsim/Paddle-v0")

_ENTRY_POINTS = {
    "worldsim/Scroller-v0": ("envs.scroller:ScrollerEnv", 500),
    "worldsim/Paddle-v0": ("envs.paddle:PaddleEnv", 1000),
}


def register_builtin_games() -> None:
    """Register the built-in games with gymnasium (idempotent)."""
    for env_id, (entry_point, max_steps) in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


__all__ = ["BUILTIN_GAMES", "register_builtin_games"]
