"""Plot imagination-agent runs from a results JSON (no run directories needed).

The JSON (e.g. ``runs/agent_runs.json``) holds, under ``runs``, one entry per
training run with ``imagined_curve`` (``[[update, rollout_return], ...]`` from its curve.csv)
and ``real_game_by_update`` (``{update: {mean, std}}``, the real-game return of its snapshots),
and ``baselines`` (``{label: mean}``, drawn as horizontal lines). Two panels: the return the
model paid per imagined rollout, and the return in the real game.

Usage::

    python benchmarks/plot_agent_runs.py runs/agent_runs.json  # -> runs/agent_runs.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_i, ax_r) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, run in results["runs"].items():
        curve = run.get("imagined_curve") or []
        if curve:
            ax_i.plot([u for u, _ in curve], [r for _, r in curve], label=label)
        by = run.get("real_game_by_update") or {}
        if by:
            ups = sorted(by, key=float)
            ax_r.errorbar(
                [float(u) for u in ups],
                [by[u]["mean"] for u in ups],
                yerr=[by[u]["std"] for u in ups],
                marker="o",
                capsize=3,
                label=label,
            )
    styles = ["--", ":", "-."]
    for i, (label, value) in enumerate(results.get("baselines", {}).items()):
        ax_r.axhline(value, linestyle=styles[i % len(styles)], color=f"C{7 + i % 3}", label=label)
    ax_i.set(xlabel="update", ylabel="imagined return per rollout", title="in imagination")
    ax_r.set(xlabel="update", ylabel="real-game return (3 seeds x 8 episodes)", title="in the game")
    ax_i.legend(fontsize=8)
    ax_r.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="results JSON with 'runs' (and 'baselines')")
    parser.add_argument("--out", type=Path, default=None, help="PNG (default: beside the JSON)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    if not isinstance(results.get("runs"), dict):
        raise SystemExit(f"{args.results}: no 'runs' mapping of label -> run figures")
    return plot(results, args.out or args.results.with_suffix(".png"))


if __name__ == "__main__":
    print(main())
