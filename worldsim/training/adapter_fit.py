"""Fitting the action adapter (``worldsim/action_adapter.py``): the code a real action becomes
in a given frame.

:func:`fit_action_adapter` is the loop: random transitions of a labelled latent store (the
normalised latent ``z_t``, the recorded real action ``a_t``, the LAM's code as the target),
cross-entropy, AdamW with a cosine schedule, and the held-out accuracy against the LAM's codes
(beside that of the global binding, one code per action). :func:`fit_adapter_step` is the
quickstart's step around it: it fits the adapter of a run's LAM into ``<out>/lam/adapter`` when
the data has discrete real actions, and skips the step when its ``summary.json`` exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from torch.nn import functional as F

from worldsim.action_adapter import ActionAdapter, ActionAdapterConfig
from worldsim.binding import ActionBinding
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_store import LatentStore
from worldsim.training.stages import split_episodes
from worldsim.weights import save_weights

console = Console()


def _transitions(latent_store, episodes: Sequence[int], count: int, seed: int, label: str):
    """``count`` random transitions of ``episodes``: normalised ``z_t``, real ``a_t``, code."""
    rng = np.random.default_rng(seed)
    lengths = np.array([latent_store.episode_length(e) - 1 for e in episodes])  # transitions
    if lengths.sum() < 1:
        raise ValueError("fit_action_adapter: the episodes hold no transitions")
    picks = rng.choice(len(episodes), size=count, p=lengths / lengths.sum())
    z, a, k = [], [], []
    for i in np.unique(picks):
        e, n = int(episodes[i]), int((picks == i).sum())
        t = rng.integers(0, lengths[i], size=n)
        z.append(latent_store.read_latents(e, 0, int(lengths[i]))[t].astype(np.float32))
        steps = latent_store.read_steps(e, 0, int(lengths[i]))
        if "actions" not in steps:
            raise ValueError(f"fit_action_adapter: episode {e} has no recorded actions")
        a.append(np.asarray(steps["actions"])[t])
        k.append(latent_store.read_labels(label, e, 0, int(lengths[i]))[t])
    z = latent_store.normalize(torch.from_numpy(np.concatenate(z)))
    return z, torch.from_numpy(np.concatenate(a)).long(), torch.from_numpy(np.concatenate(k)).long()


def fit_action_adapter(
    latent_store,
    train_episodes: Sequence[int],
    val_episodes: Sequence[int],
    *,
    num_actions: int,
    num_codes: int,
    binding=None,
    label: str = "lam",
    samples: int = 60_000,
    steps: int = 1500,
    batch: int = 256,
    lr: float = 2e-3,
    hidden: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[ActionAdapter, dict[str, Any]]:
    """Fit an adapter on ``samples`` transitions of ``train_episodes``; returns it and a summary
    with its held-out accuracy against the LAM's codes (and, given ``binding``, the accuracy of
    the global table ``binding.to_latent`` on the same transitions). The adapter is fitted and
    returned on ``device``."""
    torch.manual_seed(seed)
    c, h, w = latent_store.latent_shape
    adapter = ActionAdapter(ActionAdapterConfig(c, h, w, num_actions, num_codes, hidden)).to(device)
    z, a, k = _transitions(latent_store, train_episodes, samples, seed, label)
    if int(a.max()) >= num_actions or int(k.max()) >= num_codes:
        raise ValueError(f"fit_action_adapter: actions reach {int(a.max())} (num_actions={num_actions}), "
                         f"codes {int(k.max())} (num_codes={num_codes})")
    z, a, k = z.to(device), a.to(device), k.to(device)
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.1)
    g = torch.Generator().manual_seed(seed)
    adapter.train()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("action adapter", total=steps)
        for _ in range(steps):
            idx = torch.randint(len(z), (batch,), generator=g)
            loss = F.cross_entropy(adapter(z[idx], a[idx]), k[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(task)
    adapter.eval()
    summary: dict[str, Any] = {"samples": int(len(z)), "steps": steps, "train_loss": float(loss.detach())}
    if len(val_episodes):
        zv, av, kv = _transitions(latent_store, val_episodes, min(samples, 8192), seed + 1, label)
        with torch.no_grad():
            pred = torch.cat([adapter.codes(zv[i : i + 1024].to(device), av[i : i + 1024].to(device)).cpu()
                              for i in range(0, len(zv), 1024)])
        summary["val_transitions"] = int(len(zv))
        summary["val_accuracy"] = float((pred == kv).float().mean())
        if binding is not None:
            table = torch.as_tensor(binding.to_latent(av.numpy(), default=0))
            summary["binding_val_accuracy"] = float((table == kv).float().mean())
    return adapter, summary


def fit_adapter_step(cfg: DictConfig, out: Path, latents_dir: Path, *, device: str) -> dict:
    """Fit the action adapter (``<out>/lam/adapter``) of a quickstart run (its config ``cfg``)
    on ``device`` when the data has discrete real actions and the LAM a binding; returns its
    summary (``{}`` when skipped). Skipped when its summary exists."""
    run_dir, ac = out / "lam" / "adapter", cfg.action_adapter
    lam_summary = json.loads((out / "lam" / "summary.json").read_text())
    if "binding" not in lam_summary or int(ac.steps) <= 0:
        console.print("no action adapter (no discrete real actions in the data, or action_adapter.steps=0)")
        return {}
    if (run_dir / "summary.json").exists():
        console.print(f"done already: {run_dir}")
        return json.loads((run_dir / "summary.json").read_text())
    started = time.perf_counter()
    binding = ActionBinding.from_dict(lam_summary["binding"])
    latents = LatentStore(latents_dir)
    train_ids, val_ids = split_episodes(len(latents), int(cfg.data.val_episodes), str(latents_dir))
    adapter, summary = fit_action_adapter(
        latents, train_ids, val_ids, num_actions=binding.num_actions, num_codes=binding.num_codes,
        binding=binding, samples=int(ac.samples), steps=int(ac.steps), batch=int(ac.batch), lr=float(ac.lr),
        hidden=int(ac.hidden), seed=int(cfg.seed), device=device, progress=bool(cfg.progress))
    save_weights(adapter, adapter.cfg, run_dir, "action_adapter")
    summary["train_seconds"] = time.perf_counter() - started
    atomic_write_json(run_dir / "summary.json", summary)
    if "val_accuracy" in summary:
        console.print(f"action adapter: held-out code accuracy {summary['val_accuracy']:.3f} "
                      f"(one code per action: {summary.get('binding_val_accuracy', float('nan')):.3f})")
    return summary


__all__ = ["fit_action_adapter", "fit_adapter_step"]
