"""Agents benchmark: imagination-trained agent vs random vs real-game-trained, and planners.

On a bundle given by path (``--bundle``; without one, a freshly initialised ``tiny`` bundle whose
numbers are meaningless, marked ``"untrained": true`` in the JSON), for each training seed
(``--train-seeds``):

1. trains an actor-critic in imagination for ``--updates`` gradient updates;
2. evaluates it in the real game through the binding, against a random policy, the same agent
   trained in the real game for the same number of updates and, with ``--world-frames N``, the
   same agent trained in the real game on only N frames (the sample-efficiency baseline), each
   over the evaluation ``--seeds``;

then runs the CEM (or ``--planner mppi``; ``none`` skips it) planner on the goal tasks: success
rate, budget, seconds per action.

The output is a results book, one entry per game id, so that runs on several games share one
file: each return is ``{mean, std, n}`` over training seeds (of each seed's mean over evaluation
seeds), ``per_seed`` keeps the per-seed figures, ``world`` the held-out figures of the bundle's
world (from the quickstart's ``metrics.json`` beside the bundle, or ``--world-metrics``), and
``world_seconds``, ``agent_seconds_per_seed``, ``machine`` and ``command`` say what it cost and
how to rerun it. A bar plot of every game's returns lands beside the JSON.

Usage::

    python benchmarks/bench_agents.py --bundle runs/quickstart/bundle --updates 1000 \
        --train-seeds 0 1 2 --world-frames 20947 --planner none
    python benchmarks/bench_agents.py --updates 5 --out /tmp/agents.json   # smoke run
    # the agent=medium settings (16 worlds, bf16 world model, lr 1e-3, termination_scale 3):
    python benchmarks/bench_agents.py --bundle runs/big/dm_out/bundle_ad --num-envs 16 \
        --lr 1e-3 --termination-scale 3 --precision bfloat16 --out /tmp/agents_medium.json
    # -> docs/results/agents.json (+ agents.png): {game id: {imagination_return, real_return,
    #    random_return, sample_matched_return, world, ...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from agents.evaluate import compare_in_real_game, summarize
from agents.imagination import train_in_imagination
from agents.plan_eval import evaluate_planner
from agents.trainer import TrainConfig
from worldsim.actions import ACTION_TYPES
from worldsim.data.atomic import atomic_write_json
from worldsim.testing import untrained_bundle
from worldsim.world_options import PRECISIONS, preset

RETURNS = ("imagination_return", "real_return", "random_return", "sample_matched_return")
HORIZONS = ("1", "2", "4", "8", "16")


def world_figures(metrics_path: str | os.PathLike) -> dict:
    """The held-out figures of the bundle's world from the quickstart's ``metrics.json``:
    rollout and copy-last PSNR by horizon, delta-t-PSNR@4, and the precision and recall of the
    coins the dynamics' readout (else the refitted heads) finds in its own generated rollouts."""
    m = json.loads(Path(metrics_path).read_text())
    by_h = lambda d: {h: d[h] for h in HORIZONS if d and h in d}  # noqa: E731
    heads = m.get("heads_on_rollouts") or {}
    events = heads.get("readout") or heads.get("after") or {}
    coin = events.get("coin") or {}
    return {
        "rollout_psnr": by_h(m.get("rollout_psnr")),
        "copy_last_psnr": by_h(m.get("copy_last_psnr")),
        "delta_psnr_4": m.get("delta_psnr_4"),
        "reward_recall": coin.get("recall"),
        "reward_precision": coin.get("precision"),
        "reward_source": "readout" if "readout" in heads else ("heads" if events else None),
        "metrics": str(metrics_path),
    }


def world_seconds(metrics_path: str | os.PathLike) -> float | None:
    """Wall time of the quickstart that built the world (collect + every training step)."""
    m = json.loads(Path(metrics_path).read_text())
    if m.get("total_seconds") is not None:
        return float(m["total_seconds"])
    parts = [m.get("collect_seconds")] + list((m.get("train_seconds") or {}).values())
    parts = [float(v) for v in parts if v is not None]
    return sum(parts) if parts else None


def read_results(path: Path) -> dict:
    """The results book at ``path``: ``{game id: results}`` (a single game's results, the older
    layout, become that game's entry); any other file is refused, never overwritten."""
    if not path.is_file():
        return {}
    try:
        book = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not JSON ({e}); move it away or pass another --out") from None
    if isinstance(book, dict) and "imagination_return" in book and "game" in book:
        return {book["game"]: book}
    if not isinstance(book, dict) or not all(
        isinstance(v, dict) and "imagination_return" in v for v in book.values()
    ):
        raise SystemExit(f"error: {path} is not an agents results file ({{game id: results}}); "
                         "move it away or pass another --out")
    return book


def plot_returns(book: dict, out: Path) -> Path:
    """Bar chart of each game's returns (mean and std over training seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"imagination_return": "imagination agent", "real_return": "real game, equal updates",
              "sample_matched_return": "real game, world's frames", "random_return": "random"}
    games = sorted(book)
    fig, ax = plt.subplots(figsize=(2.2 + 2.6 * len(games), 3.6))
    width = 0.8 / len(labels)
    for i, (key, label) in enumerate(labels.items()):
        xs = [g + (i - 1.5) * width for g in range(len(games))]
        ys = [book[game].get(key, {}).get("mean", float("nan")) for game in games]
        es = [book[game].get(key, {}).get("std", 0.0) for game in games]
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=label)
    ax.set_xticks(range(len(games)), [g.split("/")[-1] for g in games])
    ax.set_ylabel("return in the real game")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="evaluation seeds (each plays --episodes real episodes)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0],
                   help="training seeds: one imagination agent (and its real-game baselines) each")
    p.add_argument("--world-metrics", default=None,
                   help="the quickstart's metrics.json of the bundle's world (default: beside the "
                   "bundle folder, when there): its held-out figures go under `world`")
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
    if args.world_metrics is None and args.bundle is not None:
        beside = Path(args.bundle).parent / "metrics.json"
        args.world_metrics = str(beside) if beside.is_file() else None

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    bundle = args.bundle
    untrained = bundle is None
    if untrained:
        bundle = untrained_bundle(
            work / "bundle", "tiny", action_space={"type": "discrete", "n": 5}
        )
    matched = None
    if args.world_frames is not None:
        matched = max(1, -(-args.world_frames // (args.num_envs * args.horizon)))
    per_seed, seconds = [], []
    for seed in args.train_seeds:
        seed_dir = work / f"seed{seed}"
        t0 = time.perf_counter()
        train = TrainConfig(
            updates=args.updates,
            horizon=args.horizon,
            entropy=args.entropy,
            lr=args.lr,
            seed=seed,
            progress=False,
            log_every=max(1, args.updates // 20),
            ckpt_every=max(1, args.updates // 4),
        )
        train_in_imagination(
            bundle,
            seed_dir / "agent",
            num_envs=args.num_envs,
            options=preset("imagination", obs_type=args.obs_type, action_type=args.action_type,
                           sampler_steps=args.sampler_steps, termination_scale=args.termination_scale,
                           precision=args.precision),
            train=train,
        )
        imagination_s = time.perf_counter() - t0
        ev = compare_in_real_game(
            seed_dir / "agent",
            seed_dir / "eval",
            bundle=bundle,
            seeds=tuple(args.seeds),
            episodes=args.episodes,
            max_steps=args.max_steps,
            real_num_envs=args.num_envs,
            matched_updates=matched,
        )
        seconds.append(time.perf_counter() - t0)
        ev["imagination_train_seconds"] = imagination_s
        per_seed.append(ev)
        print(f"training seed {seed}: imagination {ev['imagination_return']['mean']:.2f}, "
              f"real game {ev['real_return']['mean']:.2f}, random {ev['random_return']['mean']:.2f}"
              f" ({seconds[-1]:.0f} s)", flush=True)
    pl = None
    if args.planner != "none":
        planner = {
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
            options=preset("planning", action_type=args.action_type, sampler_steps=args.sampler_steps),
        )
    strip = lambda d: {"mean": d["mean"], "std": d["std"], "n": d["n"]}  # noqa: E731

    def over_seeds(key: str) -> dict:
        """{mean, std, n} over training seeds of each seed's mean return over evaluation seeds."""
        return strip(summarize([ev[key]["mean"] for ev in per_seed]))

    game = per_seed[0]["game"]
    results = {
        "untrained": untrained,
        "note": "untrained tiny bundle: the numbers only show the pipeline runs"
        if untrained
        else "",
        "bundle": str(bundle) if not untrained else "untrained tiny",
        "game": game,
        "updates": args.updates,
        "entropy": args.entropy,
        "lr": args.lr,
        "num_envs": args.num_envs,
        "termination_scale": args.termination_scale,
        "precision": args.precision,
        "action_type": args.action_type,
        "train_seeds": list(args.train_seeds),
        "eval_seeds": list(args.seeds),
        "imagination_return": over_seeds("imagination_return"),
        "real_return": over_seeds("real_return"),
        "random_return": over_seeds("random_return"),
        **({"sample_matched_return": over_seeds("sample_matched_return")
            | {"updates": matched, "world_frames": args.world_frames}} if matched else {}),
        "per_seed": [
            {"seed": seed, **{k: strip(ev[k]) for k in RETURNS if k in ev},
             "imagination_train_seconds": ev["imagination_train_seconds"]}
            for seed, ev in zip(args.train_seeds, per_seed)
        ],
        **({"plan_success": strip(pl["plan_success"]),
            "plan_budget": pl["plan_budget"] | {"method": args.planner},
            "plan_seconds_per_action": strip(pl["plan_seconds_per_action"])} if pl else {}),
        **({"world": world_figures(args.world_metrics)} if args.world_metrics else {}),
        **({"world_seconds": world_seconds(args.world_metrics)} if args.world_metrics else {}),
        "agent_seconds_per_seed": summarize(seconds)["mean"],
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "command": "python benchmarks/bench_agents.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    book = read_results(out)
    book[game] = results
    atomic_write_json(out, book, indent=2)
    plot_returns(book, out.with_suffix(".png"))
    print(json.dumps(results, indent=2))
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
