"""Seeded Simulator runs whose frames are kept as a reference (tests/data/simulator_reference.npz).

The reference was written by the Simulator as it stood before its KV cache became a ring
buffer (``python tests/reference_simulator.py``); ``tests/test_simulator.py`` reruns the same
worlds and checks that every latent still matches. The networks are the tiny preset's with every
weight redrawn from a seeded normal (a freshly initialised DiT predicts zero velocity, which
would make any two implementations agree) and QK-norm gains of about 3, so attention is sharp and
a key at the wrong position or slot shows; in both attention layouts.

Runs: ``single`` (one world, 10 steps), ``batched`` (4 worlds, 10 steps), ``reset`` (4 worlds,
two of them reset from new contexts after step 4 and again after step 7).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from worldsim.bundle import load_bundle
from worldsim.dynamics import DynamicsModel
from worldsim.simulator import Simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions

REFERENCE = Path(__file__).parent / "data" / "simulator_reference.npz"
ATTENTIONS = ("factorized", "block_causal")
STEPS = 10


def _randomised(bundle, attention: str):
    """The bundle with a dynamics of the given attention layout and every weight redrawn."""
    cfg = dataclasses.replace(bundle.dynamics.cfg, attention=attention, context_window=4)
    dyn = DynamicsModel(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in dyn.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.08)
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.add_(3.0)  # sharp attention, so key positions and cache slots matter
    return dataclasses.replace(bundle, dynamics=dyn.eval())


def reference_runs(path: Path, chunk: int | None = None) -> dict[str, np.ndarray]:
    """Latents ``[steps, b, c, h, w]`` of every run, keyed ``<attention>/<run>`` (``chunk``: the
    Simulator's worlds per cached pass)."""
    untrained_bundle(path, "tiny", num_contexts=6, context_frames=3, seed=0)
    base = load_bundle(path)
    out: dict[str, np.ndarray] = {}
    for attention in ATTENTIONS:
        bundle = _randomised(base, attention)
        for run, batch in (("single", 1), ("batched", 4), ("reset", 4)):
            sim = Simulator(bundle, WorldOptions(sampler_steps=2, seed=3, chunk=chunk), batch=batch)
            sim.reset(torch.arange(batch) % 6)
            actions = torch.Generator().manual_seed(5)
            frames = []
            for t in range(STEPS):
                a = torch.randint(0, sim.num_actions(), (batch,), generator=actions)
                frames.append(sim.step(a).latents.clone())
                if run == "reset" and t in (4, 7):
                    sim.reset(torch.tensor([4, 5]), mask=torch.tensor([False, True, False, True]))
            out[f"{attention}/{run}"] = torch.stack(frames).numpy()
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        runs = reference_runs(Path(tmp) / "bundle")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, **runs)
    print({k: v.shape for k, v in runs.items()})
