"""Stage builders: from a composed config to the network, datasets and the end-of-stage export.

``BUILDERS[stage](cfg, run_dir) -> Stage``; ``worldsim.training.train.run`` does the rest.
Held-out episodes (the last ``data.val_episodes`` of the store) never reach training.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from worldsim.config import ConfigError
from worldsim.training.base import StageModule
from worldsim.training.train import Stage, optim_config

TRAIN_LENGTH = 2**62  # clip datasets are pure functions of the index: epochs draw fresh windows


def split_episodes(num: int, val_episodes: int, store: str) -> tuple[list[int], list[int]]:
    """Train and held-out episode indices: the last ``val_episodes`` are held out."""
    if num == 0:
        raise ConfigError(f"data.store={store} holds no episodes: record some with `worldsim collect`")
    val = min(val_episodes, num - 1)
    return list(range(num - val)), list(range(num - val, num))


def build_autoencoder(cfg: DictConfig, run_dir: Path) -> Stage:
    from worldsim.autoencoder import Autoencoder
    from worldsim.data import ClipDataset, EpisodeStore
    from worldsim.training.autoencoder_module import AutoencoderModule

    try:
        ae_cfg = instantiate(cfg.autoencoder)
    except Exception as err:  # hydra wraps the ValueError naming the unknown preset or field
        raise ConfigError(f"autoencoder config: {err}") from err
    store_path = Path(cfg.data.store)
    if not (store_path / "index.json").exists() and not any(store_path.glob("shard_*")):
        raise ConfigError(f"data.store={store_path} is not an episode store (no index.json or shards)")
    store = EpisodeStore(store_path, create=False)
    train_ids, val_ids = split_episodes(len(store), int(cfg.data.val_episodes), str(store_path))
    size = (ae_cfg.frame_height, ae_cfg.frame_width)
    clip = ae_cfg.temporal_compression if ae_cfg.temporal_compression > 1 else 1
    common = dict(resize=size, frame_skip=int(cfg.data.frame_skip), with_actions=False)
    train_set = ClipDataset(store, clip, seed=int(cfg.data.seed), length=TRAIN_LENGTH, episodes=train_ids, **common)
    val_set = ClipDataset(store, clip, seed=int(cfg.data.seed) + 1, length=int(cfg.data.val_clips), episodes=val_ids, **common) if val_ids else None
    module = AutoencoderModule(Autoencoder(ae_cfg), optim_config(cfg.trainer))
    started = time.perf_counter()

    def finish(trainer: L.Trainer, module: StageModule) -> dict:
        from worldsim.data.latent_store import encode_store
        from worldsim.weights import save_weights

        seconds = time.perf_counter() - started
        net = module.net.eval()
        save_weights(net, net.cfg, run_dir / "model", "autoencoder")
        summary: dict = {"train_seconds": seconds}
        if val_set is not None:
            summary.update(evaluate_reconstruction(module, val_set))
        if cfg.encode_cache:
            cache = run_dir / "latents"
            manifest = cache / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") != net.fingerprint():
                shutil.rmtree(cache)  # encoded by this run's earlier weights (before a resume)
            latents = encode_store(net, store, cache, device=str(module.device),
                                   progress=bool(cfg.trainer.progress))
            summary["latent_store"] = str(latents.root)
            summary["latent_bytes_per_frame"] = latents.bytes_per_frame()
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    return Stage(module=module, train_set=train_set, val_set=val_set, finish=finish)


@torch.no_grad()
def evaluate_reconstruction(module, dataset, batch_size: int = 64) -> dict[str, float]:
    """Mean PSNR/SSIM of the module's reconstructions over a held-out dataset."""
    from torch.utils.data import DataLoader

    psnrs, ssims = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        m = module.validation_metrics(batch)
        n = batch["frames"].shape[0]
        psnrs.append(float(m["recon_psnr"]) * n)
        ssims.append(float(m["recon_ssim"]) * n)
    count = len(dataset)
    return {"recon_psnr": sum(psnrs) / count, "recon_ssim": sum(ssims) / count}


BUILDERS = {"autoencoder": build_autoencoder}
