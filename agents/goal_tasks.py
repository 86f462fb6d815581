"""Goal-reaching tasks on the built-in games, generated from seeded levels.

A :class:`GoalTask` is a level (the game's seed), a start (the level's start, as the game resets
it) and a goal: a tile a few moves away, with the **goal image**, the frame the game renders with
the agent standing on that tile. A planner gets the start frame and the goal image, nothing
else; success (the agent's position within ``tolerance`` pixels of the goal, within
``max_steps`` steps) is judged by :func:`reached` from the game's state, which only the
evaluation reads.

Scroller (``worldsim/Scroller-v0``) is the supported game: the goal tile is drawn among the
tiles the game says lie ``min_tiles`` to ``max_tiles`` moves from its start
(``ScrollerEnv.tiles_within``: shortest walks avoiding walls, hazards and the exit); the goal
image is rendered by walking that path (``ScrollerEnv.path_to``) in a fresh copy of the level
(so coins on the way are gone, as they would be). A game joins ``GOAL_GAMES`` by answering the
same three questions (``tiles_within``, ``path_to``, ``tile_position``). Enemies are off by default
(``num_enemies=0``): they move, so a still goal image could not show them where they will be.
Task ``i`` of a set is a pure function of ``(seed, i)``: the same seed gives the same tasks.
Paddle has no position goal a still frame can state (the ball moves), so it has no task set;
plan for return there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs import make_env

GOAL_GAMES = ("worldsim/Scroller-v0",)


@dataclass(frozen=True)
class GoalTask:
    """One goal-reaching task (see the module docstring). Positions are ``(x, y)`` level pixels
    at the game's 64x64 base scale; tiles are ``(row, col)``."""

    env_id: str
    level_seed: int
    start_tile: tuple[int, int]
    goal_tile: tuple[int, int]
    goal_pos: tuple[int, int]
    path_moves: int  # length of the shortest action sequence from start to goal
    max_steps: int
    size: int
    goal_frame: np.ndarray = field(compare=False, repr=False)  # uint8 [size, size, 3]
    env_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)

    def make_env(self) -> gym.Env:
        """A fresh copy of the task's game; ``reset(seed=self.level_seed)`` gives the start."""
        return make_env(self.env_id, size=self.size, **self.env_kwargs)


def reached(env: gym.Env, task: GoalTask, tolerance: int = 4) -> bool:
    """Whether the game's agent is within ``tolerance`` pixels (each axis) of the goal.
    Evaluation only: planners never call this."""
    x, y = env.unwrapped.agent_pos
    gx, gy = task.goal_pos
    return abs(x - gx) <= tolerance and abs(y - gy) <= tolerance


def _game_task(
    env_id: str,
    rng: np.random.Generator,
    *,
    size: int,
    min_tiles: int,
    max_tiles: int,
    step_factor: float,
    env_kwargs: dict[str, Any],
) -> GoalTask:
    """One task: the game says which tiles lie ``min_tiles``-``max_tiles`` moves from its start
    (``tiles_within``), how to walk there (``path_to``) and where that is (``tile_position``)."""
    env = make_env(env_id, size=size, **env_kwargs)
    try:
        for _ in range(100):
            level_seed = int(rng.integers(2**31 - 1))
            env.reset(seed=level_seed)
            game = env.unwrapped
            options = game.tiles_within(min_tiles, max_tiles)
            if len(options):
                break
        else:
            raise RuntimeError(
                f"no level with a goal {min_tiles}-{max_tiles} tiles away in 100 tries"
            )
        start = tuple(int(v) for v in game.start_tile)
        goal = tuple(int(v) for v in options[rng.integers(len(options))])
        actions = game.path_to(goal)
        frame = None
        for a in actions:
            frame, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                raise RuntimeError(f"level {level_seed}: the path to {goal} ended the episode")
        goal_pos = game.tile_position(goal)
        if tuple(game.agent_pos) != goal_pos:
            raise RuntimeError(
                f"level {level_seed}: walked to {game.agent_pos}, expected {goal_pos}"
            )
    finally:
        env.close()
    return GoalTask(
        env_id=env_id,
        level_seed=level_seed,
        start_tile=start,
        goal_tile=goal,
        goal_pos=goal_pos,
        path_moves=len(actions),
        max_steps=max(len(actions), int(np.ceil(step_factor * len(actions)))),
        size=size,
        goal_frame=np.asarray(frame, dtype=np.uint8).copy(),
        env_kwargs=dict(env_kwargs),
    )


def make_goal_tasks(
    env_id: str = "worldsim/Scroller-v0",
    num_tasks: int = 8,
    seed: int = 0,
    *,
    size: int = 64,
    min_tiles: int = 2,
    max_tiles: int = 3,
    step_factor: float = 3.0,
    env_kwargs: dict[str, Any] | None = None,
) -> list[GoalTask]:
    """``num_tasks`` goal tasks of ``env_id``, deterministic in ``seed``.

    ``max_steps`` of a task is ``step_factor`` times its shortest path (in actions);
    ``env_kwargs`` go to the game (default ``{"num_enemies": 0}``).
    """
    if env_id not in GOAL_GAMES:
        raise ValueError(
            f"no goal tasks for {env_id!r}; games with goal tasks: {list(GOAL_GAMES)} "
            "(plan for predicted return on other games: objective=reward)"
        )
    if num_tasks < 1 or not 1 <= min_tiles <= max_tiles or step_factor < 1:
        raise ValueError(
            f"make_goal_tasks: need num_tasks >= 1, 1 <= min_tiles <= max_tiles, step_factor >= 1; "
            f"got {num_tasks}, {min_tiles}, {max_tiles}, {step_factor}"
        )
    kwargs = {"num_enemies": 0} if env_kwargs is None else dict(env_kwargs)
    return [
        _game_task(
            env_id,
            np.random.default_rng([seed, i]),
            size=size,
            min_tiles=min_tiles,
            max_tiles=max_tiles,
            step_factor=step_factor,
            env_kwargs=kwargs,
        )
        for i in range(num_tasks)
    ]


__all__ = ["GOAL_GAMES", "GoalTask", "make_goal_tasks", "reached"]
