"""Autoencoder throughput, latent-cache size, and (optionally) the quickstart learning curve.

Measures, in one run on one machine:

- encode and decode throughput in frames/s for a preset, at batch 64 and batch 1 (eval mode,
  no grad, float32, best of a few repeats);
- bytes per frame: float16 latents in the cache vs raw uint8 frames, both as arrays and as
  stored on disk (the ``EpisodeStore`` deflates frames; the latent cache stores latents raw);
- with ``--train SECONDS``: a timed training run. Record episodes of the default built-in game
  with sticky random actions (training episodes with one seed, held-out ones with another),
  train the preset with AdamW (warm-up, then cosine decay over the time budget) on random frame
  batches, and log held-out reconstruction PSNR against training seconds.

Usage::

    python benchmarks/bench_autoencoder.py --preset quickstart [--threads 2] [--train 180]
    # -> benchmarks/results/autoencoder.json

On a CPU shared with other busy processes the timings drop several-fold; the JSON records the
load average at the start so such runs can be recognised.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.autoencoder import Autoencoder, config_from_preset
from worldsim.data.episode import frames_to_tensor
from worldsim.data.latent_store import encode_store
from worldsim.data.store import EpisodeStore
from worldsim.metrics import mean_psnr


@torch.no_grad()
def throughput(ae: Autoencoder, batch: int, repeats: int = 5) -> dict[str, float]:
    """Frames per second of ``encode`` and ``decode`` at ``batch`` frames per call."""
    cfg = ae.cfg
    device = next(ae.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.rand(batch, cfg.in_channels, cfg.frame_height, cfg.frame_width, device=device) * 2 - 1
    z = ae.encode(x)  # warm-up
    ae.decode(z)
    out = {}
    for name, fn, arg in (("encode", ae.encode, x), ("decode", ae.decode, z)):
        best = float("inf")
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn(arg)
            sync()
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_fps"] = batch / best
    return out


def record_game(out: Path, episodes: int, seed: int, size: int) -> EpisodeStore:
    """Episodes of the default built-in game played with sticky random actions."""
    import envs
    from envs.record import record

    record(
        envs.BUILTIN_GAMES[0], episodes, out, policy="sticky", seed=seed, size=size, progress=False
    )
    return EpisodeStore(out, create=False)


def stack_frames(store: EpisodeStore) -> torch.Tensor:
    """Every frame of a store as float ``[n, 3, H, W]`` in [-1, 1]."""
    return frames_to_tensor(np.concatenate([store.read_frames(i) for i in range(len(store))]))


def learning_curve(
    ae: Autoencoder,
    train: torch.Tensor,
    val: torch.Tensor,
    seconds: float,
    *,
    batch: int,
    lr: float,
    every: float,
) -> list[dict[str, float]]:
    """Train for ``seconds`` of wall time; held-out PSNR at t=0 and every ``every`` seconds.

    Evaluation time is excluded from the training clock. The learning rate warms up over 20
    steps, then follows a cosine over the time budget down to 5% (time-based, so the schedule
    ends with the budget whatever the machine's speed).
    """
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def evaluate(elapsed: float, step: int) -> dict[str, float]:
        ae.eval()
        rec = torch.cat([ae.decode(ae.encode(v)) for v in val.split(128)])
        ae.train()
        point = {"seconds": round(elapsed, 1), "step": step}
        point["psnr"] = round(mean_psnr((rec + 1) / 2, (val + 1) / 2), 3)
        print(f"  t={point['seconds']:6.1f}s step {step:5d}  held-out PSNR {point['psnr']:.2f} dB")
        return point

    curve = [evaluate(0.0, 0)]
    elapsed, step, next_eval = 0.0, 0, every
    ae.train()
    while elapsed < seconds:
        t0 = time.perf_counter()
        frac = min(elapsed / seconds, 1.0)
        scale = min(1.0, (step + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, len(train), (batch,), generator=gen)
        loss = ae.loss(train[idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed += time.perf_counter() - t0
        if elapsed >= next_eval or elapsed >= seconds:
            curve.append(evaluate(elapsed, step))
            next_eval += every
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (throughput only)")
    parser.add_argument("--train", type=float, default=0.0, help="seconds of training (0: skip)")
    parser.add_argument("--batch", type=int, default=32, help="training batch (frames)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--episodes", type=int, default=40, help="training episodes to record")
    parser.add_argument("--out", default="benchmarks/results/autoencoder.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_from_preset(args.preset)
    ae = Autoencoder(cfg).eval()
    c, h, w = ae.latent_shape(cfg.frame_height, cfg.frame_width)
    raw_bytes = cfg.frame_height * cfg.frame_width * cfg.in_channels
    result: dict[str, Any] = {
        "preset": args.preset,
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in ae.parameters()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "latent_shape": [c, h, w],
        "bytes_per_frame": {
            "raw_uint8": raw_bytes,
            "latent_float16": c * h * w * 2,
            "ratio": raw_bytes / (c * h * w * 2),
        },
    }
    print(f"autoencoder {args.preset}: {result['parameters']:,} parameters, latent {[c, h, w]}")
    result["device"] = args.device
    for batch in (64, 1):
        fps = throughput(ae.to(args.device), batch)
        result[f"batch_{batch}"] = fps
        print(
            f"  batch {batch:3d}: encode {fps['encode_fps']:8.1f} frames/s, "
            f"decode {fps['decode_fps']:8.1f} frames/s"
        )
    b = result["bytes_per_frame"]
    print(f"  bytes/frame: raw {b['raw_uint8']}, latent {b['latent_float16']} ({b['ratio']:.1f}x)")

    ae.to("cpu")
    if args.train > 0:
        with tempfile.TemporaryDirectory() as tmp:
            size = cfg.frame_height
            train_store = record_game(Path(tmp) / "train", args.episodes, seed=0, size=size)
            val_store = record_game(Path(tmp) / "val", 4, seed=10_000, size=size)
            train, val = stack_frames(train_store), stack_frames(val_store)
            print(
                f"  training on {len(train)} frames, held-out {len(val)} frames "
                f"({len(val_store)} episodes)"
            )
            curve = learning_curve(
                ae, train, val, args.train, batch=args.batch, lr=args.lr, every=args.train / 9
            )
            result["learning_curve"] = curve
            result["train"] = {
                "seconds": args.train,
                "batch": args.batch,
                "lr": args.lr,
                "train_frames": len(train),
                "val_frames": len(val),
            }
            cache = encode_store(ae, val_store, Path(tmp) / "latents", progress=False)
            frames = sum(val_store.episode_length(i) for i in range(len(val_store)))
            on_disk = sum(
                p.stat().st_size for p in (Path(tmp) / "latents" / "episodes").glob("*.npz")
            )
            b["latent_on_disk"] = on_disk / frames
            b["frames_on_disk"] = val_store.bytes_on_disk() / frames
            print(
                f"  on disk per frame: latent cache {b['latent_on_disk']:.0f} B, "
                f"episode store {b['frames_on_disk']:.0f} B; {cache.summary().splitlines()[0]}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if "learning_curve" in result:
        plot_curve(result["learning_curve"], out.with_suffix(".png"))


def plot_curve(curve: list[dict[str, Any]], path: Path) -> None:
    """Held-out PSNR against training seconds, with the 30 dB target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["seconds"] for p in curve], [p["psnr"] for p in curve], marker="o")
    ax.axhline(30.0, color="gray", linestyle="--", label="30 dB target")
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
