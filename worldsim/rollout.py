"""``worldsim rollout``: generate a few worlds with a simple policy and write them to a video.

    worldsim rollout bundle=runs/quickstart/bundle steps=64 out=video.mp4 policy=sticky num_worlds=4

All worlds step in one batched Simulator call per frame. ``grid=true`` tiles them into one
video (``worldsim.video.grid``); ``grid=false`` writes one file per world (``video_0.mp4``, ...).

Policies (over latent codes or, with ``world.action_type=real``, the game's discrete actions):

- ``random``: a uniform action per world and step;
- ``sticky``: repeat each world's previous action with probability ``stickiness``, else draw a
  new one (longer, more readable motions than ``random``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.actions import POLICIES
from worldsim.config import ConfigError, require, world_options
from worldsim.data.clips import resize_frames
from worldsim.simulator import Simulator, load_simulator
from worldsim.video import grid as tile
from worldsim.video import save_video


def policy_actions(
    policy: str,
    num_actions: int,
    steps: int,
    worlds: int,
    *,
    stickiness: float = 0.8,
    rng: np.random.Generator,
) -> np.ndarray:
    """Action sequences ``[steps, worlds]`` of a simple policy."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not 0.0 <= stickiness <= 1.0:
        raise ValueError(f"stickiness must lie in [0, 1], got {stickiness}")
    draws = rng.integers(0, num_actions, (steps, worlds))
    if policy == "random":
        return draws
    keep = rng.random((steps, worlds)) < stickiness
    out = draws.copy()
    for t in range(1, steps):
        out[t] = np.where(keep[t], out[t - 1], draws[t])
    return out


@torch.no_grad()
def generate(
    sim: Simulator,
    actions: np.ndarray,
    *,
    context: Any = None,
    action_type: str | None = None,
) -> np.ndarray:
    """Reset ``sim`` and play ``actions [steps, b]``; returns uint8 frames ``[b, steps+1, H, W, 3]``
    (the first frame is the decoded last context frame)."""
    steps, b = actions.shape
    frames = [sim.reset(context, batch=b, decode=True).frames.cpu().numpy()]
    for t in range(steps):
        out = sim.step(torch.as_tensor(actions[t]), decode=True, action_type=action_type)
        frames.append(out.frames.cpu().numpy())
    return np.stack(frames, axis=1)


def write_rollout(
    videos: np.ndarray, out: str | Path, *, fps: float, scale: int, grid: bool
) -> list[Path]:
    """Write ``videos [b, t, H, W, 3]`` as one grid video or one file per world."""
    out = Path(out)
    if grid or len(videos) == 1:
        ncols = math.ceil(math.sqrt(len(videos)))
        return [save_video(tile(list(videos), ncols), out, fps=fps, scale=scale)]
    return [
        save_video(v, out.with_name(f"{out.stem}_{i}{out.suffix}"), fps=fps, scale=scale)
        for i, v in enumerate(videos)
    ]


@torch.no_grad()
def real_vs_model(
    sim: Simulator, frames: Any, actions: Any, *, action_type: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replay a real window in one world, teacher-forced: start ``sim`` from the first
    ``k = sim.context_frames`` of the uint8 frames ``[T, H, W, 3]`` and step with ``actions``
    (``actions[i]`` leads from frame i to i+1; of ``action_type``). Returns the real frames and the
    model's, uint8 ``[T - k + 1, h, w, 3]`` each, from the last context frame on, at the model's
    frame size."""
    frames = resize_frames(torch.as_tensor(np.asarray(frames)), sim.frame_size).numpy()
    k = sim.context_frames
    if len(frames) <= k or len(actions) < len(frames) - 1:
        raise ValueError(f"real_vs_model: need more than {k} frames and one action per transition, got "
                         f"{len(frames)} frames and {len(actions)} actions")
    model = [sim.reset(frames[None, :k], batch=1, decode=True).frames[0].cpu().numpy()]
    for i in range(k - 1, len(frames) - 1):
        out = sim.step(torch.as_tensor(np.asarray(actions[i : i + 1])), decode=True, action_type=action_type)
        model.append(out.frames[0].cpu().numpy())
    return frames[k - 1 :], np.stack(model)


def run(cfg) -> list[Path]:
    """``worldsim rollout``: the composed ``configs/rollout.yaml``."""
    if cfg.steps < 1 or cfg.num_worlds < 1:
        raise ConfigError(
            f"rollout: steps and num_worlds must be >= 1, got {cfg.steps}, {cfg.num_worlds}"
        )
    sim = load_simulator(require(cfg, "bundle"), world_options(cfg), batch=cfg.num_worlds)
    n = sim.num_actions()
    if n is None:
        raise ConfigError(
            f"rollout: world.action_type={sim.options.action_type} is continuous in this bundle; "
            "use world.action_type=latent"
        )
    rng = np.random.default_rng(cfg.seed)
    actions = policy_actions(
        cfg.policy, n, cfg.steps, cfg.num_worlds, stickiness=cfg.stickiness, rng=rng
    )
    videos = generate(sim, actions, context=cfg.context)
    paths = write_rollout(
        videos, cfg.out, fps=cfg.fps or sim.bundle.fps, scale=cfg.scale, grid=cfg.grid
    )
    for p in paths:
        print(f"wrote {p} ({cfg.num_worlds} worlds x {cfg.steps} steps, policy={cfg.policy})")
    return paths


__all__ = ["generate", "policy_actions", "real_vs_model", "run", "write_rollout"]
