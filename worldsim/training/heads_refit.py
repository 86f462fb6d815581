"""Refitting the reward and termination heads on the dynamics' own rollouts.

The pool of real and generated clips and the event scores are ``worldsim/heads_on_rollouts.py``
(its module docstring says why the heads are refitted). Here: :func:`fit_heads`, the loop that
trains the heads on a pool's generated transitions (and ``real_weight`` x its real ones) with
the heads' own losses, and :func:`fit_heads_step`, the quickstart's ``heads`` step around it,
which builds the pools from a run's dynamics, refits the heads into ``<out>/heads`` where they
are what the Simulator reads (``heads_rollouts.refit``), and scores them (and the dynamics'
readout) on held-out rollouts before and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress

from worldsim.actions import trained_source
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_store import LatentStore
from worldsim.flow import map_actions
from worldsim.heads_on_rollouts import RolloutPool, build_pool, event_scores, readout_scores
from worldsim.training.stages import split_episodes
from worldsim.weights import load_network, read_meta, save_weights

console = Console()
REFIT_CHOICES = ("auto", "true", "false")  # heads_rollouts.refit


def fit_heads(
    heads,
    pool: RolloutPool,
    *,
    steps: int = 2000,
    batch: int = 64,
    lr: float = 1e-3,
    real_weight: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``heads`` in place on the pool's generated clips (and ``real_weight`` x its real
    ones). Returns the loss every 100 steps."""
    if len(pool) == 0:
        raise ValueError("fit_heads: the pool is empty")
    heads = heads.to(device).train()
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    g = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("fitting heads on rollouts", total=steps)
        for step in range(steps):
            part = pool.take(torch.randint(len(pool), (min(batch, len(pool)),), generator=g))
            a = map_actions(part.actions, lambda x: x.to(device))
            r, te = part.rewards.to(device), part.terminated.to(device)
            w = None if part.weights is None else part.weights.to(device)
            gen = heads.loss(part.generated.to(device), a, r, te, weights=w)
            loss = gen["loss"]
            if real_weight > 0:
                loss = loss + real_weight * heads.loss(part.real.to(device), a, r, te, weights=w)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 100 == 0 or step == steps - 1:
                history.append({"step": step, "loss": loss.item(), "generated_loss": gen["loss"].item()})
            bar.advance(task)
    heads.eval()
    return history


def fit_heads_step(cfg: DictConfig, out: Path, latents_dir: Path, *, device: str) -> dict:
    """Refit the dynamics stage's heads of a quickstart run (its config ``cfg``) on the dynamics'
    rollouts (``<out>/heads``), on ``device``; returns its summary, or ``{}`` when there are no
    heads (data without rewards). With ``heads_rollouts.steps`` 0 nothing is refitted, and a
    dynamics with a readout is only scored on the held-out rollouts (``summary["readout"]``).
    Skipped when ``<out>/heads/summary.json`` exists."""
    run_dir, dyn_dir = out / "heads", out / "dynamics" / "model"
    hr = cfg.heads_rollouts
    has_readout = bool(read_meta(dyn_dir, "dynamics")["config"].get("readout"))
    choice = str(hr.refit).lower()
    if choice not in REFIT_CHOICES:
        raise ValueError(f"heads_rollouts.refit must be one of {REFIT_CHOICES}, got {hr.refit!r}")
    # the Simulator reads rewards from the readout when the dynamics has one: refit the heads
    # only where they are what the Simulator uses, unless asked
    refit = int(hr.steps) > 0 and (choice == "true" or (choice == "auto" and not has_readout))
    if not (dyn_dir / "heads.json").exists() or not (refit or has_readout):
        console.print("no reward heads to refit (data without rewards, or heads_rollouts.steps=0)")
        return {}
    if (run_dir / "summary.json").exists():
        console.print(f"done already: {run_dir}")
        return json.loads((run_dir / "summary.json").read_text())
    started = time.perf_counter()
    latents = LatentStore(latents_dir)
    dynamics, heads = load_network(dyn_dir, "dynamics").to(device), load_network(dyn_dir, "heads").to(device)
    source = trained_source(read_meta(dyn_dir, "dynamics"))
    train_ids, val_ids = split_episodes(len(latents), int(cfg.data.val_episodes), str(latents_dir))
    common = dict(context=int(hr.context), horizon=int(hr.horizon), action_source=source,
                  sampler_steps=int(hr.sampler_steps), device=device, progress=bool(cfg.progress))
    val = (build_pool(dynamics, latents, val_ids, windows=int(hr.val_windows), seed=int(cfg.seed) + 1, **common)
           if val_ids else None)
    summary: dict = {"action_source": source, **{k: hr[k] for k in hr}}
    if val is not None:
        summary["before"] = {w: event_scores(heads, val, w) for w in ("real", "generated")}
        if val.readout_reward is not None:
            summary["readout"] = readout_scores(val)
    if refit:
        pool = build_pool(dynamics, latents, train_ids, windows=int(hr.windows), seed=int(cfg.seed),
                          end_fraction=float(hr.end_fraction), **common)
        summary["windows"] = len(pool)
        summary["history"] = fit_heads(heads, pool, steps=int(hr.steps), batch=int(hr.batch), lr=float(hr.lr),
                                       real_weight=float(hr.real_weight), seed=int(cfg.seed),
                                       device=device, progress=bool(cfg.progress))
        if val is not None:
            summary["after"] = {w: event_scores(heads, val, w) for w in ("real", "generated")}
        save_weights(heads, heads.cfg, run_dir / "model", "heads")
    summary["train_seconds"] = time.perf_counter() - started
    atomic_write_json(run_dir / "summary.json", summary)
    if val is not None:
        rows = [(f"heads {key}", summary[key]["generated"]) for key in ("before", "after") if key in summary]
        rows += [("dynamics readout", summary["readout"])] if "readout" in summary else []
        for name, gen in rows:
            console.print(f"held-out rollouts, {name}: predicted reward/step {gen['predicted_reward_per_step']:.4f} "
                          f"(true {gen['reward_per_step']:.4f}), coins precision {gen['coin']['precision']:.2f} "
                          f"recall {gen['coin']['recall']:.2f}")
    return summary


__all__ = ["REFIT_CHOICES", "fit_heads", "fit_heads_step"]
