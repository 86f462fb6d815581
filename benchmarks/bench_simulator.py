"""End-to-end Simulator throughput: interactive play and batched worlds.

Measures, on a bundle given by path (or a freshly initialised bundle of a preset: untrained
weights cost the same FLOPs as trained ones):

- interactive: one world, a frame decoded to pixels every step (what the viewer does), as
  frames/s and milliseconds per step;
- batched: B worlds per ``Simulator.step`` without decoding (what agents on latents do), for
  each B in ``--batches``, as imagined frames/s (B x steps / seconds) and ms per batched step;
- batched with pixels: the same with ``decode=True``, the cost of pixel observations.

Usage::

    python benchmarks/bench_simulator.py --preset quickstart --batches 1 16 256 --threads 1
    python benchmarks/bench_simulator.py --bundle runs/quickstart/bundle
    # -> benchmarks/results/simulator.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from worldsim.bundle import untrained_bundle
from worldsim.simulator import load_simulator


def timed_steps(sim, batch: int, steps: int, decode: bool) -> float:
    """Seconds per step of ``batch`` worlds (after one warm-up step)."""
    sim.reset(batch=batch)
    actions = torch.zeros(batch, dtype=torch.long)
    sim.step(actions, decode=decode)
    t0 = time.perf_counter()
    for _ in range(steps):
        sim.step(actions, decode=decode)
    if sim.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bundle", default=None, help="bundle directory (default: untrained preset)"
    )
    parser.add_argument("--preset", default="quickstart", help="preset of the untrained bundle")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--steps", type=int, default=16, help="timed steps per measurement")
    parser.add_argument("--sampler-steps", type=int, default=4, help="Euler steps per frame")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulator.json"))
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.bundle or untrained_bundle(Path(tmp) / "bundle", args.preset)
        sim = load_simulator(path, device=args.device, sampler_steps=args.sampler_steps, seed=0)
    dyn, ae = sim.dynamics.cfg, sim.autoencoder.cfg
    result = {
        "bundle": str(args.bundle) if args.bundle else f"untrained:{args.preset}",
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "frame_size": [ae.frame_height, ae.frame_width],
        "latent_shape": list(sim.latent_shape),
        "tokens_per_frame": dyn.tokens_per_frame,
        "window": sim.window,
        "sampler_steps": args.sampler_steps,
        "heads": sim.heads is not None,
    }
    with torch.inference_mode():
        sec = timed_steps(sim, 1, args.steps, decode=True)
        result["interactive"] = {"fps": 1.0 / sec, "ms_per_step": 1000 * sec}
        result["batched"] = {}
        for b in args.batches:
            steps = max(2, args.steps // max(1, b // 16))  # keep big batches affordable on CPU
            lat = timed_steps(sim, b, steps, decode=False)
            pix = timed_steps(sim, b, steps, decode=True)
            result["batched"][str(b)] = {
                "fps_latents": b / lat,
                "ms_per_step_latents": 1000 * lat,
                "fps_pixels": b / pix,
                "ms_per_step_pixels": 1000 * pix,
                "timed_steps": steps,
            }
            print(f"B={b:4d}: {b / lat:9.1f} frames/s (latents), {b / pix:9.1f} frames/s (pixels)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
