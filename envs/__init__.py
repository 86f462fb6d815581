"""Games for worldsim: built-in gymnasium games, adapters for other games, and the recorder.

Importing ``envs`` registers the built-in games under ``worldsim/`` ids:

- ``worldsim/Scroller-v0`` (the quickstart default): a camera-following top-down world with
  walls, coins, hazards, enemies and an exit (``envs.scroller.ScrollerEnv``).
- ``worldsim/Paddle-v0``: paddle, ball and bricks (``envs.paddle.PaddleEnv``).

``envs.adapters.make_env`` builds any of these, Atari, Procgen, Crafter or any gymnasium id as
an env with uint8 ``[size, size, 3]`` observations; ``envs.record.record`` fills an
``EpisodeStore`` with episodes played by a policy.
"""

from __future__ import annotations

from envs.builtin import BUILTIN_GAMES, register_builtin_games

register_builtin_games()

from envs.adapters import make_env  # noqa: E402  (after registration, which make_env relies on)

__all__ = ["BUILTIN_GAMES", "make_env", "register_builtin_games"]
