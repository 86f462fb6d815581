"""``worldsim quickstart``: the whole pipeline, one resumable step after another.

Steps, each skipped when its output already exists (so an interrupted quickstart resumes):

1. ``collect``: record ``episodes`` of the game (or import ``videos=DIR``) into ``<out>/data``,
   print the store's summary and write ``<out>/sample.mp4``;
2. ``autoencoder``: train the frame autoencoder (``<out>/autoencoder``) and encode the latent
   cache (``<out>/autoencoder/latents``); with ``autoencoder_from=RUN_DIR``, reuse that run's
   network instead of training one (``worldsim/training/reuse.py``);
3. ``lam``: train the latent action model on the cache (or reuse one: ``lam_from=RUN_DIR``),
   label every transition with its code, score NMI and binding accuracy against the real
   actions where the data has them; with discrete real actions, also fit the action adapter
   (``worldsim/action_adapter.py``: the code a real action becomes in a given frame) into
   ``<out>/lam/adapter`` (``worldsim/training/adapter_fit.py``);
4. ``dynamics``: train the DiT (and reward/termination heads) on the labelled cache and score
   rollouts on held-out episodes;
5. ``heads``: when the data has rewards, fit the reward/termination heads on the dynamics'
   own rollouts of training episodes (``worldsim/training/heads_refit.py``) into ``<out>/heads``,
   scoring coins, losses and terminations on held-out rollouts before and after;
6. ``bundle``: gather the networks, latent statistics, action binding, action adapter and ``bundle_contexts``
   start contexts into ``<out>/bundle`` (rebuilt when a trained file is newer than it, so a
   resumed run that refitted a part ships it), measure the simulator's frames/s (one world, and a
   batch of 64), write ``<out>/rollout.mp4`` (four generated worlds) and ``<out>/rollout_strip.png``
   (a held-out window: real frames above, the model's replay below); the run ends with a table of
   the headline figures and the commands to try next.

Figures go to ``<out>/metrics.json``, rewritten atomically after each step. ``until=STEP``
(collect, autoencoder, lam, dynamics or heads) stops after that step, e.g. to score only the latent
action model on a new game: ``worldsim quickstart env=ALE/Breakout-v5 until=lam``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from worldsim.actions import trained_source
from worldsim.binding import ActionBinding
from worldsim.bundle import save_bundle
from worldsim.cli import run_command
from worldsim.config import ConfigError, world_options
from worldsim.data import EpisodeStore, frames_to_tensor, tensor_to_frames
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_store import LatentStore
from worldsim.evaluation import sample_windows
from worldsim.rollout import generate, policy_actions, real_vs_model, write_rollout
from worldsim.simulator import load_simulator
from worldsim.training.adapter_fit import fit_adapter_step
from worldsim.training.heads_refit import fit_heads_step
from worldsim.training.reuse import reuse_autoencoder, reuse_lam
from worldsim.training.stages import split_episodes
from worldsim.training.train import run as train
from worldsim.video import save_frame_strip, save_video
from worldsim.weights import load_network, read_meta

console = Console()
UNTIL = ("collect", "autoencoder", "lam", "dynamics", "heads")  # steps ``until=`` may stop after


def _stage_config(cfg: DictConfig, stage: str, run_dir: Path, data: dict) -> DictConfig:
    """A ``train`` config for one stage, built from the quickstart's own groups and budgets."""
    budget = OmegaConf.to_container(cfg.stages[stage]) if stage in cfg.stages else {}
    data = {**OmegaConf.to_container(cfg.data), **data}
    for key in ("batch_size", "clip_len"):
        if key in budget:
            data[key] = budget.pop(key)
    trainer = OmegaConf.to_container(cfg.trainer)
    unknown = set(budget) - set(trainer)
    if unknown:
        raise ValueError(f"quickstart stages.{stage}: unknown trainer keys {sorted(unknown)}; "
                         f"allowed: batch_size, clip_len, {', '.join(trainer)}")
    trainer.update(budget)
    trainer["progress"] = bool(cfg.progress)
    train_cfg = OmegaConf.create({
        "stage": stage, "run_dir": str(run_dir), "resume": (run_dir / "checkpoints" / "last.ckpt").exists(),
        "seed": int(cfg.seed), "encode_cache": True, "action_source": cfg.action_source, "readout": cfg.readout, "heads": cfg.heads,
        "ema_decay": cfg.ema_decay, "world": OmegaConf.to_container(cfg.world, resolve=True), "self_forcing": cfg.self_forcing,
        "teacher_forcing": cfg.teacher_forcing, "data": data, "trainer": trainer,
        **{k: OmegaConf.to_container(cfg[k]) for k in ("env", "autoencoder", "lam", "dynamics")},
    })
    OmegaConf.set_struct(train_cfg, True)
    return train_cfg


def step_device(cfg: DictConfig) -> str:
    """The device of the steps that train outside Lightning (the action adapter, the heads on
    rollouts): the trainer's, so ``trainer=gpu`` puts the whole quickstart on the GPU."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator}: torch sees no CUDA device here "
                              "(use trainer=cpu, or install a CUDA build of torch)")
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cpu":
        return "cpu"
    raise ConfigError(f"trainer.accelerator={accelerator!r}: the quickstart runs on cpu, gpu (cuda) or auto")


def _once(run_dir: Path, make) -> dict:
    """``make()``'s summary, unless the step finished before (``run_dir/summary.json`` exists)."""
    done = run_dir / "summary.json"
    if done.exists():
        console.print(f"done already: {run_dir}")
        return json.loads(done.read_text())
    return make()


def _train(cfg: DictConfig, stage: str, run_dir: Path, data: dict) -> dict:
    """Train one stage unless it finished before; returns the summary."""
    return _once(run_dir, lambda: train(_stage_config(cfg, stage, run_dir, data)))


def _collect(cfg: DictConfig, store: Path) -> dict:
    overrides = [f"out={store}", f"episodes={cfg.episodes}", f"policy={cfg.policy}",
                 f"sticky_prob={cfg.sticky_prob}", f"num_envs={cfg.num_envs}", f"seed={cfg.seed}",
                 f"progress={str(bool(cfg.progress)).lower()}", f"max_episode_len={cfg.max_episode_len}",
                 f"skip_bad={str(bool(cfg.skip_bad)).lower()}", f"env.size={cfg.env.size}",
                 f"env.frame_skip={cfg.env.frame_skip}"]
    if cfg.env.id is not None:
        overrides.append(f"env.id={cfg.env.id}")
    if cfg.max_steps is not None:
        overrides.append(f"max_steps={cfg.max_steps}")
    if cfg.videos is not None:
        overrides.append(f"videos={cfg.videos}")
    if cfg.fps is not None:
        overrides.append(f"fps={cfg.fps}")
    return run_command("collect", overrides)


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics: dict = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.setdefault("train_seconds", {})
    started = time.perf_counter()
    until = cfg.get("until")
    if until is not None and until not in UNTIL:
        raise ConfigError(f"until={until!r}: allowed values are {list(UNTIL)} (or null: every step)")
    step_device(cfg)  # an accelerator that is not there fails now, not after the collection

    def finish(title: str) -> None:
        """Add this run's time to ``total_seconds``, write the metrics, announce the end."""
        metrics["total_seconds"] = metrics.get("total_seconds", 0.0) + (time.perf_counter() - started)
        atomic_write_json(metrics_path, metrics)
        console.rule(f"[bold green]{title}")

    def stop_after(step: str) -> bool:
        """Whether ``until`` ends the run after ``step`` (then the metrics so far are written)."""
        if until != step:
            return False
        finish(f"quickstart stopped after {step} (until={step})")
        return True

    # 1. collect ---------------------------------------------------------------------------------
    store_dir = out / "data"
    console.rule("[bold]1. collect")
    t0 = time.perf_counter()
    _collect(cfg, store_dir)  # resumes: records only the episodes still missing
    store = EpisodeStore(store_dir, create=False)
    store.print_summary(console)
    metrics["collect_seconds"] = metrics.get("collect_seconds", 0.0) + (time.perf_counter() - t0)
    sample = out / "sample.mp4"
    if not sample.exists():
        save_video(store.read_frames(0, 0, min(store.episode_length(0), int(cfg.sample_video_frames))),
                   sample, fps=15, scale=4)
        console.print(f"sample video: {sample}")
    atomic_write_json(metrics_path, metrics)
    if stop_after("collect"):
        return metrics

    # 2. autoencoder ------------------------------------------------------------------------------
    console.rule("[bold]2. autoencoder")
    if cfg.autoencoder_from is not None:  # an earlier run's network encodes this data
        ae = _once(out / "autoencoder", lambda: reuse_autoencoder(
            cfg.autoencoder_from, out / "autoencoder", store_dir, val_episodes=int(cfg.data.val_episodes),
            val_clips=int(cfg.data.val_clips), seed=int(cfg.data.seed), device=step_device(cfg),
            progress=bool(cfg.progress)))
    else:
        ae = _train(cfg, "autoencoder", out / "autoencoder", {"store": str(store_dir)})
    metrics["recon_psnr"] = ae.get("recon_psnr")
    metrics["recon_ssim"] = ae.get("recon_ssim")
    metrics["train_seconds"]["autoencoder"] = ae.get("train_seconds")
    atomic_write_json(metrics_path, metrics)
    if stop_after("autoencoder"):
        return metrics
    latents = out / "autoencoder" / "latents"

    # 3. latent action model --------------------------------------------------------------------
    console.rule("[bold]3. latent action model")
    if cfg.lam_from is not None:  # an earlier run's network labels this data
        lam = _once(out / "lam", lambda: reuse_lam(
            cfg.lam_from, out / "lam", latents, store_dir, val_episodes=int(cfg.data.val_episodes),
            seed=int(cfg.data.seed), device=step_device(cfg)))
    else:
        lam = _train(cfg, "lam", out / "lam", {"store": str(store_dir), "latents": str(latents)})
    for key in ("nmi", "binding_accuracy_100", "codebook_used", "codebook_size"):
        metrics[key] = lam.get(key)
    metrics["train_seconds"]["lam"] = lam.get("train_seconds")
    adapter = fit_adapter_step(cfg, out, latents, device=step_device(cfg))
    if adapter:
        metrics["action_adapter"] = {k: adapter.get(k) for k in ("val_accuracy", "binding_val_accuracy")}
        metrics["train_seconds"]["action_adapter"] = adapter.get("train_seconds")
    atomic_write_json(metrics_path, metrics)
    if stop_after("lam"):
        return metrics

    # 4. dynamics --------------------------------------------------------------------------------
    console.rule("[bold]4. dynamics")
    dyn = _train(cfg, "dynamics", out / "dynamics",
                 {"store": str(store_dir), "latents": str(latents), "lam_model": str(out / "lam" / "model")})
    for key in ("rollout_psnr", "rollout_ssim", "random_psnr", "copy_last_psnr", "copy_last_decoded_psnr", "delta_psnr_4",
                "reward_sign_accuracy", "termination_accuracy"):
        metrics[key] = dyn.get(key)
    metrics["train_seconds"]["dynamics"] = dyn.get("train_seconds")
    atomic_write_json(metrics_path, metrics)
    if stop_after("dynamics"):
        return metrics

    # 5. reward / termination heads on the dynamics' own rollouts -------------------------------
    console.rule("[bold]5. heads on rollouts")
    heads = fit_heads_step(cfg, out, latents, device=step_device(cfg))
    if heads:
        metrics["heads_on_rollouts"] = {k: heads[k] for k in ("before", "after", "readout") if k in heads}
        metrics["train_seconds"]["heads"] = heads.get("train_seconds")
    atomic_write_json(metrics_path, metrics)
    if stop_after("heads"):
        return metrics

    # 6. bundle, speed, rollout video ------------------------------------------------------------
    console.rule("[bold]6. bundle")
    bundle_dir = out / "bundle"
    newer = stale_input(out, bundle_dir)
    if newer is not None:
        if (bundle_dir / "bundle.json").exists():
            console.print(f"bundle: {newer} is newer than the bundle, rebuilding it")
        make_bundle(out, bundle_dir, store_dir, latents, seed=int(cfg.seed), game=cfg.env.id,
                    num_contexts=int(cfg.bundle_contexts))
    console.print(f"bundle: {bundle_dir}")
    metrics.update(measure_fps(bundle_dir))
    rollout_path = out / "rollout.mp4"
    if not rollout_path.exists():
        sim = load_simulator(bundle_dir, world_options(cfg))
        rng = np.random.default_rng(int(cfg.seed))
        acts = policy_actions("sticky", sim.num_actions(), 64, 4, stickiness=0.8, rng=rng)
        write_rollout(generate(sim, acts), rollout_path, fps=15, scale=4, grid=True)
    console.print(f"rollout video: {rollout_path}")
    strip_path = out / "rollout_strip.png"
    if not strip_path.exists():
        sim = load_simulator(bundle_dir, world_options(cfg))
        write_strip(sim, store, latents, strip_path, val_episodes=int(cfg.data.val_episodes))
    console.print(f"real vs model: {strip_path}")
    atomic_write_json(metrics_path, metrics)

    finish("quickstart done")
    console.print(summary_table(metrics))
    console.print(f"all figures: {metrics_path}")
    for line in next_commands(bundle_dir, out):
        console.print(line, soft_wrap=True, highlight=False)
    return metrics


def write_strip(sim, store, latents_dir: Path, path: Path, *, val_episodes: int, steps: int = 8) -> Path:
    """``path``: a PNG of two rows, the real frames of a held-out episode's first window and the
    model's replay of them (teacher-forced with the actions the dynamics was trained on)."""
    _, val_ids = split_episodes(len(store), val_episodes, str(latents_dir))
    episode = val_ids[0] if val_ids else len(store) - 1
    n = min(store.episode_length(episode), sim.context_frames + steps)
    if sim.bundle.action_source == "real":
        actions, kind = store.read_steps(episode, 0, n - 1)["actions"], "real"
    else:
        actions, kind = LatentStore(latents_dir).read_labels("lam", episode, 0, n - 1), "latent"
    real, model = real_vs_model(sim, store.read_frames(episode, 0, n), actions, action_type=kind)
    return save_frame_strip({"real": real, "model": model}, path, scale=4)


def summary_table(metrics: dict):
    """The quickstart's headline figures as a rich table (every figure: ``metrics.json``)."""
    def db(x) -> str:
        return "n/a" if x is None else f"{x:.2f} dB"

    table = Table(title="quickstart figures (held-out episodes)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("compared with")
    table.add_row("reconstruction PSNR", db(metrics.get("recon_psnr")), "")
    table.add_row("delta-t-PSNR@4", db(metrics.get("delta_psnr_4")), "inferred - random actions")
    rollout, copy_last = metrics.get("rollout_psnr") or {}, metrics.get("copy_last_psnr") or {}
    decoded = metrics.get("copy_last_decoded_psnr") or {}
    for h in rollout:
        table.add_row(f"rollout PSNR @{h}", db(rollout[h]),
                      f"copy-last {db(copy_last.get(h))}, through the codec {db(decoded.get(h))}")
    if metrics.get("fps_single") is not None:
        table.add_row("frames/s, one world", f"{metrics['fps_single']:.0f}", "")
        table.add_row("frames/s, 64 worlds", f"{metrics['fps_batched']:.0f}", "")
    readout = (metrics.get("heads_on_rollouts") or {}).get("readout")
    if readout is not None:
        coin = readout["coin"]
        table.add_row("readout coins P / R", f"{coin['precision']:.2f} / {coin['recall']:.2f}",
                      f"precision / recall, {coin['true']} true")
    return table


def next_commands(bundle_dir: Path, out: Path) -> list[str]:
    """What to run next with the bundle just made: a comment line, then the command."""
    return ["next:",
            "  # play it with the keyboard", f"  worldsim play bundle={bundle_dir}",
            "  # train an agent inside it", f"  worldsim agent mode=train bundle={bundle_dir} out={out / 'agent'}",
            "  # plan in it, act in the real game", f"  worldsim plan bundle={bundle_dir}"]


BUNDLE_INPUTS = ("autoencoder/model", "lam/model", "lam/summary.json", "lam/adapter", "dynamics/model", "heads/model")


def stale_input(out: Path, bundle_dir: Path) -> Path | None:
    """The first of a quickstart run's trained files newer than its bundle (``bundle_dir`` itself
    when there is no bundle yet), or ``None`` when the bundle is up to date: a resumed run whose
    steps wrote something new (a refitted head, a newly fitted adapter) rebuilds its bundle."""
    made = bundle_dir / "bundle.json"
    if not made.exists():
        return bundle_dir
    built = made.stat().st_mtime
    for name in BUNDLE_INPUTS:
        path = out / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file() and f.stat().st_mtime > built:
                return f
    return None


def make_bundle(out: Path, bundle_dir: Path, store_dir: Path, latents_dir: Path, *, seed: int,
                game: str | None, num_contexts: int = 8, context_frames: int = 2) -> Path:
    """Gather the trained stages of a quickstart run into a simulator bundle."""
    store, latents = EpisodeStore(store_dir, create=False), LatentStore(latents_dir)
    ae = load_network(out / "autoencoder" / "model", "autoencoder")
    source = trained_source(read_meta(out / "dynamics" / "model", "dynamics"))
    dynamics = load_network(out / "dynamics" / "model", "dynamics")
    heads = None  # the heads refitted on rollouts (step 5) when there are, else the dynamics stage's
    for heads_dir in (out / "heads" / "model", out / "dynamics" / "model"):
        if heads is None and (heads_dir / "heads.json").exists():
            heads = load_network(heads_dir, "heads")
    lam = load_network(out / "lam" / "model", "lam") if (out / "lam" / "model" / "lam.json").exists() else None
    lam_summary = json.loads((out / "lam" / "summary.json").read_text()) if (out / "lam" / "summary.json").exists() else {}
    binding = ActionBinding.from_dict(lam_summary["binding"]) if "binding" in lam_summary else None
    adapter_dir = out / "lam" / "adapter"
    adapter = (load_network(adapter_dir, "action_adapter")
               if source != "real" and (adapter_dir / "action_adapter.json").exists() else None)

    # Start contexts: windows of real frames from held-out and training episodes alike.
    lengths = [store.episode_length(i) for i in range(len(store))]
    picks = sample_windows(lengths, range(len(store)), context_frames, num_contexts, seed)
    size = (ae.cfg.frame_height, ae.cfg.frame_width)
    frames, actions = [], []
    for e, s0 in picks:
        x = store.read_frames(e, s0, s0 + context_frames)
        if x.shape[1:3] != size:
            x = tensor_to_frames(torch.nn.functional.interpolate(frames_to_tensor(x), size=size, mode="area"))
        frames.append(x)
        if source == "real":
            actions.append(store.read_steps(e, s0, s0 + context_frames - 1)["actions"])
        else:
            actions.append(latents.read_labels("lam", e, s0, s0 + context_frames - 1))
    meta = {"action_source": source, "action_space": store.metadata(0).get("action_space"),
            "fps": float(store.metadata(0).get("fps") or 15.0), "game": game or store.metadata(0).get("source")}
    return save_bundle(bundle_dir, autoencoder=ae, dynamics=dynamics, latent_mean=latents.mean,
                       latent_std=latents.std, contexts=np.stack(frames), context_actions=np.stack(actions),
                       heads=heads, lam=lam, binding=binding, meta=meta, overwrite=True,
                       action_adapter=adapter)


def measure_fps(bundle_dir: Path, steps: int = 24, batch: int = 64) -> dict:
    """Frames per second of the bundle's simulator with frames decoded: one world (the
    interactive case) and a batch of ``batch`` worlds."""
    out = {}
    for key, b in (("fps_single", 1), ("fps_batched", batch)):
        sim = load_simulator(bundle_dir, batch=b)
        sim.reset(batch=b)
        n = sim.num_actions()
        acts = torch.randint(0, n, (steps + 2, b), generator=torch.Generator().manual_seed(0))
        for t in range(2):  # warm-up
            sim.step(acts[t], decode=True)
        start = time.perf_counter()
        for t in range(2, steps + 2):
            sim.step(acts[t], decode=True)
        out[key] = b * steps / (time.perf_counter() - start)
    return out
