"""Paddle: a Breakout-like game of paddle, ball and procedurally laid-out bricks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.canvas import NearestResize, colour

BASE = 64  # base resolution, pixels
BRICK_W, BRICK_H = 8, 4  # brick cell, pixels (drawn 7x3 with a 1 px gap)
BRICK_TOP = 8  # first brick row's y
COLS = BASE // BRICK_W
PADDLE_W, PADDLE_H, PADDLE_Y = 12, 3, 58
PADDLE_SPEED = 4
BALL = 2  # ball side, pixels
BALL_VY = 2
ACTION_MEANINGS = ("NOOP", "LEFT", "RIGHT")
_PADDLE_RGB, _BALL_RGB = colour("paddle"), colour("ball")
_ROW_COLOURS = ("hazard", "coin", "goal", "agent", "enemy", "wall", "white")


class PaddleEnv(gym.Env):
    """
    ## Description

    A paddle at the bottom of a 64x64 screen keeps a ball in play; the ball breaks the bricks
    it hits and bounces off the screen's top and sides. Where the ball meets the paddle sets its
    new horizontal speed (the edges send it off at a steep angle), so the player can aim. The
    brick wall (how many rows, their colours and which bricks are missing) and the paddle's
    and ball's start are generated from the episode's seed. All motion is in whole pixels
    with integer velocities, so the game is exactly deterministic given seed and actions.

    ## Action Space

    `Discrete(3)`: 0 NOOP, 1 LEFT, 2 RIGHT (the paddle moves 4 px per step at 64x64).

    ## Observation Space

    `Box(0, 255, (size, size, 3), uint8)`: drawn at 64x64 and resized with nearest neighbour
    to `size`. The state (`paddle_x`, `ball_pos`, `ball_vel`, `bricks`) is available on the
    unwrapped env, never in the observation.

    ## Rewards

    Each brick gives 1 + (its row counted from the bottom of the wall) // 2, so upper rows are
    worth more; clearing the wall gives +5; losing the ball gives -1.

    ## Episode End

    Terminated when the ball falls below the paddle (with `lives > 1`, when the last ball
    does; spare balls show as pips in the top-left corner) or the last brick breaks. Truncated by the
    registration's time limit (`max_episode_steps=1000` for `worldsim/Paddle-v0`).

    ## Arguments

    `gymnasium.make("worldsim/Paddle-v0", size=64, min_rows=4, max_rows=6, hole_prob=0.15,
    lives=1, render_mode="rgb_array")`.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        render_mode: str | None = None,
        size: int = 64,
        min_rows: int = 4,
        max_rows: int = 6,
        hole_prob: float = 0.15,
        lives: int = 1,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r}; allowed: {self.metadata['render_modes']}"
            )
        if not 1 <= min_rows <= max_rows <= 8:
            raise ValueError(
                f"rows: need 1 <= min_rows <= max_rows <= 8, got {min_rows}, {max_rows}"
            )
        if not 1 <= lives <= 8:
            raise ValueError(f"lives={lives}: must lie in [1, 8]")
        if not 0.0 <= hole_prob < 1.0:
            raise ValueError(f"hole_prob={hole_prob}: must lie in [0, 1)")
        self.render_mode = render_mode
        self.size = int(size)
        self.min_rows, self.max_rows, self.hole_prob = min_rows, max_rows, hole_prob
        self.max_lives = int(lives)
        self._resize = NearestResize(BASE, self.size)
        self.action_space = spaces.Discrete(len(ACTION_MEANINGS))
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.bricks: np.ndarray | None = None  # bool [rows, COLS]

    # ------------------------------------------------------------------ state
    @property
    def paddle_x(self) -> int:
        """The paddle's left edge, pixels (64x64 base scale)."""
        return self._px

    @property
    def ball_pos(self) -> tuple[int, int]:
        """The ball's top-left corner ``(x, y)``, pixels."""
        return (self._bx, self._by)

    @property
    def ball_vel(self) -> tuple[int, int]:
        """The ball's velocity ``(vx, vy)``, pixels per step."""
        return (self._vx, self._vy)

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def _brick_box(self, r: int, c: int) -> tuple[slice, slice]:
        y, x = BRICK_TOP + r * BRICK_H, c * BRICK_W
        return slice(y, y + BRICK_H - 1), slice(x, x + BRICK_W - 1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        rows = int(rng.integers(self.min_rows, self.max_rows + 1))
        self.bricks = rng.random((rows, COLS)) >= self.hole_prob
        if not self.bricks.any():
            self.bricks[rows - 1, int(rng.integers(COLS))] = True
        # Upper rows are worth more: value 1 + (row from the bottom) // 2.
        self.values = 1.0 + (rows - 1 - np.arange(rows)) // 2
        palette = rng.permutation(len(_ROW_COLOURS))
        self._background = np.zeros((BASE, BASE, 3), dtype=np.uint8)
        self._row_colour = [colour(_ROW_COLOURS[palette[r % len(palette)]]) for r in range(rows)]
        for r, c in np.argwhere(self.bricks):
            self._background[self._brick_box(r, c)] = self._row_colour[r]
        self._px = int(rng.integers(2, (BASE - PADDLE_W) // PADDLE_SPEED - 1)) * PADDLE_SPEED
        self.lives = self.max_lives
        self._serve()
        return self._observe(), {}

    def _serve(self) -> None:
        """Put the ball on the paddle's centre, moving up at a random angle."""
        self._bx = self._px + PADDLE_W // 2 - BALL // 2
        self._by = PADDLE_Y - BALL
        self._vx, self._vy = int(self.np_random.choice((-2, -1, 1, 2))), -BALL_VY

    def _hit_bricks(self, x: int, y: int) -> float:
        """Break every brick the ball box at ``(x, y)`` overlaps; return their reward."""
        reward = 0.0
        rows = self.bricks.shape[0]
        for yy in (y, y + BALL - 1):
            r = (yy - BRICK_TOP) // BRICK_H
            if yy < BRICK_TOP or r >= rows:
                continue
            for xx in (x, x + BALL - 1):
                c = xx // BRICK_W
                if self.bricks[r, c]:
                    self.bricks[r, c] = False
                    self._background[self._brick_box(r, c)] = 0
                    reward += float(self.values[r])
        return reward

    def step(self, action):
        if self.bricks is None:
            raise RuntimeError("PaddleEnv.step called before reset()")
        a = int(action)
        if not 0 <= a < len(ACTION_MEANINGS):
            raise ValueError(f"action {action!r} outside Discrete({len(ACTION_MEANINGS)})")
        self._px = min(max(self._px + (0, -PADDLE_SPEED, PADDLE_SPEED)[a], 0), BASE - PADDLE_W)
        reward, terminated = 0.0, False
        # Horizontal move: side walls, then bricks.
        nx = self._bx + self._vx
        if nx < 0 or nx > BASE - BALL:
            nx = -nx if nx < 0 else 2 * (BASE - BALL) - nx
            self._vx = -self._vx
        hit = self._hit_bricks(nx, self._by)
        if hit:
            reward += hit
            nx, self._vx = self._bx, -self._vx
        self._bx = nx
        # Vertical move: ceiling, bricks, paddle, floor.
        ny = self._by + self._vy
        if ny < 0:
            ny, self._vy = -ny, -self._vy
        hit = self._hit_bricks(self._bx, ny)
        if hit:
            reward += hit
            ny, self._vy = self._by, -self._vy
        if (
            self._vy > 0
            and ny + BALL > PADDLE_Y
            and ny < PADDLE_Y + PADDLE_H
            and self._px - BALL < self._bx < self._px + PADDLE_W
        ):
            ny, self._vy = PADDLE_Y - BALL, -BALL_VY
            offset = (self._bx + BALL / 2) - (self._px + PADDLE_W / 2)  # in [-7, 7]
            speed = min(3, 1 + int(abs(offset)) // 2)
            self._vx = speed if offset >= 0 else -speed
        self._by = ny
        if self._by > PADDLE_Y:
            self.lives -= 1
            reward, terminated = reward - 1.0, self.lives == 0
            if not terminated:
                self._serve()
        elif not self.bricks.any():
            reward, terminated = reward + 5.0, True
        return self._observe(), reward, terminated, False, {}

    def _observe(self) -> np.ndarray:
        frame = self._background.copy()
        frame[PADDLE_Y : PADDLE_Y + PADDLE_H, self._px : self._px + PADDLE_W] = _PADDLE_RGB
        if 0 <= self._by < BASE:
            frame[self._by : self._by + BALL, self._bx : self._bx + BALL] = _BALL_RGB
        if self.max_lives > 1:  # spare balls as pips in the top-left corner
            for i in range(self.lives - 1):
                frame[2:4, 2 + 4 * i : 4 + 4 * i] = _BALL_RGB
        return self._resize(frame)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn(
                "PaddleEnv.render() called without render_mode; pass render_mode='rgb_array'"
            )
            return None
        return self._observe()
