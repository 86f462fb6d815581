"""Generation throughput of the dynamics model, its FLOPs per frame, and the fraction of peak.

Measures, in one run on one machine:

- the matrix-multiply peak: the best of several large float32 matmuls (``2 n^3`` FLOPs each);
- FLOPs per generated frame, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
  cached ``sample_next`` (K denoising passes + the pass that writes the frame to the cache);
- frames per second with 1 world and with a batch of worlds, KV-cached, K Euler steps per frame;
- model FLOP utilisation = FLOPs/frame x frames/s / peak.

Usage::

    python benchmarks/bench_dynamics.py --preset quickstart --steps 4 --batch 64 [--threads 1] \
        [--summary quickstart=RUN_DIR/summary.json --summary long=RUN2/summary.json --note "..."]

``--summary LABEL=PATH`` (repeatable) stores the held-out rollout figures of `worldsim train
stage=dynamics` runs next to the throughput, and the plot (``dynamics.png`` beside the JSON)
shows their rollout PSNR per horizon against the copy-last and random-action baselines.

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
from worldsim.flow import default_chunk, sample_next


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """Best observed ``dtype`` matmul throughput in FLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
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


def frames_per_second(net, batch: int, steps: int, frames: int, device: str,
                      chunk: int | None = None) -> float:
    """Frames generated per second (all worlds counted), cache full, after one warm-up frame;
    ``chunk``: worlds per cached pass (as the Simulator runs them)."""
    z, a = _context(net, batch, net.cfg.context_window, device)
    cache = net.init_cache(batch)
    net.prefill(cache, z, a, 0.1)
    act = a[:, -1]
    sample_next(net, None, None, act, steps=steps, cache=cache, chunk=chunk)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(frames):
        sample_next(net, None, None, act, steps=steps, cache=cache, chunk=chunk)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * frames / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--steps", type=int, default=4, help="Euler steps per frame (K)")
    parser.add_argument("--batch", type=int, default=64, help="worlds in the batched measurement")
    parser.add_argument("--chunk", type=int, default=None,
                        help="worlds per cached pass (default: the Simulator's for the device)")
    parser.add_argument("--frames", type=int, default=16, help="frames timed per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamics.json"))
    parser.add_argument(
        "--summary",
        action="append",
        default=[],
        help="LABEL=PATH of a `worldsim train stage=dynamics` run's summary.json (repeatable): "
        "its rollout figures are stored next to the throughput under 'runs'",
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
    chunk = args.chunk or default_chunk(args.device)
    result["chunk"] = chunk
    with torch.inference_mode():
        for label, batch in (("single", 1), ("batched", args.batch)):
            fps = frames_per_second(net, batch, args.steps, args.frames, args.device, chunk)
            result[f"fps_{label}"] = fps
            result[f"batch_{label}"] = batch
            result[f"mfu_{label}"] = flops * fps / peak
    runs = {}
    for item in args.summary:
        label, sep, path = item.partition("=")
        label, path = (label, path) if sep else (Path(item).parent.name, item)
        summary = json.loads(Path(path).read_text())
        keys = (
            "rollout_psnr",
            "random_psnr",
            "copy_last_psnr",
            "rollout_ssim",
            "train_seconds",
            "steps",
            "delta_psnr_4",
        )
        missing = [k for k in keys[:3] if k not in summary]
        if missing:
            raise SystemExit(f"--summary {path}: no {missing} (not a dynamics-stage summary?)")
        runs[label] = {"summary": path, **{k: summary[k] for k in keys if k in summary}}
    if runs:
        result["runs"] = runs
        result["note"] = args.note
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result, indent=2))
    return result


def plot(result: dict, path: Path) -> None:
    """Throughput bars (frames/s, MFU) and, given runs, rollout PSNR per horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result.get("runs", {})
    fig, axes = plt.subplots(1, 2 if runs else 1, figsize=(11 if runs else 5, 4), squeeze=False)
    ax = axes[0, 0]
    labels = ["1 world", f"{result['batch_batched']} worlds"]
    fps = [result["fps_single"], result["fps_batched"]]
    bars = ax.bar(labels, fps, color=["tab:blue", "tab:orange"])
    for bar, key in zip(bars, ("mfu_single", "mfu_batched")):
        ax.annotate(
            f"{bar.get_height():.0f} fps\nMFU {result[key]:.1%}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_ylabel("frames/s")
    ax.set_ylim(0, max(fps) * 1.3)
    ax.set_title(
        f"{result['preset']} on {result['device']}, K={result['steps_per_frame']}, "
        f"{result['torch_threads']} threads"
    )
    if runs:
        ax = axes[0, 1]
        for label, run in runs.items():
            h = sorted(run["rollout_psnr"], key=int)
            ax.plot(
                [int(k) for k in h],
                [run["rollout_psnr"][k] for k in h],
                "o-",
                label=f"{label} ({run.get('steps', '?')} steps)",
            )
        first = next(iter(runs.values()))
        for key, style, name in (
            ("copy_last_psnr", "k--", "copy last frame"),
            ("random_psnr", "k:", f"random actions ({next(iter(runs))})"),
        ):
            h = sorted(first[key], key=int)
            ax.plot([int(k) for k in h], [first[key][k] for k in h], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("horizon (frames)")
        ax.set_ylabel("rollout PSNR (dB)")
        ax.set_title("held-out rollouts, teacher-forced latent actions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
