"""Simulator throughput against the batch: frames/s, FLOPs per frame and the fraction of peak.

Measures, in one run on one machine, for a bundle given by path (or a freshly initialised bundle
of a preset: untrained weights cost the same FLOPs as trained ones):

- the matrix-multiply peak of the run's precision (best of several large matmuls);
- FLOPs per imagined frame, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
  ``Simulator.step`` of one world (the K denoising passes, the pass that writes the frame to
  the cache and the readout or heads), and the decoder's FLOPs per frame for pixels;
- interactive play: one world, a frame decoded every step (what the viewer does);
- for each batch size B: imagined frames/s without decoding (agents on latents) and with
  decoding (agents on pixels), each the best of ``--repeats`` timed runs, and the model FLOP
  utilisation = FLOPs/frame x frames/s / peak.

The plot beside the JSON shows frames/s and utilisation against B on log axes.

Usage::

    python benchmarks/bench_simulator.py --bundle runs/quickstart/bundle \\
        --out benchmarks/results/simulator_quickstart.json
    python benchmarks/bench_simulator.py --preset quickstart --batches 1 16 256 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_dynamics import matmul_peak  # the script folder is on sys.path
from torch.utils.flop_counter import FlopCounterMode

from worldsim.data.atomic import atomic_write_json
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import PRECISIONS, WorldOptions

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
COMPILE_MODES = ("none", "default", "reduce-overhead")


def _sync(sim) -> None:
    if sim.device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(sim, batch: int, steps: int, decode: bool, repeats: int = 1) -> float:
    """Seconds per step of ``batch`` worlds: the best of ``repeats`` runs of ``steps`` steps,
    after one warm-up step."""
    sim.reset(batch=batch)
    actions = torch.zeros(batch, dtype=torch.long)
    sim.step(actions, decode=decode)
    best = float("inf")
    for _ in range(repeats):
        _sync(sim)
        t0 = time.perf_counter()
        for _ in range(steps):
            sim.step(actions, decode=decode)
        _sync(sim)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def counted_flops(sim) -> tuple[int, int]:
    """FLOPs of one world's step (latents) and of decoding one frame."""
    sim.reset(batch=1)
    actions = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as step:
        sim.step(actions)
    with FlopCounterMode(display=False) as decode:
        sim.decode(sim.latents)
    return int(step.get_total_flops()), int(decode.get_total_flops())


def compile_networks(sim, mode: str) -> None:
    """``torch.compile`` the dynamics' per-token parts (each block's MLP and adaLN, the final
    layer) and the decoder: plain tensor functions, so the KV cache's bookkeeping stays eager.
    ``reduce-overhead`` also replays them as CUDA graphs on a GPU."""
    if mode == "none":
        return
    dyn = sim.dynamics
    for block in dyn.blocks:
        block.mlp = torch.compile(block.mlp, mode=mode, dynamic=True)
        block.adaLN_modulation = torch.compile(block.adaLN_modulation, mode=mode, dynamic=True)
    dyn.final = torch.compile(dyn.final, mode=mode, dynamic=True)
    sim.autoencoder.decoder = torch.compile(sim.autoencoder.decoder, mode=mode, dynamic=True)


def steps_for(batch: int, steps: int) -> int:
    """Timed steps per run: fewer for big batches, so each run lasts about as long."""
    return max(2, steps // max(1, batch // 16))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["batched"]
    bs = [int(b) for b in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("fps_latents", "latents"), ("fps_pixels", "pixels")):
        ax1.plot(bs, [rows[str(b)][key] for b in bs], marker="o", label=label)
        mfu = "mfu_latents" if label == "latents" else "mfu_pixels"
        ax2.plot(bs, [rows[str(b)][mfu] for b in bs], marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="worlds per step (B)", ylabel="imagined frames/s",
            title="Simulator throughput")
    ax2.set(xscale="log", xlabel="worlds per step (B)", ylabel="fraction of the matmul peak",
            title=f"utilisation (peak {result['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"{result['bundle']}: {result['dtype']}, {result['torch_threads']} threads, "
                 f"{result['sampler_steps']} Euler steps, chunk {result['chunk']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bundle", default=None, help="bundle directory (default: untrained preset)"
    )
    parser.add_argument("--preset", default="quickstart", help="preset of the untrained bundle")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    parser.add_argument("--steps", type=int, default=16, help="timed steps per run at B <= 16")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best)")
    parser.add_argument("--sampler-steps", type=int, default=4, help="Euler steps per frame")
    parser.add_argument("--dtype", default="float32", choices=PRECISIONS,
                        help="the networks' and cache's precision (WorldOptions.precision)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="worlds per cached pass (default: the Simulator's for the device)")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="torch.compile mode for the networks' per-token parts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulator.json"))
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    options = WorldOptions(precision=args.dtype, device=args.device,
                           sampler_steps=args.sampler_steps, seed=0, chunk=args.chunk)
    dtype = options.dtype
    with tempfile.TemporaryDirectory() as tmp:
        path = args.bundle or untrained_bundle(Path(tmp) / "bundle", args.preset)
        sim = load_simulator(path, options)
    dyn, ae = sim.dynamics.cfg, sim.autoencoder.cfg
    peak = matmul_peak(device=args.device, dtype=dtype)
    with torch.inference_mode():
        step_flops, decode_flops = counted_flops(sim)
    compile_networks(sim, args.compile)
    result = {
        "bundle": str(args.bundle) if args.bundle else f"untrained:{args.preset}",
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "chunk": sim.chunk,
        "compile": args.compile,
        "frame_size": [ae.frame_height, ae.frame_width],
        "latent_shape": list(sim.latent_shape),
        "tokens_per_frame": dyn.tokens_per_frame,
        "window": sim.window,
        "sampler_steps": args.sampler_steps,
        "heads": sim.heads is not None,
        "matmul_peak_flops": peak,
        "flops_per_frame_latents": step_flops,
        "flops_per_frame_pixels": step_flops + decode_flops,
        "timing": f"best of {args.repeats} runs per measurement, after one warm-up step",
    }
    with torch.inference_mode():
        sec = timed_steps(sim, 1, args.steps, decode=True, repeats=args.repeats)
        result["interactive"] = {"fps": 1.0 / sec, "ms_per_step": 1000 * sec}
        result["batched"] = {}
        for b in args.batches:
            steps = steps_for(b, args.steps)
            lat = timed_steps(sim, b, steps, decode=False, repeats=args.repeats)
            pix = timed_steps(sim, b, steps, decode=True, repeats=args.repeats)
            row = {
                "fps_latents": b / lat,
                "ms_per_step_latents": 1000 * lat,
                "mfu_latents": step_flops * b / lat / peak,
                "fps_pixels": b / pix,
                "ms_per_step_pixels": 1000 * pix,
                "mfu_pixels": (step_flops + decode_flops) * b / pix / peak,
                "timed_steps": steps,
            }
            result["batched"][str(b)] = row
            print(f"B={b:5d}: {row['fps_latents']:8.1f} frames/s latents "
                  f"(MFU {row['mfu_latents']:.2f}), {row['fps_pixels']:8.1f} pixels "
                  f"(MFU {row['mfu_pixels']:.2f})", flush=True)
    rows = result["batched"]
    result["summary"] = {
        f"non_decreasing_{kind}": all(
            rows[str(b2)][f"fps_{kind}"] >= rows[str(b1)][f"fps_{kind}"]
            for b1, b2 in zip(args.batches, args.batches[1:])
        )
        for kind in ("latents", "pixels")
    }
    if "1" in rows and "256" in rows:
        for kind in ("latents", "pixels"):
            result["summary"][f"ratio_256_to_1_{kind}"] = (
                rows["256"][f"fps_{kind}"] / rows["1"][f"fps_{kind}"]
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, indent=2)
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=2))
    return result


if __name__ == "__main__":
    main()
