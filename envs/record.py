"""The recorder: play a game with a policy in a few lockstep environments, store the episodes.

``record(env_id, episodes, out, policy="sticky", num_envs=4, seed=0)`` makes sure ``out`` (an
``EpisodeStore``) holds ``episodes`` episodes of ``env_id``. Each finished episode is appended
the moment it ends, as one shard written atomically, so an interrupted run (Ctrl-C, SIGTERM,
even ``kill -9``) keeps every finished episode and loses at most the ones in flight.

Reproducibility: episode ``i`` is reset with a seed derived from ``(seed, i)`` and, for the
``random`` and ``sticky`` policies, drives its actions from a generator derived from the same
pair, so each episode is a pure function of ``(seed, i)``: independent of ``num_envs``, of
which environment slot ran it, and of interruptions. A re-run with the same arguments resumes:
it reads the ``episode_index`` of every stored episode and plays only the missing indices, so
the finished store holds exactly the episodes an uninterrupted run writes (the store's order
may differ, because parallel slots finish in any order; ``episode_index`` is in each
episode's metadata). A callable policy ``policy(obs_batch, rng) -> actions`` sees the batch
of running environments and one generator per lockstep tick; its episodes repeat exactly
when the run's arguments do (and across resumes when it ignores ``rng``).

Shapes (einops letters): ``n`` running environments, ``t`` frames, ``h w c`` pixels.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from envs.adapters import make_env
from worldsim.actions import POLICIES
from worldsim.config import InputError
from worldsim.data import Episode, EpisodeStore

PolicyFn = Callable[[np.ndarray, np.random.Generator], Any]


def episode_seed(seed: int, index: int) -> int:
    """The env reset seed of episode ``index`` of a run with base ``seed`` (a uint32)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def action_space_json(space: gym.Space, meanings: list[str] | None = None) -> dict[str, Any]:
    """Describe an action space as the JSON of docs/architecture.md."""
    if isinstance(space, spaces.Discrete):
        out: dict[str, Any] = {"type": "discrete", "n": int(space.n)}
        if meanings is not None:
            out["meanings"] = list(meanings)
        return out
    if isinstance(space, spaces.Box):
        return {
            "type": "box",
            "shape": list(space.shape),
            "low": space.low.reshape(-1).tolist(),
            "high": space.high.reshape(-1).tolist(),
        }
    raise TypeError(f"record supports Discrete and Box action spaces, got {space}")


def _sample(space: gym.Space, rng: np.random.Generator) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(space.start + rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)


@dataclass
class _Slot:
    """One environment and the episode it is playing."""

    env: gym.Env
    index: int = -1
    rng: np.random.Generator | None = None
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    previous: Any = None

    def start(self, index: int, seed: int) -> None:
        obs, _ = self.env.reset(seed=episode_seed(seed, index))
        self.index, self.rng = index, np.random.default_rng([seed, index, 1])
        self.frames, self.actions, self.rewards = [obs], [], []
        self.terminated, self.truncated, self.previous = [], [], None


def _fps(env_id: str, env: gym.Env, frame_skip: int) -> float:
    if env_id.startswith("ALE/"):
        return 60.0 / frame_skip  # the Atari runs at 60 frames per second
    return float(env.unwrapped.metadata.get("render_fps") or 30) / frame_skip


def _check_resume(store: EpisodeStore, expect: dict[str, Any]) -> set[int]:
    """Indices of the episodes already in ``store``; errors when they come from another run."""
    done: set[int] = set()
    for i in range(len(store)):
        meta = store.metadata(i)
        if "episode_index" not in meta:
            raise InputError(
                f"{store.root} holds episode {i} not written by envs.record (no 'episode_index' "
                "in its metadata); record into an empty or a record-made directory"
            )
        for key, value in expect.items():
            if meta.get(key) != value:
                raise InputError(
                    f"cannot resume into {store.root}: stored episode {i} has {key}="
                    f"{meta.get(key)!r} but this run has {key}={value!r}; use the same "
                    "arguments or another directory"
                )
        done.add(int(meta["episode_index"]))
    return done


def record(
    env_id: str,
    episodes: int,
    out: str | os.PathLike,
    *,
    policy: str | PolicyFn = "random",
    num_envs: int = 4,
    seed: int = 0,
    size: int = 64,
    frame_skip: int = 1,
    max_steps: int | None = None,
    sticky_prob: float = 0.8,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fill ``out`` with ``episodes`` episodes of ``env_id`` played by ``policy``.

    Args:
        env_id: any id ``envs.make_env`` accepts.
        episodes: how many episodes ``out`` should hold when done (a re-run resumes).
        out: ``EpisodeStore`` directory, created once the game is built (an unknown id or a
            missing extra leaves nothing behind).
        policy: ``"random"`` (uniform), ``"sticky"`` (repeat the previous action with
            probability ``sticky_prob``, else uniform: runs of one action), or a callable
            ``policy(obs_batch [n, h, w, c] uint8, rng) -> actions [n]`` (or ``[n, d]``).
        num_envs: environments stepped in lockstep in this process.
        seed: base seed; episode ``i`` depends only on ``(seed, i)`` for the built-in policies.
        size, frame_skip, env_kwargs: passed to ``make_env``.
        max_steps: cap on steps per episode (the last step is marked truncated); ``None``
            keeps the env's own time limit.
        progress: show a rich progress bar (episodes, frames/s).

    Returns:
        Summary: episodes and frames written, seconds, frames written per second, mean
        return and length of the written episodes, the store's episode count and size.
    """
    if isinstance(policy, str) and policy not in POLICIES:
        raise InputError(f"policy={policy!r}: allowed values are {POLICIES} or a callable")
    if not isinstance(policy, str) and not callable(policy):
        raise TypeError(
            f"policy must be one of {POLICIES} or a callable, got {type(policy).__name__}"
        )
    if episodes < 0 or num_envs < 1:
        raise InputError(f"need episodes >= 0 and num_envs >= 1, got {episodes}, {num_envs}")
    if max_steps is not None and max_steps < 1:
        raise InputError(f"max_steps={max_steps}: must be >= 1 or None")
    if not 0.0 <= sticky_prob <= 1.0:
        raise InputError(f"sticky_prob={sticky_prob}: must lie in [0, 1]")
    policy_name = (
        policy if isinstance(policy, str) else getattr(policy, "__qualname__", repr(policy))
    )
    make = functools.partial(make_env, env_id, size=size, frame_skip=frame_skip, **(env_kwargs or {}))
    first_env = None
    if not os.path.exists(out):  # build the game first: a bad id leaves no empty store behind
        first_env = make()
    store = EpisodeStore(out)
    expect = {
        "source": env_id,
        "seed": seed,
        "size": size,
        "frame_skip": frame_skip,
        "max_steps": max_steps,
        "policy": policy_name,
    }
    if policy == "sticky":
        expect["sticky_prob"] = sticky_prob
    done = _check_resume(store, expect)
    todo: list[int] = []
    i = 0
    while len(todo) < episodes - len(store):
        if i not in done:
            todo.append(i)
        i += 1
    summary: dict[str, Any] = {
        "out": str(store.root),
        "env_id": env_id,
        "episodes_written": 0,
        "frames_written": 0,
        "seconds": 0.0,
        "frames_per_second": 0.0,
    }
    if not todo:
        if first_env is not None:
            first_env.close()
        return {**summary, "episodes_in_store": len(store), "bytes_on_disk": store.bytes_on_disk()}

    games = [first_env or make()]
    games += [make() for _ in range(min(num_envs, len(todo)) - 1)]
    slots = [_Slot(game) for game in games]
    space = slots[0].env.action_space
    meanings = getattr(slots[0].env.unwrapped, "get_action_meanings", None)
    metadata = {
        **expect,
        "fps": _fps(env_id, slots[0].env, frame_skip),
        "action_space": action_space_json(space, meanings() if callable(meanings) else None),
    }
    lengths, returns = [], []
    start_time = time.perf_counter()
    bar = _ProgressBar(len(todo), env_id) if progress else None
    previous_handler = _sigterm_as_interrupt()
    try:
        queue = iter(todo)
        active = []
        for slot in slots:
            slot.start(next(queue), seed)
            active.append(slot)
        tick = 0
        while active:
            actions = _act(policy, active, space, sticky_prob, seed, tick)
            tick += 1
            still = []
            for slot, action in zip(active, actions):
                obs, reward, term, trunc, _ = slot.env.step(action)
                slot.previous = action
                trunc = bool(trunc) or (
                    max_steps is not None and len(slot.actions) + 1 >= max_steps
                )
                slot.frames.append(obs)
                slot.actions.append(action)
                slot.rewards.append(float(reward))
                slot.terminated.append(bool(term))
                slot.truncated.append(trunc and not term)
                if not (term or trunc):
                    still.append(slot)
                    continue
                store.append(_episode(slot, metadata, seed))
                lengths.append(len(slot.frames))
                returns.append(float(np.sum(slot.rewards)))
                if bar is not None:
                    bar.advance(len(slot.frames))
                index = next(queue, None)
                if index is not None:
                    slot.start(index, seed)
                    still.append(slot)
            active = still
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if bar is not None:
            bar.stop()
        for slot in slots:
            slot.env.close()
    seconds = time.perf_counter() - start_time
    frames = int(np.sum(lengths))
    return {
        **summary,
        "episodes_written": len(lengths),
        "frames_written": frames,
        "seconds": seconds,
        "frames_per_second": frames / seconds if seconds > 0 else 0.0,
        "mean_length": float(np.mean(lengths)),
        "mean_return": float(np.mean(returns)),
        "episodes_in_store": len(store),
        "bytes_on_disk": store.bytes_on_disk(),
    }


def _act(
    policy: str | PolicyFn,
    active: list[_Slot],
    space: gym.Space,
    sticky_prob: float,
    seed: int,
    tick: int,
) -> list[Any]:
    """One action per running slot."""
    if policy == "random":
        return [_sample(space, s.rng) for s in active]
    if policy == "sticky":
        out = []
        for s in active:
            repeat = s.previous is not None and s.rng.random() < sticky_prob
            out.append(s.previous if repeat else _sample(space, s.rng))
        return out
    obs = np.stack([s.frames[-1] for s in active])  # n h w c
    actions = np.asarray(policy(obs, np.random.default_rng([seed, tick, 2])))
    if actions.shape[:1] != (len(active),):
        raise ValueError(
            f"policy returned actions of shape {actions.shape}, expected [{len(active)}, ...] for a batch of {len(active)}"
        )
    if isinstance(space, spaces.Discrete):
        return [int(a) for a in actions]
    return [np.asarray(a, dtype=space.dtype) for a in actions]


def _episode(slot: _Slot, metadata: dict[str, Any], seed: int) -> Episode:
    actions = np.asarray(slot.actions)
    if actions.dtype.kind == "f":
        actions = actions.reshape(len(slot.actions), -1).astype(np.float32)
    return Episode(
        frames=np.stack(slot.frames),
        actions=actions,
        rewards=np.asarray(slot.rewards, dtype=np.float32),
        terminated=np.asarray(slot.terminated, dtype=bool),
        truncated=np.asarray(slot.truncated, dtype=bool),
        metadata={
            **metadata,
            "episode_index": slot.index,
            "episode_seed": episode_seed(seed, slot.index),
        },
    )


def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so cleanup runs; returns the old handler (or None)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


class _ProgressBar:
    """A rich progress bar: episodes done of the total, frames written per second."""

    def __init__(self, total: int, title: str) -> None:
        self._progress = Progress(
            TextColumn(f"recording {title}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("episodes  {task.fields[fps]:.0f} frames/s"),
            TimeElapsedColumn(),
        )
        self._task = self._progress.add_task("record", total=total, fps=0.0)
        self._frames, self._start = 0, time.perf_counter()
        self._progress.start()

    def advance(self, frames: int) -> None:
        self._frames += frames
        fps = self._frames / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(self._task, advance=1, fps=fps)

    def stop(self) -> None:
        self._progress.stop()


__all__ = ["action_space_json", "episode_seed", "record"]
