"""Goal-reaching tasks on the built-in games, generated from seeded levels.

A :class:`GoalTask` is a level (the game's seed), a start (the level's start, as the game resets
it) and a goal: a tile a few moves away, with the **goal image**, the frame the game renders with
the agent standing on that tile. A planner gets the start frame and the goal image, nothing
else; success (the agent's position within ``tolerance`` pixels of the goal, within
``max_steps`` steps) is judged by :func:`reached` from the game's state, which only the
evaluation reads.

Scroller (``worldsim/Scroller-v0``) is the supported game: the goal tile is drawn among tiles
whose shortest walk from the start (avoiding walls, hazards and the exit) is ``min_tiles`` to
``max_tiles`` tiles; the goal image is rendered by walking that path in a fresh copy of the
level (so coins on the way are gone, as they would be). Enemies are off by default
(``num_enemies=0``): they move, so a still goal image could not show them where they will be.
Task ``i`` of a set is a pure function of ``(seed, i)``: the same seed gives the same tasks.
Paddle has no position goal a still frame can state (the ball moves), so it has no task set;
plan for return there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

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
        from envs import make_env

        return make_env(self.env_id, size=self.size, **self.env_kwargs)


def reached(env: gym.Env, task: GoalTask, tolerance: int = 4) -> bool:
    """Whether the game's agent is within ``tolerance`` pixels (each axis) of the goal.
    Evaluation only: planners never call this."""
    x, y = env.unwrapped.agent_pos
    gx, gy = task.goal_pos
    return abs(x - gx) <= tolerance and abs(y - gy) <= tolerance


def _walk(grid: np.ndarray, start: tuple[int, int], blocked: tuple[int, ...]):
    """Breadth-first search over tiles: distances ``[H, W]`` (-1 unreached) and parents."""
    dist = np.full(grid.shape, -1, dtype=np.int64)
    parent: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}
    dist[start] = 0
    queue = deque([start])
    # (drow, dcol, action) for UP, DOWN, LEFT, RIGHT (Scroller's action ids 1..4)
    moves = ((-1, 0, 1), (1, 0, 2), (0, -1, 3), (0, 1, 4))
    while queue:
        r, c = queue.popleft()
        for dr, dc, action in moves:
            nxt = (r + dr, c + dc)
            if not (0 <= nxt[0] < grid.shape[0] and 0 <= nxt[1] < grid.shape[1]):
                continue
            if dist[nxt] >= 0 or grid[nxt] in blocked:
                continue
            dist[nxt] = dist[r, c] + 1
            parent[nxt] = ((r, c), action)
            queue.append(nxt)
    return dist, parent


def _path_actions(parent, start: tuple[int, int], goal: tuple[int, int], repeat: int) -> list[int]:
    actions, tile = [], goal
    while tile != start:
        tile, action = parent[tile]
        actions.append(action)
    return [a for a in reversed(actions) for _ in range(repeat)]


def _scroller_task(
    rng: np.random.Generator,
    *,
    size: int,
    min_tiles: int,
    max_tiles: int,
    step_factor: float,
    env_kwargs: dict[str, Any],
) -> GoalTask:
    from envs import make_env
    from envs.scroller import GOAL, HAZARD, SPEED, TILE, WALL

    env_id = "worldsim/Scroller-v0"
    env = make_env(env_id, size=size, **env_kwargs)
    try:
        for _ in range(100):
            level_seed = int(rng.integers(2**31 - 1))
            env.reset(seed=level_seed)
            game = env.unwrapped
            start = tuple(int(v) for v in game.start_tile)
            dist, parent = _walk(game.grid, start, (WALL, HAZARD, GOAL))
            options = np.argwhere((dist >= min_tiles) & (dist <= max_tiles))
            if len(options):
                break
        else:
            raise RuntimeError(
                f"no level with a goal {min_tiles}-{max_tiles} tiles away in 100 tries"
            )
        goal = tuple(int(v) for v in options[rng.integers(len(options))])
        actions = _path_actions(parent, start, goal, TILE // SPEED)
        frame = None
        for a in actions:
            frame, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                raise RuntimeError(f"level {level_seed}: the path to {goal} ended the episode")
        goal_pos = (goal[1] * TILE, goal[0] * TILE)
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
        _scroller_task(
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
