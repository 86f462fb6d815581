"""Networks of an earlier run reused on this run's data, in place of training them.

The quickstart's ``autoencoder_from=RUN_DIR`` and ``lam_from=RUN_DIR`` name a finished stage's
run directory (e.g. ``runs/quickstart/autoencoder``). The step then copies ``RUN_DIR/model`` into
its own run directory and does on this run's data what a trained stage does at its end:

- autoencoder: encode the episode store into the latent cache (``<run_dir>/latents``) and score
  the reconstruction (PSNR, SSIM) on this run's held-out episodes;
- latent action model: label every transition (the label set ``lam`` of the latent cache, as the
  dynamics stage reads it) and score the codes (codebook use; NMI, binding accuracy and the
  action binding where the data has discrete actions), on this run's held-out episodes.

Each writes ``summary.json`` last, with ``reused_from``, so a resumed quickstart skips the step
as it skips a trained stage. The use: a bigger dataset for the dynamics without retraining the
frame codec and the controls, as the recorded `medium` world was built (docs/agents.md), which
leaves a GPU's time to the dynamics.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from worldsim.config import ConfigError
from worldsim.data import ClipDataset, EpisodeStore
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_store import LatentStore, encode_store
from worldsim.latent_action import label_store, label_transitions
from worldsim.training.autoencoder_module import AutoencoderModule
from worldsim.training.base import OptimConfig
from worldsim.training.stages import evaluate_reconstruction, lam_figures, split_episodes
from worldsim.weights import WeightsError, load_network, read_meta


def copy_model(source_run: str | Path, run_dir: Path, name: str, key: str) -> Path:
    """Copy ``source_run/model`` (which must hold the network ``name``) to ``run_dir/model``
    through a temporary folder; ``key`` names the option in errors. Returns the copy."""
    source = Path(source_run)
    if source.resolve() == run_dir.resolve():
        raise ConfigError(f"{key}={source}: that is this run's own {name} directory")
    try:
        read_meta(source / "model", name)
    except WeightsError as err:
        raise ConfigError(f"{key}={source}: not a finished {name} run ({err})") from err
    run_dir.mkdir(parents=True, exist_ok=True)
    target, tmp = run_dir / "model", run_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source / "model", tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def reconstruction_scores(net, store, episodes: list[int], *, clips: int, seed: int, device: str) -> dict:
    """The autoencoder stage's held-out figures (``recon_psnr``, ``recon_ssim``) for ``net`` on
    ``clips`` frames drawn from ``episodes`` of ``store``."""
    size = (net.cfg.frame_height, net.cfg.frame_width)
    clip = net.cfg.temporal_compression if net.cfg.temporal_compression > 1 else 1
    data = ClipDataset(store, clip, seed=seed, length=clips, episodes=episodes, resize=size, with_actions=False)
    return evaluate_reconstruction(AutoencoderModule(net, OptimConfig()).to(device), data)


def reuse_autoencoder(
    source_run: str | Path,
    run_dir: Path,
    store_dir: Path,
    *,
    val_episodes: int,
    val_clips: int = 256,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """``source_run``'s autoencoder encodes ``store_dir`` into ``run_dir/latents`` and is scored
    on its held-out episodes; returns the summary (also ``run_dir/summary.json``)."""
    started = time.perf_counter()
    net = load_network(copy_model(source_run, run_dir, "autoencoder", "autoencoder_from"), "autoencoder").to(device)
    store = EpisodeStore(store_dir, create=False)
    _, val_ids = split_episodes(len(store), val_episodes, str(store_dir))
    latents = encode_store(net, store, run_dir / "latents", device=device, progress=progress)
    summary: dict = {"reused_from": str(source_run), "latent_store": str(latents.root),
                     "latent_bytes_per_frame": latents.bytes_per_frame()}
    if val_ids:
        summary.update(reconstruction_scores(net, store, val_ids, clips=val_clips, seed=seed + 1, device=device))
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def reuse_lam(
    source_run: str | Path,
    run_dir: Path,
    latents_dir: Path,
    store_dir: Path,
    *,
    val_episodes: int,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """``source_run``'s latent action model labels this run's transitions (saved in the latent
    cache for a latent-input LAM) and is scored on its held-out episodes; returns the summary
    (also ``run_dir/summary.json``)."""
    started = time.perf_counter()
    net = load_network(copy_model(source_run, run_dir, "lam", "lam_from"), "lam").to(device)
    latent = net.cfg.input == "latent"
    path = latents_dir if latent else store_dir
    source = LatentStore(path) if latent else EpisodeStore(path, create=False)
    _, val_ids = split_episodes(len(source), val_episodes, str(path))
    try:
        labels = label_store(net, source) if latent else label_transitions(net, source)
    except ValueError as err:  # the LAM was trained on latents (or frames) of another shape
        raise ConfigError(f"lam_from={source_run}: its network does not fit this run's data: {err}") from err
    summary = {"reused_from": str(source_run), **lam_figures(labels, source, val_ids, net.cfg.num_codes, seed)}
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


__all__ = ["copy_model", "reconstruction_scores", "reuse_autoencoder", "reuse_lam"]
