"""Speed of the built-in games, recorder throughput, and bytes on disk per 1,000 frames.

Measures, pinned to one CPU core with numpy/torch threads set to 1:

- steps per second of each built-in game under a uniform random policy, resets included,
  both through ``gymnasium.make`` (registered wrappers: time limit, order enforcing, env
  checker) and on the bare ``env.unwrapped``;
- recorder throughput (frames written per second: play + compress + atomic shard write) on
  the default game and on ``ALE/Breakout-v5`` (frame skip 4), with the sticky policy;
- bytes on disk per 1,000 frames at 64x64 in the resulting ``EpisodeStore`` s.

Usage::

    python benchmarks/bench_games.py            # -> benchmarks/results/games.json
    python benchmarks/bench_games.py --quick    # fewer steps and episodes
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from envs.record import record  # noqa: E402


def steps_per_second(env: gym.Env, steps: int, seed: int = 0) -> dict[str, float]:
    """Random-policy steps per second (resets included) and the mean episode length."""
    rng = np.random.default_rng(seed)
    n = env.action_space.n
    actions = rng.integers(n, size=steps)
    env.reset(seed=seed)
    episodes = 0
    start = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            env.reset()
            episodes += 1
    seconds = time.perf_counter() - start
    return {"steps_per_second": steps / seconds, "mean_episode_length": steps / max(episodes, 1)}


def recorder(env_id: str, episodes: int, frame_skip: int, num_envs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "store"
        summary = record(
            env_id,
            episodes,
            out,
            policy="sticky",
            num_envs=num_envs,
            frame_skip=frame_skip,
            progress=False,
        )
        return {
            "episodes": summary["episodes_written"],
            "frames": summary["frames_written"],
            "seconds": round(summary["seconds"], 3),
            "frames_written_per_second": round(summary["frames_per_second"], 1),
            "mean_episode_length": round(summary["mean_length"], 1),
            "bytes_per_1000_frames": round(
                summary["bytes_on_disk"] / summary["frames_written"] * 1000
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and episodes")
    parser.add_argument("--out", default="benchmarks/results/games.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    steps = 5_000 if args.quick else 50_000
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cores_used": 1,
        },
        "games": {},
        "recorder": {},
    }
    for env_id in envs.BUILTIN_GAMES:
        wrapped = steps_per_second(gym.make(env_id), steps)
        bare = steps_per_second(gym.make(env_id).unwrapped, steps)
        results["games"][env_id] = {
            "steps_per_second_wrapped": round(wrapped["steps_per_second"]),
            "steps_per_second_unwrapped": round(bare["steps_per_second"]),
            "random_policy_mean_episode_length": round(wrapped["mean_episode_length"], 1),
        }
        print(env_id, results["games"][env_id], flush=True)
    episodes = 8 if args.quick else 40
    jobs = [(envs.BUILTIN_GAMES[0], episodes, 1), ("ALE/Breakout-v5", max(2, episodes // 8), 4)]
    for env_id, n, frame_skip in jobs:
        results["recorder"][env_id] = {
            "frame_skip": frame_skip,
            "num_envs": 4,
            **recorder(env_id, n, frame_skip, 4),
        }
        print(env_id, results["recorder"][env_id], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
