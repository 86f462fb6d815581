"""One way to build any game as an env with uint8 ``[size, size, 3]`` rgb observations.

``make_env(env_id, size=64, frame_skip=1, **kwargs)`` accepts:

- our built-in games (``worldsim/...``): built at ``size`` directly (nearest-neighbour, crisp);
- ALE ids (``ALE/Breakout-v5``): ``obs_type="rgb"``, ALE's own ``frameskip`` set from
  ``frame_skip``, ALE's default sticky actions kept (``repeat_action_probability=0.25``);
- Procgen (``procgen:procgen-coinrun-v0``, ``procgen-coinrun-v0`` through the gym3 interface
  of ``procgen`` / ``procgen-mirror``, or ``procgen_gym/procgen-coinrun-v0`` through the
  Gymnasium port);
- Crafter (``crafter``, optionally ``crafter:reward`` / ``crafter:noreward``);
- any other gymnasium id: its observation when that is already an image, otherwise its
  ``render_mode="rgb_array"`` frames.

Other sizes are reached by area interpolation (block means for integer factors, Pillow's box
filter otherwise). Frame skip repeats an action and sums the rewards, stopping early when the
episode ends. Optional games are imported lazily, with an install hint naming the extra.

Shapes (einops letters): ``h w`` pixels, ``c`` channels.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from envs.builtin import BUILTIN_GAMES
from worldsim.config import InputError

_PROCGEN = re.compile(r"^(?:procgen:)?procgen-([a-z]+)-v\d+$")


class GameError(InputError):
    """A game cannot be built as asked (unknown id, bad argument); names the id or argument."""


class MissingExtraError(GameError, ModuleNotFoundError):
    """A game needs an optional package that is not installed; names the extra to install."""


def _missing(package: str, extra: str, note: str = "") -> MissingExtraError:
    return MissingExtraError(
        f"this game needs the optional package {package!r}: pip install 'worldsim[{extra}]'{note}"
    )


def resize_area(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``[h, w, c]`` to ``[size, size, c]`` by area interpolation.

    Integer down-scales average exact pixel blocks in numpy; other ratios use Pillow's box
    filter (the area average over each output pixel's footprint).
    """
    h, w = frame.shape[:2]
    if (h, w) == (size, size):
        return frame
    if h % size == 0 and w % size == 0:
        fh, fw = h // size, w // size
        blocks = frame.reshape(size, fh, size, fw, frame.shape[2]).mean(axis=(1, 3))
        return np.rint(blocks).astype(np.uint8)
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BOX))


def _as_rgb(frame: Any, where: str) -> np.ndarray:
    """Coerce a frame to uint8 ``[h, w, 3]`` (grey frames repeat their channel)."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an image [H, W, 3], got shape {frame.shape}")
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating) and frame.max() <= 1.0:
            frame = frame * 255.0
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame[:, :, :3])


def is_image_space(space: gym.Space) -> bool:
    """Whether observations of ``space`` are uint8 images ``[h, w]``, ``[h, w, 1|3]``."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in (1, 3)))
    )


class FrameSkip(gym.Wrapper):
    """Repeat each action ``skip`` times and sum the rewards; stops early when the episode ends."""

    def __init__(self, env: gym.Env, skip: int) -> None:
        super().__init__(env)
        if skip < 1:
            raise ValueError(f"frame_skip={skip}: must be >= 1")
        self.skip = skip

    def step(self, action):
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class PixelObservation(gym.Wrapper):
    """Observations become uint8 ``[size, size, 3]`` rgb, from the env's observation
    (``source="obs"``, an image space) or from ``env.render()`` (``source="render"``)."""

    def __init__(self, env: gym.Env, size: int, source: str = "obs") -> None:
        super().__init__(env)
        if source not in ("obs", "render"):
            raise ValueError(f"source={source!r}; allowed: 'obs', 'render'")
        if source == "render" and env.render_mode != "rgb_array":
            raise ValueError(
                f"{env.spec.id if env.spec else env}: source='render' needs render_mode='rgb_array'"
            )
        self.size, self.source = int(size), source
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)

    def _pixels(self, obs: Any) -> np.ndarray:
        frame = self.env.render() if self.source == "render" else obs
        return resize_area(
            _as_rgb(frame, f"{self.env.spec.id if self.env.spec else self.env}"), self.size
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._pixels(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._pixels(obs), reward, terminated, truncated, info


class ProcgenEnv(gym.Env):
    """A Procgen game through the gym3 interface of ``procgen`` (one environment).

    gym3 resets on its own, so the observation returned with ``terminated=True`` is already the
    next level's first frame (as in procgen's own gym interface); ``reset(seed=s)`` starts a
    fresh game whose levels are drawn from ``s``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, game: str, render_mode: str | None = None, **procgen_kwargs: Any) -> None:
        try:  # lazy: procgen is an optional extra (it needs numpy < 2)
            from procgen import ProcgenGym3Env
        except ImportError as err:
            raise _missing(
                "procgen", "procgen", " (procgen needs numpy < 2, so use its own venv)"
            ) from err
        self._factory, self.game, self.kwargs = ProcgenGym3Env, game, procgen_kwargs
        self.render_mode = render_mode
        self._env = None
        self.action_space = spaces.Discrete(15)
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rand_seed = int(self.np_random.integers(2**31 - 1))
        self._env = self._factory(num=1, env_name=self.game, rand_seed=rand_seed, **self.kwargs)
        _, obs, _ = self._env.observe()
        self._last = obs["rgb"][0]
        return self._last, {}

    def step(self, action):
        self._env.act(np.array([int(action)]))
        reward, obs, first = self._env.observe()
        self._last = obs["rgb"][0]
        return self._last, float(reward[0]), bool(first[0]), False, {}

    def render(self):
        return self._last


class CrafterEnv(gym.Env):
    """Crafter (Hafner, 2021) with the Gymnasium API; ``reset(seed=s)`` regenerates the world."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        size: int = 64,
        reward: bool = True,
        length: int = 10000,
        render_mode: str | None = None,
    ) -> None:
        try:  # lazy: crafter is an optional extra
            import crafter
        except ImportError as err:
            raise _missing("crafter", "crafter") from err
        self._crafter, self.size, self.reward, self.length = crafter, size, reward, length
        self.render_mode = render_mode
        self._env = crafter.Env(size=(size, size), reward=reward, length=length)
        self.action_space = spaces.Discrete(int(self._env.action_space.n))
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(2**31 - 1))
        self._env = self._crafter.Env(
            size=(self.size,) * 2, reward=self.reward, length=self.length, seed=world_seed
        )
        self._last = self._env.reset()
        return self._last, {}

    def step(self, action):
        self._last, reward, done, info = self._env.step(int(action))
        terminated = bool(done and info.get("discount", 1.0) == 0.0)
        return self._last, float(reward), terminated, bool(done and not terminated), {}

    def render(self):
        return self._last


def _make_ale(env_id: str, frame_skip: int, kwargs: dict[str, Any]) -> gym.Env:
    try:  # lazy: ale-py is an optional extra (atari)
        import ale_py
    except ImportError as err:
        raise _missing("ale-py", "atari") from err
    gym.register_envs(ale_py)
    for key in ("obs_type", "frameskip"):
        if key in kwargs:
            raise GameError(
                f"make_env({env_id!r}): {key!r} is set by make_env (rgb, frame_skip); drop it"
            )
    return gym.make(env_id, obs_type="rgb", frameskip=frame_skip, **kwargs)


def _make_gym(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        builtin = ", ".join(BUILTIN_GAMES)
        raise GameError(
            f"unknown or unbuildable game id {env_id!r}: {err} Use one of the built-in games "
            f"({builtin}), an ALE id such as 'ALE/Breakout-v5' (extra: worldsim[atari]), "
            "'procgen:procgen-coinrun-v0' (worldsim[procgen]), 'crafter' (worldsim[crafter]), "
            "or a registered gymnasium id (list them: python -c 'import gymnasium; "
            "gymnasium.pprint_registry()')"
        ) from err


def make_env(env_id: str, *, size: int = 64, frame_skip: int = 1, **kwargs: Any) -> gym.Env:
    """Build ``env_id`` with uint8 ``[size, size, 3]`` rgb observations.

    Args:
        env_id: a built-in id, an ``ALE/...`` id, a Procgen id, ``crafter``, or a gymnasium id.
        size: side of the square observation, pixels.
        frame_skip: repeat each action this many times and sum the rewards.
        **kwargs: passed to the game's constructor (``gymnasium.make`` kwargs).
    """
    if not isinstance(size, int) or size < 8:
        raise GameError(f"size={size!r}: must be an integer >= 8")
    if not isinstance(frame_skip, int) or frame_skip < 1:
        raise GameError(f"frame_skip={frame_skip!r}: must be an integer >= 1")
    if env_id in BUILTIN_GAMES:
        env = gym.make(env_id, size=size, **kwargs)
        return FrameSkip(env, frame_skip) if frame_skip > 1 else env
    if env_id.startswith("ALE/"):
        return PixelObservation(_make_ale(env_id, frame_skip, dict(kwargs)), size)
    match = _PROCGEN.match(env_id)
    if match:
        env = ProcgenEnv(match.group(1), **kwargs)
    elif env_id.startswith("procgen_gym/"):
        try:  # lazy: procgen-gym is an optional extra
            import procgen_gym  # noqa: F401  (registers the procgen_gym/ ids)
        except ImportError as err:
            raise _missing("procgen-gym", "procgen", " (or use procgen:procgen-<game>-v0)") from err
        env = _make_gym(env_id, kwargs)
    elif env_id.split(":")[0] == "crafter":
        variant = env_id.partition(":")[2]
        if variant not in ("", "reward", "noreward"):
            raise GameError(
                f"{env_id!r}: crafter variants are 'crafter', 'crafter:reward', 'crafter:noreward'"
            )
        env = CrafterEnv(size=size, reward=variant != "noreward", **kwargs)
    else:
        env = _make_gym(env_id, kwargs)
        if not is_image_space(env.observation_space):
            env.close()
            env = _make_gym(env_id, {**kwargs, "render_mode": "rgb_array"})
            env = FrameSkip(env, frame_skip) if frame_skip > 1 else env
            return PixelObservation(env, size, source="render")
    env = FrameSkip(env, frame_skip) if frame_skip > 1 else env
    return PixelObservation(env, size)
