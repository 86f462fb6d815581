"""Benchmark the latent action model: train for a time budget, then score its codes.

Trains a ``LatentActionModel`` preset on recorded gameplay of a built-in game (recorded on the
fly with ``envs.record.record`` when ``--data`` holds no episodes) with the real actions hidden,
then labels held-out episodes and reports:

- ``nmi``: normalised mutual information between latent codes and real actions,
- ``binding_accuracy@k``: Genie's binding accuracy with k labelled transitions (k = 10, 100,
  1000; mean and std over draws), scored on the other held-out transitions,
- ``perplexity`` / ``codes_used`` of the held-out codes, the training steps and seconds.

With ``--latents DIR`` it trains the latent preset (``quickstart``) on a latent cache written
by the autoencoder stage instead (the last ``--val-episodes`` episodes held out), and also
reports the ceiling of any video-only model on those episodes: a transition whose next frame
is identical to the current one (NOOP, or a move pushed into a wall while already facing it)
carries no trace of its action, so the best possible labelling calls all of them NOOP.

Writes ``benchmarks/results/lam.json``. Usage::

    python benchmarks/bench_lam.py --budget 180 --latents runs/dev/autoencoder/latents
    python benchmarks/bench_lam.py --budget 180              # quickstart_pixel, 64x64 frames
    python benchmarks/bench_lam.py --budget 60 --size 32 --preset quickstart_pixel \
        --override pixel_downsample=2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from worldsim.binding import binding_accuracy_at_k
from worldsim.data import EpisodeStore, frames_to_tensor
from worldsim.data.clips import resize_frames
from worldsim.latent_action import LatentActionModel, config_from_preset, label_transitions
from worldsim.metrics import codebook_usage, normalized_mutual_information

RESULTS = Path(__file__).resolve().parent / "results" / "lam.json"


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override expects key=value, got {item!r}")
        out[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    return out


def load_episodes(data: Path, game: str, episodes: int, max_steps: int, size: int, seed: int):
    """Frames ``[t, 3, size, size]`` in [-1, 1] and actions ``[t - 1]`` of every episode."""
    store = EpisodeStore(data)
    if len(store) < episodes:
        import envs  # noqa: F401  (registers the built-in games)
        from envs.record import record

        record(
            game, episodes, data, policy="sticky", max_steps=max_steps, seed=seed, progress=False
        )
        store = EpisodeStore(data)
    out = []
    for i in range(min(len(store), episodes)):
        ep = store[i]
        if ep.actions is None or ep.actions.ndim != 1:
            raise SystemExit(f"{data}: episode {i} has no discrete actions to score against")
        frames = resize_frames(torch.from_numpy(ep.frames), (size, size))
        out.append((frames_to_tensor(frames), np.asarray(ep.actions, dtype=np.int64)))
    return out


def load_latent_episodes(root: Path):
    """Normalised latents ``[t, c, h, w]`` and actions ``[t - 1]`` of every cached episode."""
    from worldsim.data.latent_store import LatentStore

    store = LatentStore(root)
    out = []
    for i in range(len(store)):
        if not store.has(i, "actions"):
            raise SystemExit(f"{root}: episode {i} has no actions to score against")
        z = store.normalize(torch.from_numpy(store.read_latents(i)).float())
        out.append((z, store.read_steps(i)["actions"].astype(np.int64)))
    return out


def ceiling(test, num_actions: int, seed: int) -> dict:
    """Scores of the best video-only labelling: real action where the frame changed, else NOOP."""
    codes, actions, stills = [], [], []
    for x, a in test:
        still = (x[1:] - x[:-1]).abs().flatten(1).amax(1).numpy() < 1e-3
        codes.append(np.where(still, 0, a))
        actions.append(a)
        stills.append(still)
    codes, actions, still = map(np.concatenate, (codes, actions, stills))
    acc = binding_accuracy_at_k(codes, actions, 100, num_actions, num_actions, seed=seed)
    return {
        "nmi": round(normalized_mutual_information(codes, actions), 4),
        "binding_accuracy@100": round(acc["mean"], 4),
        "moves_without_change": round(float(still[actions != 0].mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None, help="quickstart_pixel, or quickstart on latents")
    parser.add_argument("--override", action="append", default=[], help="config field=value")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds")
    parser.add_argument("--latents", type=Path, default=None, help="latent cache to train on")
    parser.add_argument("--val-episodes", type=int, default=4)
    parser.add_argument("--data", type=Path, default=Path("/tmp/worldsim_bench_lam"))
    parser.add_argument("--game", default="worldsim/Scroller-v0")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clip", type=int, default=None, help="frames per clip (context + 1)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    overrides = _parse_overrides(args.override)
    if args.latents is not None:
        episodes = load_latent_episodes(args.latents)
        c, h, w = episodes[0][0].shape[1:]
        fields = dict(in_channels=c, frame_height=h, frame_width=w)
        cfg = config_from_preset(args.preset or "quickstart", **fields, **overrides)
        if cfg.input != "latent":
            raise SystemExit("--latents needs a latent preset (e.g. quickstart)")
        n_test = args.val_episodes
    else:
        cfg = config_from_preset(
            args.preset or "quickstart_pixel",
            frame_height=args.size,
            frame_width=args.size,
            **overrides,
        )
        if cfg.input != "pixel":
            raise SystemExit("without --latents bench_lam trains on pixels (quickstart_pixel)")
        episodes = load_episodes(
            args.data, args.game, args.episodes, args.max_steps, args.size, args.seed
        )
        n_test = max(len(episodes) // 5, 1)
    train, test = episodes[:-n_test], episodes[-n_test:]
    clip = cfg.context + 1 if args.clip is None else args.clip
    train = [(x, a) for x, a in train if x.shape[0] >= clip]

    model = LatentActionModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    start, steps = time.time(), 0
    while time.time() - start < args.budget:
        clips = []
        for _ in range(args.batch):
            x, _ = train[rng.integers(len(train))]
            s = rng.integers(0, x.shape[0] - clip + 1)
            clips.append(x[s : s + clip])
        out = model.loss(torch.stack(clips))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        steps += 1
        if steps % 100 == 0:
            print(
                f"{time.time() - start:7.1f}s step {steps} recon {float(out['recon']):.4f} "
                f"usage {model.codebook_usage()}",
                flush=True,
            )
    seconds = time.time() - start

    model.eval()
    codes = np.concatenate(label_transitions(model, [x for x, _ in test]))
    actions = np.concatenate([a for _, a in test])
    usage = codebook_usage(codes, cfg.num_codes)
    result = {
        "preset": args.preset or ("quickstart" if args.latents else "quickstart_pixel"),
        "data": str(args.latents or args.data),
        "config": cfg.to_dict(),
        "game": args.game,
        "train_episodes": len(train),
        "test_transitions": int(codes.size),
        "steps": steps,
        "seconds": round(seconds, 1),
        "transitions_per_second": round(steps * args.batch * (clip - 1) / seconds, 1),
        "threads": args.threads,
        "nmi": round(normalized_mutual_information(codes, actions), 4),
        "perplexity": round(usage["perplexity"], 3),
        "codes_used": usage["codes_used"],
        "train_codebook": model.codebook_usage(),
    }
    num_actions = int(max(a.max() for _, a in episodes)) + 1
    for k in (10, 100, 1000):
        if k < codes.size:
            acc = binding_accuracy_at_k(codes, actions, k, cfg.num_codes, num_actions, draws=10)
            result[f"binding_accuracy@{k}"] = {
                "mean": round(acc["mean"], 4),
                "std": round(acc["std"], 4),
            }
    result["ceiling"] = ceiling(test, num_actions, args.seed)
    result["load"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
