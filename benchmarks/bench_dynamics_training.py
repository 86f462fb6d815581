"""Training throughput of the dynamics: seconds per optimiser step, FLOPs per step and the
fraction of the matmul peak, for several network shapes and precisions, in one run.

Each configuration is a dynamics preset with optional field overrides (``quickstart``,
``quickstart:dim=96,depth=6``); each is timed in float32 and, with ``--bf16``, under CPU (or
CUDA) bf16 autocast, the way Lightning's ``bf16-mixed`` runs it. A step is the dynamics stage's
own: ``flow.training_loss`` on a batch of clips (shortcut targets, readout included), backward,
gradient clipping and one AdamW step. FLOPs are counted by ``FlopCounterMode`` over one step;
the peak is the best float32 (and bf16) matmul of the same run.

Usage::

    python benchmarks/bench_dynamics_training.py --configs quickstart quickstart:dim=96,depth=6 \
        --batch 16 --clip-len 12 --bf16 --threads 2
    # -> benchmarks/results/dynamics_training.json and .png (seconds per step by configuration)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
from bench_dynamics import matmul_peak  # the script folder is on sys.path
from torch.utils.flop_counter import FlopCounterMode

from worldsim.data.atomic import atomic_write_json
from worldsim.dynamics import build_dynamics, count_parameters
from worldsim.flow import training_loss


def parse_config(text: str) -> tuple[str, dict]:
    """``preset[:field=value,...]`` -> (preset, overrides); values are ints, floats or words."""
    preset, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: config {text!r}: expected field=value, got {item!r}")
        for cast in (int, float):
            try:
                overrides[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            overrides[key] = {"true": True, "false": False}.get(value, value)
    return preset, overrides


def _batch(net, batch: int, clip_len: int, device: str, generator: torch.Generator):
    c = net.cfg
    z = torch.randn(batch, clip_len, c.latent_channels, c.latent_height, c.latent_width,
                    generator=generator).to(device)
    a = torch.randint(0, c.num_actions, (batch, clip_len - 1), generator=generator).to(device)
    r = (torch.rand(batch, clip_len - 1, generator=generator) < 0.05).float().to(device)
    done = torch.rand(batch, clip_len - 1, generator=generator).to(device) < 0.01
    return z, a, r, done


def time_steps(net, batch: int, clip_len: int, steps: int, device: str, bf16: bool) -> dict:
    """Seconds per training step (median of ``steps`` after two warm-up steps) and FLOPs."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    data = _batch(net, batch, clip_len, device, gen)
    cast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())

    def step():
        z, a, r, done = data
        with cast:
            out = training_loss(net, z, a, rewards=r, terminated=done,
                                generator=torch.Generator(device).manual_seed(1))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for _ in range(2):
        step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"seconds_per_step": times[len(times) // 2], "flops_per_step": int(counter.get_total_flops())}


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    labels = [f"{r['config']}\n{r['precision']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 3.4))
    ax.bar(range(len(rows)), [r["seconds_per_step"] for r in rows])
    for i, r in enumerate(rows):
        ax.annotate(f"MFU {r['mfu']:.2f}", (i, r["seconds_per_step"]), ha="center", va="bottom",
                    fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("seconds per training step")
    ax.set_title(f"batch {results['batch']} x {results['clip_len']} frames, "
                 f"{results['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["quickstart"],
                   help="preset[:field=value,...] (e.g. quickstart:dim=96,depth=6)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--clip-len", type=int, default=12)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--bf16", action="store_true", help="also time each configuration under bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamics_training.json"))
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    peaks = {"float32": matmul_peak(device=args.device)}
    if args.bf16:
        peaks["bfloat16"] = matmul_peak(device=args.device, dtype=torch.bfloat16)
    rows = []
    for text in args.configs:
        preset, overrides = parse_config(text)
        for precision in ("float32", "bfloat16") if args.bf16 else ("float32",):
            torch.manual_seed(0)
            net = build_dynamics(preset, **{"readout": True, **overrides}).to(args.device).train()
            row = {"config": text, "precision": precision, "parameters": count_parameters(net),
                   "tokens_per_frame": net.cfg.tokens_per_frame}
            row.update(time_steps(net, args.batch, args.clip_len, args.steps, args.device,
                                  precision == "bfloat16"))
            row["mfu"] = row["flops_per_step"] / row["seconds_per_step"] / peaks[precision]
            rows.append(row)
            print(f"{text:32s} {precision:9s} {row['seconds_per_step']:.3f} s/step  "
                  f"MFU {row['mfu']:.2f}", flush=True)
    results = {
        "batch": args.batch,
        "clip_len": args.clip_len,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "matmul_peak_flops": peaks,
        "rows": rows,
        "command": "python benchmarks/bench_dynamics_training.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results, indent=2)
    plot(results, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    return results


if __name__ == "__main__":
    main()
