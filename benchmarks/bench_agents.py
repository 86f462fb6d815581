"""Agents benchmark: imagination-trained agent vs random vs real-game-trained, and planners.

On a bundle given by path (``--bundle``; without one, a freshly initialised ``tiny`` bundle whose
numbers are meaningless, marked ``"untrained": true`` in the JSON):

1. trains an actor-critic in imagination for ``--updates`` gradient updates;
2. evaluates it in the real game through the binding, against a random policy and the same agent
   trained in the real game for the same number of updates (mean and std over ``--seeds``);
3. runs the CEM (or ``--planner mppi``) planner on the goal tasks: success rate, budget, seconds
   per action.

Usage::

    python benchmarks/bench_agents.py --bundle runs/quickstart/bundle --updates 1000
    python benchmarks/bench_agents.py --updates 5 --out /tmp/agents.json   # smoke run
    # the medium configuration of docs/agents.md (16 worlds, bf16 world model, lr 1e-3):
    python benchmarks/bench_agents.py --bundle runs/big/dm_out/bundle_ad --num-envs 16 \
        --lr 1e-3 --termination-scale 3 --precision bfloat16 --out /tmp/agents_medium.json
    # -> docs/results/agents.json (keys: imagination_return, real_return, random_return,
    #    plan_success, plan_budget, plan_seconds_per_action; each figure a {mean, std})
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from agents.evaluate import compare_in_real_game
from agents.imagination import train_in_imagination
from agents.plan_eval import evaluate_planner
from agents.trainer import TrainConfig
from worldsim.bundle import untrained_bundle
from worldsim.data.atomic import atomic_write_json
from worldsim.env import PRECISIONS
from worldsim.simulator import ACTION_TYPES


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--bundle", default=None, help="bundle directory (default: an untrained tiny one)"
    )
    p.add_argument("--out", default="docs/results/agents.json")
    p.add_argument("--work", default=None, help="directory for checkpoints (default: a temp dir)")
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--entropy", type=float, default=TrainConfig.entropy, help="entropy bonus")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="Adam learning rate")
    p.add_argument(
        "--termination-scale",
        type=float,
        default=1.0,
        help="factor on the world model's termination probability (> 1: pessimism)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=tuple(PRECISIONS),
        help="the world model's networks during imagination (bfloat16: ~1.8x on avx512_bf16 CPUs)",
    )
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--obs-type", default="latents", choices=("latents", "pixels"))
    p.add_argument(
        "--action-type",
        default="real",
        choices=ACTION_TYPES,
        help="what the agent and the planner pick: the game's actions (played by the model as "
        "their most frequent code) or latent codes",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--planner", default="cem", choices=("cem", "mppi", "none"),
                   help="planner run on the goal tasks (none: skip planning)")
    p.add_argument("--world-frames", type=int, default=None,
                   help="real frames the world model was trained on: also train the real-game agent "
                   "on that many frames (the sample-efficiency baseline, sample_matched_return)")
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--plan-horizon", type=int, default=8)
    p.add_argument("--replan-every", type=int, default=2)
    p.add_argument("--num-tasks", type=int, default=8)
    p.add_argument("--sampler-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    bundle = args.bundle
    untrained = bundle is None
    if untrained:
        bundle = untrained_bundle(
            work / "bundle", "tiny", action_space={"type": "discrete", "n": 5}
        )
    t0 = time.perf_counter()
    train = TrainConfig(
        updates=args.updates,
        horizon=args.horizon,
        entropy=args.entropy,
        lr=args.lr,
        progress=False,
        log_every=max(1, args.updates // 20),
        ckpt_every=max(1, args.updates // 4),
    )
    train_in_imagination(
        bundle,
        work / "agent",
        num_envs=args.num_envs,
        obs_type=args.obs_type,
        action_type=args.action_type,
        train=train,
        sampler_steps=args.sampler_steps,
        termination_scale=args.termination_scale,
        precision=args.precision,
    )
    train_s = time.perf_counter() - t0
    ev = compare_in_real_game(
        work / "agent",
        work / "eval",
        bundle=bundle,
        seeds=tuple(args.seeds),
        episodes=args.episodes,
        max_steps=args.max_steps,
        real_num_envs=args.num_envs,
        matched_updates=None if args.world_frames is None
        else max(1, -(-args.world_frames // (args.num_envs * args.horizon))),
    )
    pl = None
    if args.planner != "none":
        planner = {
            "action_type": args.action_type,
            "method": args.planner,
            "population": args.population,
            "iterations": args.iterations,
            "horizon": args.plan_horizon,
            "replan_every": args.replan_every,
        }
        pl = evaluate_planner(
            bundle,
            planner=planner,
            seeds=tuple(args.seeds),
            num_tasks=args.num_tasks,
            sampler_steps=args.sampler_steps,
        )
    strip = lambda d: {"mean": d["mean"], "std": d["std"], "n": d["n"]}  # noqa: E731
    results = {
        "untrained": untrained,
        "note": "untrained tiny bundle: the numbers only show the pipeline runs"
        if untrained
        else "",
        "bundle": str(bundle) if not untrained else "untrained tiny",
        "game": ev["game"],
        "updates": args.updates,
        "entropy": args.entropy,
        "lr": args.lr,
        "num_envs": args.num_envs,
        "termination_scale": args.termination_scale,
        "precision": args.precision,
        "action_type": args.action_type,
        "imagination_return": strip(ev["imagination_return"]),
        "real_return": strip(ev["real_return"]),
        "random_return": strip(ev["random_return"]),
        **({"sample_matched_return": strip(ev["sample_matched_return"])
            | {"updates": ev["sample_matched_return"]["updates"], "world_frames": args.world_frames}}
           if "sample_matched_return" in ev else {}),
        **({"plan_success": strip(pl["plan_success"]),
            "plan_budget": pl["plan_budget"] | {"method": args.planner},
            "plan_seconds_per_action": strip(pl["plan_seconds_per_action"])} if pl else {}),
        "imagination_train_seconds": train_s,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    atomic_write_json(Path(args.out), results, indent=2)
    print(json.dumps(results, indent=2))
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
