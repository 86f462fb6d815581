"""Scroller: a top-down, camera-following collect-the-coins game larger than the screen."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.canvas import (
    NearestResize,
    bordered,
    colour,
    paste,
    render_tilemap,
    solid,
    sprite_from_ascii,
)

BASE = 64  # base resolution of the screen, pixels
TILE = 8  # tile side, pixels
SPEED = 4  # agent movement per step, pixels
BUMP = 2  # camera shake, pixels, when a move is pushed into a wall
ENEMY_SPEED = 2  # enemy movement per step, pixels

# Semantic tile kinds in ``ScrollerEnv.grid``.
FLOOR, WALL, COIN, HAZARD, GOAL = 0, 1, 2, 3, 4
ACTION_MEANINGS = ("NOOP", "UP", "DOWN", "LEFT", "RIGHT")
_MOVES = ((0, 0), (0, -SPEED), (0, SPEED), (-SPEED, 0), (SPEED, 0))  # (dx, dy) per action


def _tiles() -> np.ndarray:
    """Visual tiles ``[k, s, s, 3]`` indexed by ``2 * kind + checker parity``."""
    floors = (solid(TILE, "floor"), solid(TILE, "floor_alt"))
    out = []
    for kind in (FLOOR, WALL, COIN, HAZARD, GOAL):
        for parity in (0, 1):
            if kind == FLOOR:
                tile = floors[parity].copy()
            elif kind == WALL:
                tile = bordered(TILE, "wall", "wall_edge")
            elif kind == COIN:
                tile = floors[parity].copy()
                tile[2:6, 2:6] = solid(4, "coin")
            elif kind == HAZARD:
                tile = bordered(TILE, "hazard", "hazard_dark")
                tile[3:5, 1:7] = colour("hazard_dark")  # a dark bar: reads as "danger" at any size
            else:
                tile = bordered(TILE, "goal", "goal_dark", width=2)
            out.append(tile)
    return np.stack(out)


_EYES = {  # rows 1-5 of the agent: where the eyes look after each action
    "NOOP": ["aaaaaaaa", "aaaaaaaa", "aaeaaeaa", "aaeaaeaa", "aaaaaaaa"],
    "UP": ["aeaaaaea", "aeaaaaea", "aaaaaaaa", "aaaaaaaa", "aaaaaaaa"],
    "DOWN": ["aaaaaaaa", "aaaaaaaa", "aaaaaaaa", "aeaaaaea", "aeaaaaea"],
    "LEFT": ["aaaaaaaa", "eeaaaaaa", "aaaaaaaa", "aaaaaaaa", "eeaaaaaa"],
    "RIGHT": ["aaaaaaaa", "aaaaaaee", "aaaaaaaa", "aaaaaaaa", "aaaaaaee"],
}
_LEGS = (["aaaaaaaa", ".aa..aa."], ["aaaaaaaa", "aa....aa"])  # rows 6-7: standing, stride


def _agent_sprites() -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The agent, ``sprites[phase][action]``: the eyes look the way the last action pushed (and
    sit in the middle after NOOP), and the legs alternate between standing (phase 0) and
    striding (phase 1) on every move, blocked or not. So every action leaves a trace in the next
    frame: a move changes the legs even when it repeats a push into a wall."""
    legend = {"a": "agent", "e": "agent_eye"}
    return [
        [sprite_from_ascii([".aaaaaa.", *_EYES[name], *legs], legend) for name in ACTION_MEANINGS]
        for legs in _LEGS
    ]


_ENEMY = sprite_from_ascii(
    [
        "..mmmm..",
        ".mmmmmm.",
        "mmwmmwmm",
        "mmmmmmmm",
        "mmmmmmmm",
        "mmmmmmmm",
        "m.m..m.m",
        "........",
    ],
    {"m": "enemy", "w": "white"},
)


def shortest_walks(grid: np.ndarray, start: tuple[int, int], blocked: tuple[int, ...]):
    """Breadth-first search over tiles from ``start``: distances ``[H, W]`` in tile moves (-1
    where unreachable) and ``parent[tile] = (previous tile, action)``."""
    dist = np.full(grid.shape, -1, dtype=np.int64)
    parent: dict[tuple[int, int], tuple[tuple[int, int], int]] = {}
    dist[start] = 0
    queue = deque([start])
    moves = ((-1, 0, 1), (1, 0, 2), (0, -1, 3), (0, 1, 4))  # (drow, dcol, UP/DOWN/LEFT/RIGHT)
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


def path_actions(parent, start: tuple[int, int], goal: tuple[int, int], repeat: int) -> list[int]:
    """The actions of the walk ``start -> goal`` in ``parent`` (each repeated ``repeat`` times)."""
    actions, tile = [], goal
    while tile != start:
        tile, action = parent[tile]
        actions.append(action)
    return [a for a in reversed(actions) for _ in range(repeat)]


class ScrollerEnv(gym.Env):
    """
    ## Description

    A top-down world of `level_tiles x level_tiles` tiles (8 px each, 192x192 px by default),
    three screens wide, seen through a 64x64 camera that follows the agent (clamped at the
    level's edges, where the agent moves on screen instead). Walls block movement, coins give
    reward, red hazard tiles and patrolling purple enemies end the episode, and the green exit
    ends it with a bonus. Every level (walls, hazards, coins, enemies, start and exit) is
    generated from the episode's seed, and the exit is always reachable from the start.

    Made for learning world models: flat colours, a checkered floor so every camera move
    shifts visible edges, moves of 4 px (half a tile) per step, and an agent sprite whose eyes
    show the action of the last step (centred for NOOP, else looking the way it pushed) and whose
    legs alternate between standing and striding on every move; a move pushed into a wall shakes
    the camera 2 px toward the wall (on one push, back on the next). So every action changes the next frame,
    and a blocked push changes it as a whole, not by a few pixels of the sprite.

    ## Action Space

    `Discrete(5)`: 0 NOOP, 1 UP, 2 DOWN, 3 LEFT, 4 RIGHT (4 px per step at 64x64).

    ## Observation Space

    `Box(0, 255, (size, size, 3), uint8)`: the camera view, drawn at 64x64 and resized with
    nearest neighbour to `size`. The game state (`agent_pos`, `goal_pos`, `grid`, `enemies`)
    is available on the unwrapped env for goal-reaching tasks, never in the observation.

    ## Rewards

    +1 per coin, +5 for reaching the exit, -1 for touching a hazard or an enemy, 0 otherwise.

    ## Episode End

    Terminated on reaching the exit or touching a hazard or an enemy. Truncated by the
    registration's time limit (`max_episode_steps=500` for `worldsim/Scroller-v0`).

    ## Arguments

    `gymnasium.make("worldsim/Scroller-v0", size=64, level_tiles=24, num_coins=16,
    num_hazards=10, num_enemies=2, render_mode="rgb_array")`.

    ## Version History

    * v0: initial version (the agent's eyes show the action of the last step, NOOP included;
      its legs stride on every move and a blocked push shakes the camera, so a move always
      changes the frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        render_mode: str | None = None,
        size: int = 64,
        level_tiles: int = 24,
        num_coins: int = 16,
        num_hazards: int = 10,
        num_enemies: int = 2,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r}; allowed: {self.metadata['render_modes']}"
            )
        if not 10 <= level_tiles <= 256:
            raise ValueError(
                f"level_tiles={level_tiles}: must lie in [10, 256] (the screen is 8 tiles)"
            )
        for name, value in (
            ("num_coins", num_coins),
            ("num_hazards", num_hazards),
            ("num_enemies", num_enemies),
        ):
            if value < 0:
                raise ValueError(f"{name}={value}: must be >= 0")
        self.render_mode = render_mode
        self.size = int(size)
        self.level_tiles = int(level_tiles)
        self.num_coins, self.num_hazards, self.num_enemies = num_coins, num_hazards, num_enemies
        self._resize = NearestResize(BASE, self.size)
        self._tiles = _tiles()
        self._agent_sprites = _agent_sprites()
        self.action_space = spaces.Discrete(len(ACTION_MEANINGS))
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self._level_px = self.level_tiles * TILE
        self.grid: np.ndarray | None = None

    # ------------------------------------------------------------------ level generation
    @staticmethod
    def _reachable(grid: np.ndarray, start: tuple[int, int]) -> np.ndarray:
        """Breadth-first distances from ``start`` over non-wall, non-hazard tiles (-1: unreached)."""
        blocked = ((grid == WALL) | (grid == HAZARD)).tolist()  # Python lists: fast scalar access
        dist = [[-1] * grid.shape[1] for _ in range(grid.shape[0])]
        dist[start[0]][start[1]] = 0
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            d = dist[r][c] + 1
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if dist[nr][nc] < 0 and not blocked[nr][nc]:
                    dist[nr][nc] = d
                    queue.append((nr, nc))
        return np.array(dist, dtype=np.int32)

    @staticmethod
    def _path(dist: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
        """Bool mask of one shortest path from the start (distance 0) to ``goal``."""
        mask = np.zeros(dist.shape, dtype=bool)
        r, c = goal
        mask[r, c] = True
        while dist[r, c] > 0:
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if dist[nr, nc] == dist[r, c] - 1:
                    r, c = nr, nc
                    break
            mask[r, c] = True
        return mask

    def _generate(self) -> None:
        n, rng = self.level_tiles, self.np_random
        for _ in range(100):
            grid = np.zeros((n, n), dtype=np.int8)
            grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL
            for _ in range(n * n // 28):  # wall blocks of 1-4 x 1-4 tiles
                h, w = rng.integers(1, 5, size=2)
                r, c = rng.integers(1, n - 1, size=2)
                grid[r : r + h, c : c + w] = WALL
            grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = WALL
            start = (int(rng.integers(2, n - 2)), int(rng.integers(2, n - 2)))
            grid[start[0] - 1 : start[0] + 2, start[1] - 1 : start[1] + 2] = FLOOR
            dist = self._reachable(grid, start)
            if (dist >= 0).sum() >= 0.4 * (n - 2) ** 2:
                break
        far = np.argwhere(dist >= max(1, int(0.6 * dist.max())))
        goal = tuple(int(v) for v in far[rng.integers(len(far))])
        grid[goal] = GOAL
        # Hazards anywhere but near the start and on one shortest start-exit path, so the exit
        # always stays reachable.
        free = np.argwhere((dist >= 3) & (grid == FLOOR) & ~self._path(dist, goal))
        take = rng.permutation(len(free))[: self.num_hazards]
        grid[tuple(free[take].T)] = HAZARD
        dist = self._reachable(grid, start)
        free = np.argwhere((dist >= 1) & (grid == FLOOR))
        take = rng.permutation(len(free))[: self.num_coins]
        grid[tuple(free[take].T)] = COIN
        # Enemies patrol horizontally on reachable floor at least 4 tiles from the start.
        self.enemies: list[list[int]] = []  # [x, y, dx] in level pixels
        spots = np.argwhere((dist >= 4) & (grid != WALL) & (grid != HAZARD) & (grid != GOAL))
        for idx in rng.permutation(len(spots))[: self.num_enemies]:
            r, c = spots[idx]
            self.enemies.append(
                [int(c) * TILE, int(r) * TILE, ENEMY_SPEED * int(rng.choice((-1, 1)))]
            )
        self.grid, self.start_tile, self.goal_tile = grid, start, goal
        parity = (np.add.outer(np.arange(n), np.arange(n)) % 2).astype(np.int64)
        self._level = render_tilemap(grid.astype(np.int64) * 2 + parity, self._tiles)

    # ------------------------------------------------------------------ geometry helpers
    def _tiles_under(self, x: int, y: int, inset: int) -> set[tuple[int, int]]:
        """Tiles (row, col) that an 8x8 box at level pixel ``(x, y)``, shrunk by ``inset``, overlaps."""
        r0, r1 = (y + inset) // TILE, (y + TILE - 1 - inset) // TILE
        c0, c1 = (x + inset) // TILE, (x + TILE - 1 - inset) // TILE
        return {(r0, c0), (r0, c1), (r1, c0), (r1, c1)}

    def _blocked(self, x: int, y: int, solid_kinds: tuple[int, ...] = (WALL,)) -> bool:
        if not (0 <= x <= self._level_px - TILE and 0 <= y <= self._level_px - TILE):
            return True
        return any(self.grid[t] in solid_kinds for t in self._tiles_under(x, y, 0))

    def _clear_tile(self, tile: tuple[int, int]) -> None:
        """Turn a coin back into floor, in the grid and in the pre-rendered level image."""
        r, c = tile
        self.grid[tile] = FLOOR
        self._level[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = self._tiles[(r + c) % 2]

    # ------------------------------------------------------------------ gymnasium API
    @property
    def agent_pos(self) -> tuple[int, int]:
        """The agent's top-left corner ``(x, y)`` in level pixels (64x64 base scale)."""
        return (self._x, self._y)

    @property
    def goal_pos(self) -> tuple[int, int]:
        """The exit tile's top-left corner ``(x, y)`` in level pixels."""
        return (self.goal_tile[1] * TILE, self.goal_tile[0] * TILE)

    @property
    def coins_left(self) -> int:
        return int((self.grid == COIN).sum())

    # --- goal-reaching tasks (agents/goal_tasks.py asks these of the game) ----------------------
    def tiles_within(self, min_moves: int, max_moves: int) -> np.ndarray:
        """``[k, 2]`` (row, col) tiles whose shortest walk from the start tile, avoiding walls,
        hazards and the exit, takes ``min_moves`` to ``max_moves`` tile moves."""
        dist, _ = shortest_walks(self.grid, tuple(self.start_tile), (WALL, HAZARD, GOAL))
        return np.argwhere((dist >= min_moves) & (dist <= max_moves))

    def path_to(self, tile: tuple[int, int]) -> list[int]:
        """Actions that walk the agent from the start tile to ``tile`` (a shortest walk avoiding
        walls, hazards and the exit; each tile move is ``TILE // SPEED`` steps)."""
        start = tuple(int(v) for v in self.start_tile)
        _, parent = shortest_walks(self.grid, start, (WALL, HAZARD, GOAL))
        if tuple(tile) != start and tuple(tile) not in parent:
            raise ValueError(f"tile {tuple(tile)} cannot be walked to from the start {start}")
        return path_actions(parent, start, tuple(tile), TILE // SPEED)

    @staticmethod
    def tile_position(tile: tuple[int, int]) -> tuple[int, int]:
        """The ``(x, y)`` level pixels of the agent standing on ``tile`` (row, col)."""
        return (int(tile[1]) * TILE, int(tile[0]) * TILE)

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._generate()
        self._x, self._y = self.start_tile[1] * TILE, self.start_tile[0] * TILE
        self._facing = 0  # index into the sprites: the last action (NOOP, UP, DOWN, LEFT, RIGHT)
        self._stride = 0  # walk phase: 0 standing, 1 striding; flips on every move
        self._bump = (0, 0)  # camera shake (dx, dy) of this frame, pixels
        self._done = False
        return self._observe(), {}

    def step(self, action):
        if self.grid is None:
            raise RuntimeError("ScrollerEnv.step called before reset()")
        a = int(action)
        if not 0 <= a < len(ACTION_MEANINGS):
            raise ValueError(f"action {action!r} outside Discrete({len(ACTION_MEANINGS)})")
        dx, dy = _MOVES[a]
        self._facing = a
        self._stride = 1 - self._stride if a else 0
        shaken = self._bump != (0, 0)
        self._bump = (0, 0)
        if a and not self._blocked(self._x + dx, self._y + dy):
            self._x, self._y = self._x + dx, self._y + dy
        elif a and not shaken:  # bumped into a wall: the camera shakes toward it (on, off, on...)
            self._bump = (dx * BUMP // SPEED, dy * BUMP // SPEED)
        for enemy in self.enemies:
            nx = enemy[0] + enemy[2]
            if self._blocked(nx, enemy[1], (WALL, HAZARD, GOAL)):
                enemy[2] = -enemy[2]
            else:
                enemy[0] = nx
        reward, terminated = 0.0, False
        for tile in self._tiles_under(self._x, self._y, inset=2):
            kind = self.grid[tile]
            if kind == COIN:
                reward += 1.0
                self._clear_tile(tile)
            elif kind == HAZARD:
                reward, terminated = reward - 1.0, True
            elif kind == GOAL and not terminated:
                reward, terminated = reward + 5.0, True
        for ex, ey, _ in self.enemies:
            if not terminated and abs(ex - self._x) < TILE - 2 and abs(ey - self._y) < TILE - 2:
                reward, terminated = reward - 1.0, True
        return self._observe(), reward, terminated, False, {}

    def _camera(self) -> tuple[int, int]:
        hi = self._level_px - BASE
        cx = min(max(self._x + TILE // 2 - BASE // 2, 0), hi)
        cy = min(max(self._y + TILE // 2 - BASE // 2, 0), hi)
        return cx, cy

    def _observe(self) -> np.ndarray:
        cx, cy = self._camera()
        cx, cy = cx + self._bump[0], cy + self._bump[1]
        view = np.empty((BASE, BASE, 3), dtype=np.uint8)
        view[:] = colour("wall_edge")  # a shaken camera may see past the level's edge
        y0, y1 = max(cy, 0), min(cy + BASE, self._level_px)
        x0, x1 = max(cx, 0), min(cx + BASE, self._level_px)
        view[y0 - cy : y1 - cy, x0 - cx : x1 - cx] = self._level[y0:y1, x0:x1]
        for ex, ey, _ in self.enemies:
            paste(view, *_ENEMY, ey - cy, ex - cx)
        paste(view, *self._agent_sprites[self._stride][self._facing], self._y - cy, self._x - cx)
        return self._resize(view)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn(
                "ScrollerEnv.render() called without render_mode; pass render_mode='rgb_array'"
            )
            return None
        return self._observe()
