"""Generation throughput of the dynamics model, its FLOPs per frame, and the fraction of peak.

Measures, in one run on one machine:

- the matrix-multiply peak: the best of several large float32 matmuls (``2 n^3`` FLOPs each);
- FLOPs per generated frame, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
  cached ``sample_next`` (K denoising passes + the pass that writes the frame to the cache);
- frames per second with 1 world and with a batch of worlds, KV-cached, K Euler steps per frame;
- model FLOP utilisation = FLOPs/frame x frames/s / peak.

Usage::

    python benchmarks/bench_dynamics.py --preset quickstart --steps 4 --batch 64 [--threads 1] \
        [--summary RUN_DIR/summary.json --note "command, load"]

On a CPU shared with other busy processes, OpenMP threads that spin-wait for each other can make
small matmuls 100x slower; ``--threads 1`` then gives the honest single-core figures.
    # -> benchmarks/results/dynamics.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from worldsim.dynamics import build_dynamics, count_parameters
from worldsim.flow import sample_next


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best observed float32 matmul throughput in FLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _context(net, batch: int, frames: int, device: str):
    cfg = net.cfg
    z = torch.randn(
        batch, frames, cfg.latent_channels, cfg.latent_height, cfg.latent_width, device=device
    )
    a = torch.randint(0, cfg.num_actions, (batch, frames - 1), device=device)
    return z, a


def flops_per_frame(net, steps: int, device: str) -> int:
    z, a = _context(net, 1, net.cfg.context_window, device)
    cache = net.init_cache(1)
    net.prefill(cache, z, a, 0.1)
    counter = FlopCounterMode(display=False)
    with counter:
        sample_next(net, None, None, a[:, -1], steps=steps, cache=cache)
    return int(counter.get_total_flops())


def frames_per_second(net, batch: int, steps: int, frames: int, device: str) -> float:
    """Frames generated per second (all worlds counted), cache full, after one warm-up frame."""
    z, a = _context(net, batch, net.cfg.context_window, device)
    cache = net.init_cache(batch)
    net.prefill(cache, z, a, 0.1)
    act = a[:, -1]
    sample_next(net, None, None, act, steps=steps, cache=cache)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(frames):
        sample_next(net, None, None, act, steps=steps, cache=cache)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * frames / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--steps", type=int, default=4, help="Euler steps per frame (K)")
    parser.add_argument("--batch", type=int, default=64, help="worlds in the batched measurement")
    parser.add_argument("--frames", type=int, default=16, help="frames timed per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamics.json"))
    parser.add_argument(
        "--summary",
        default=None,
        help="summary.json of a `worldsim train stage=dynamics` run: its rollout figures are "
        "stored next to the throughput under 'real_game'",
    )
    parser.add_argument("--note", default="", help="how the --summary run was made (command, load)")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_dynamics(args.preset).to(args.device).eval()
    peak = matmul_peak(device=args.device)
    flops = flops_per_frame(net, args.steps, args.device)
    result = {
        "preset": args.preset,
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "parameters": count_parameters(net),
        "tokens_per_frame": net.cfg.tokens_per_frame,
        "context_window": net.cfg.context_window,
        "steps_per_frame": args.steps,
        "flops_per_frame": flops,
        "matmul_peak_flops": peak,
    }
    with torch.inference_mode():
        for label, batch in (("single", 1), ("batched", args.batch)):
            fps = frames_per_second(net, batch, args.steps, args.frames, args.device)
            result[f"fps_{label}"] = fps
            result[f"batch_{label}"] = batch
            result[f"mfu_{label}"] = flops * fps / peak
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
        keys = ("rollout_psnr", "random_psnr", "copy_last_psnr", "rollout_ssim", "train_seconds")
        missing = [k for k in keys[:3] if k not in summary]
        if missing:
            raise SystemExit(
                f"--summary {args.summary}: no {missing} (not a dynamics-stage summary?)"
            )
        result["real_game"] = {
            "note": args.note,
            **{k: summary[k] for k in keys if k in summary},
            **{k: v for k, v in summary.items() if k.startswith("delta_psnr_")},
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
