"""Compare trained worlds on the same held-out episodes: rollout PSNR by horizon against the
copy-last baselines, and how well each dynamics' readout finds the game's events in its own
generated rollouts and in real clips.

Each argument is a quickstart output folder (``<run>/autoencoder``, ``<run>/dynamics``, its
data) or ``LABEL=FOLDER``. Runs built on the same data (same collect, autoencoder and held-out
split) are scored on the very same windows: the held-out episodes come from the dynamics run's
own ``data.val_episodes``, the windows from ``--seed``.

For each run:

- ``rollout``: ``worldsim.evaluation.rollout_metrics`` on ``--windows`` windows (context 2,
  horizons 1 .. 16, ``--steps`` Euler steps): ``rollout_psnr``, ``random_psnr``,
  ``copy_last_psnr``, ``copy_last_decoded_psnr``, ``delta_psnr_<t>``;
- ``readout``: with a readout, ``heads_on_rollouts.readout_scores`` on a held-out pool of
  ``--pool-windows`` windows (context 2, horizon 8, ``--pool-steps`` steps, the imagination
  setting): ``generated`` (read while generating) and ``real`` (the same windows, teacher-forced);
- the run's training steps and seconds.

Usage::

    python benchmarks/bench_world.py base=runs/qs sf=runs/qs_sf --out benchmarks/results/world.json
    # -> world.json and world.png (PSNR by horizon per run, copy-last; readout recall / precision)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

from worldsim.actions import trained_source
from worldsim.data import EpisodeStore
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_store import LatentStore
from worldsim.evaluation import rollout_metrics
from worldsim.heads_on_rollouts import build_pool, readout_scores
from worldsim.training.stages import split_episodes
from worldsim.weights import load_network, read_meta


def _network(directory: Path, name: str):
    if not (directory / f"{name}.json").is_file():
        raise SystemExit(f"error: {directory} holds no {name} network ({name}.json)")
    return load_network(directory, name).eval()


def score_run(run: Path, *, windows: int, steps: int, pool_windows: int, pool_steps: int,
              seed: int) -> dict:
    latents_dir = run / "autoencoder" / "latents"
    ae = _network(run / "autoencoder" / "model", "autoencoder")
    dyn = _network(run / "dynamics" / "model", "dynamics")
    actions = trained_source(read_meta(run / "dynamics" / "model", "dynamics"))
    config = yaml.safe_load((run / "dynamics" / "config.yaml").read_text())
    latents = LatentStore(latents_dir)
    store = EpisodeStore(run / "data", create=False)
    _, val = split_episodes(len(latents), int(config["data"]["val_episodes"]), str(latents_dir))
    summary = json.loads((run / "dynamics" / "summary.json").read_text())
    out: dict = {
        "run": str(run),
        "actions": actions,
        "held_out_episodes": list(val),
        "train_steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "parameters": sum(p.numel() for p in dyn.parameters()),
        "dynamics": {k: config["dynamics"].get(k) for k in ("dim", "depth", "heads", "patch_size")},
        "self_forcing": config.get("self_forcing", 0.0),
    }
    t0 = time.perf_counter()
    out["rollout"] = rollout_metrics(ae, dyn, latents, store, val, action_source=actions, steps=steps,
                                     num_windows=windows, num_codes=dyn.cfg.num_actions, seed=seed)
    if getattr(dyn, "readout", None) is not None:
        pool = build_pool(dyn, latents, val, windows=pool_windows, context=2, horizon=8, action_source=actions,
                          sampler_steps=pool_steps, seed=seed + 1, progress=False)
        out["readout"] = {"generated": readout_scores(pool), "real": readout_scores(pool, dyn)}
    out["score_seconds"] = time.perf_counter() - t0
    return out


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    first = next(iter(results["runs"].values()))["rollout"]
    hs = [int(h) for h in first["rollout_psnr"]]
    for label, run in results["runs"].items():
        ax.plot(hs, list(run["rollout"]["rollout_psnr"].values()), marker="o", label=label)
    ax.plot(hs, list(first["copy_last_psnr"].values()), "k--", label="copy last frame")
    ax.plot(hs, list(first["copy_last_decoded_psnr"].values()), "k:", label="copy last, decoded")
    ax.set_xscale("log", base=2)
    ax.set_xticks(hs, [str(h) for h in hs])
    ax.set_xlabel("frames after the context")
    ax.set_ylabel("PSNR (dB), held-out")
    ax.legend(fontsize=8)
    labels = [label for label, run in results["runs"].items() if "readout" in run]
    for i, label in enumerate(labels):
        r = results["runs"][label]["readout"]
        for j, (which, key) in enumerate((("generated", "recall"), ("generated", "precision"),
                                          ("real", "recall"), ("real", "precision"))):
            bx.bar(j + i * 0.8 / max(len(labels), 1), r[which]["coin"][key], 0.8 / max(len(labels), 1),
                   color=f"C{i}", label=label if j == 0 else None)
    bx.set_xticks(range(4), ["generated\nrecall", "generated\nprecision", "real\nrecall", "real\nprecision"])
    bx.set_ylim(0, 1)
    bx.set_title("readout: coins (reward > 0.5)", fontsize=9)
    if labels:
        bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="quickstart output folders, or LABEL=FOLDER")
    p.add_argument("--windows", type=int, default=128, help="held-out windows for the rollout PSNR")
    p.add_argument("--steps", type=int, default=4, help="Euler steps per frame for the rollout PSNR")
    p.add_argument("--pool-windows", type=int, default=512, help="held-out windows for the readout")
    p.add_argument("--pool-steps", type=int, default=2, help="Euler steps per frame for the readout pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "world.json"))
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    runs = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        label, folder = (label, folder) if sep else (Path(item).name, item)
        if not (Path(folder) / "dynamics" / "summary.json").is_file():
            raise SystemExit(f"error: {folder} is not a finished quickstart run (no dynamics/summary.json)")
        runs[label] = score_run(Path(folder), windows=args.windows, steps=args.steps,
                                pool_windows=args.pool_windows, pool_steps=args.pool_steps, seed=args.seed)
        r = runs[label]
        line = " ".join(f"{h}:{v:.2f}" for h, v in r["rollout"]["rollout_psnr"].items())
        print(f"{label}: PSNR {line}", flush=True)
    results = {
        "runs": runs,
        "windows": args.windows,
        "steps": args.steps,
        "pool_windows": args.pool_windows,
        "pool_steps": args.pool_steps,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "command": "python benchmarks/bench_world.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results, indent=2)
    plot(results, out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
