"""Stage builders: from a composed config to the network, datasets and the end-of-stage export.

``BUILDERS[stage](cfg, run_dir) -> Stage``; ``worldsim.training.train.run`` does the rest.
Held-out episodes (the last ``data.val_episodes`` of the store) never reach training.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from torch.utils.data import DataLoader

from worldsim.actions import TRAIN_ACTION_SOURCES, ActionSetup
from worldsim.autoencoder import Autoencoder, config_from_dict
from worldsim.binding import ActionBinding, binding_accuracy_at_k
from worldsim.config import ConfigError
from worldsim.data import ClipDataset, EpisodeStore
from worldsim.data.atomic import atomic_write_json
from worldsim.data.latent_clips import LatentClipDataset
from worldsim.data.latent_store import LatentStore, encode_store
from worldsim.dynamics import DynamicsModel
from worldsim.evaluation import heads_metrics, rollout_metrics
from worldsim.heads import RewardTerminationHeads
from worldsim.heads import config_from_preset as heads_preset
from worldsim.latent_action import LatentActionModel, label_store, label_transitions
from worldsim.metrics import codebook_usage, normalized_mutual_information
from worldsim.training.autoencoder_module import AutoencoderModule
from worldsim.training.base import Stage, StageModule, optim_config
from worldsim.training.callbacks import trained_seconds
from worldsim.training.dynamics_module import DynamicsModule
from worldsim.training.lam_module import LatentActionModule
from worldsim.weights import load_into, read_meta, save_weights

TRAIN_LENGTH = 2**62  # clip datasets are pure functions of the index: epochs draw fresh windows


def split_episodes(num: int, val_episodes: int, store: str) -> tuple[list[int], list[int]]:
    """Train and held-out episode indices: the last ``val_episodes`` are held out."""
    if num == 0:
        raise ConfigError(f"data.store={store} holds no episodes: record some with `worldsim collect`")
    val = min(val_episodes, num - 1)
    return list(range(num - val)), list(range(num - val, num))


def build_autoencoder(cfg: DictConfig, run_dir: Path) -> Stage:
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

    def finish(trainer: L.Trainer, module: StageModule) -> dict:
        seconds = trained_seconds(trainer)
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
        atomic_write_json(run_dir / "summary.json", summary, indent=2)  # the step's "done" marker
        return summary

    return Stage(module=module, train_set=train_set, val_set=val_set, finish=finish)


@torch.no_grad()
def evaluate_reconstruction(module, dataset, batch_size: int = 64) -> dict[str, float]:
    """Mean PSNR/SSIM of the module's reconstructions over a held-out dataset."""
    psnrs, ssims = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        m = module.validation_metrics(batch)
        n = batch["frames"].shape[0]
        psnrs.append(float(m["recon_psnr"]) * n)
        ssims.append(float(m["recon_ssim"]) * n)
    count = len(dataset)
    return {"recon_psnr": sum(psnrs) / count, "recon_ssim": sum(ssims) / count}


def _instantiate(node: DictConfig, what: str, **fields):
    """Instantiate a model config node (``_target_: ...config_from_preset``) with extra fields."""
    try:
        return instantiate(node, **fields)
    except Exception as err:  # hydra wraps the ValueError naming the unknown preset or field
        raise ConfigError(f"{what} config: {err}") from err


def _latent_store(cfg: DictConfig):
    path = cfg.data.latents
    if path is None:
        raise ConfigError("data.latents is not set: pass data.latents=<autoencoder run_dir>/latents "
                          "(the latent cache the autoencoder stage wrote)")
    if not (Path(path) / "stats.json").exists():
        raise ConfigError(f"data.latents={path} is not a finished latent cache (no stats.json)")
    return LatentStore(path)


def _action_meta(latent_store) -> dict | None:
    """The real game's action space, from the first episode's metadata, if recorded."""
    meta = latent_store[0].get("metadata", {}) if len(latent_store) else {}
    return meta.get("action_space")


def build_lam(cfg: DictConfig, run_dir: Path) -> Stage:
    lam_cfg = _instantiate(cfg.lam, "lam")
    seed = int(cfg.data.seed)
    if lam_cfg.input == "latent":
        source = _latent_store(cfg)
        c, h, w = source.latent_shape
        lam_cfg = dataclasses.replace(lam_cfg, in_channels=c, frame_height=h, frame_width=w)
        train_ids, val_ids = split_episodes(len(source), int(cfg.data.val_episodes), str(cfg.data.latents))
        make = lambda ids, s, n: LatentClipDataset(source, lam_cfg.context + 1, seed=s, length=n, episodes=ids)  # noqa: E731
    else:
        source = EpisodeStore(cfg.data.store, create=False)
        train_ids, val_ids = split_episodes(len(source), int(cfg.data.val_episodes), str(cfg.data.store))
        make = lambda ids, s, n: ClipDataset(source, lam_cfg.context + 1, seed=s, length=n, episodes=ids,  # noqa: E731
                                             resize=(lam_cfg.frame_height, lam_cfg.frame_width))
    train_set = make(train_ids, seed, TRAIN_LENGTH)
    val_set = make(val_ids, seed + 1, int(cfg.data.val_clips)) if val_ids else None
    module = LatentActionModule(LatentActionModel(lam_cfg), optim_config(cfg.trainer))

    def finish(trainer: L.Trainer, module: StageModule) -> dict:
        seconds = trained_seconds(trainer)
        net = module.net.eval()
        save_weights(net, net.cfg, run_dir / "model", "lam")
        if lam_cfg.input == "latent":
            labels = label_store(net, source)  # every transition of every episode, for the dynamics stage
        else:
            labels = label_transitions(net, source)
        summary = {"train_seconds": seconds, "steps": int(trainer.global_step), **lam_figures(labels, source, val_ids, net.cfg.num_codes, seed)}
        atomic_write_json(run_dir / "summary.json", summary, indent=2)  # the step's "done" marker
        return summary

    return Stage(module=module, train_set=train_set, val_set=val_set, finish=finish)


def lam_figures(labels: list, source, val_ids: list[int], num_codes: int, seed: int) -> dict:
    """Codebook use over all transitions; NMI and binding accuracy at 10/100/1000 labelled
    transitions on the held-out episodes where the data has discrete real actions."""
    usage = codebook_usage(np.concatenate(labels), num_codes)
    out: dict = {"codebook_perplexity": usage["perplexity"], "codebook_used": usage["codes_used"],
                 "codebook_size": num_codes}
    has_actions = all(source.has(i, "actions") for i in range(len(source)))
    space = _action_meta(source) if hasattr(source, "latent_shape") else source.metadata(0).get("action_space")
    if not has_actions or not space or space.get("type") != "discrete":
        Console().print("[yellow]no discrete action labels in the data: NMI and binding accuracy are skipped")
        return out
    ids = val_ids or list(range(len(source)))
    codes = np.concatenate([labels[i] for i in ids])
    real = np.concatenate([source.read_steps(i)["actions"] for i in ids]).astype(np.int64)
    out["nmi"] = normalized_mutual_information(codes, real)
    n_actions = int(space["n"])
    for k in (10, 100, 1000):
        if k < codes.size:
            out[f"binding_accuracy_{k}"] = binding_accuracy_at_k(codes, real, k, num_codes, n_actions, seed=seed)["mean"]
    all_codes = np.concatenate(labels)
    all_real = np.concatenate([source.read_steps(i)["actions"] for i in range(len(source))]).astype(np.int64)
    binding = ActionBinding.fit(all_codes, all_real, num_codes, n_actions)
    out["binding"] = binding.to_dict()
    return out


def _auto_actions(latents, space: dict | None) -> str:
    """``action_source=auto``: the game's own actions where every episode has them (``real``
    when discrete; ``both`` when continuous, beside the LAM's codes), the LAM's codes otherwise."""
    if space is None or not all(latents.has(i, "actions") for i in range(len(latents))):
        return "latent"
    return "real" if space["type"] == "discrete" else "both"


def build_dynamics(cfg: DictConfig, run_dir: Path) -> Stage:
    latents = _latent_store(cfg)
    mode = cfg.action_source
    if mode not in TRAIN_ACTION_SOURCES:
        raise ConfigError(f"action_source={mode!r}: allowed values are {', '.join(TRAIN_ACTION_SOURCES)}")
    c, h, w = latents.latent_shape
    fields: dict = {"latent_channels": c, "latent_height": h, "latent_width": w}
    space = _action_meta(latents)
    if mode == "auto":
        mode = _auto_actions(latents, space)
    codes = None
    if mode in ("latent", "both"):
        if "lam" not in latents.label_names():
            raise ConfigError(f"action_source={mode}: {cfg.data.latents} has no latent action labels; train "
                              "the lam stage on this cache first (it writes them)")
        if cfg.data.lam_model:  # the LAM that wrote the labels knows its codebook size
            codes = int(read_meta(cfg.data.lam_model, "lam")["config"]["num_codes"])
        else:
            codes = int(_instantiate(cfg.lam, "lam").num_codes)
    if mode in ("real", "both"):
        has = all(latents.has(i, "actions") for i in range(len(latents)))
        if not has or space is None:
            raise ConfigError(f"action_source={mode}: the data in {cfg.data.latents} has no real actions "
                              "(video without labels?); use action_source=latent")
        if space["type"] == "discrete" and mode == "both":
            raise ConfigError("action_source=both needs continuous real actions next to the latent codes; "
                              "with discrete real actions use action_source=latent or action_source=real")
    fields.update(ActionSetup(mode, codes, space).embedding_fields())
    has_rewards = all(latents.has(i, "rewards") for i in range(len(latents)))
    dyn_cfg = _instantiate(cfg.dynamics, "dynamics", readout=bool(cfg.readout) and has_rewards, **fields)
    net = DynamicsModel(dyn_cfg)
    heads = None
    if has_rewards:
        # the heads read the codes of a ``both`` dynamics (DynamicsModule.head_actions)
        head_fields = {k: v for k, v in fields.items() if k != "action_embedding"}
        head_fields["action_embedding"] = ("discrete" if mode != "real" or dyn_cfg.action_embedding == "discrete"
                                           else "continuous")
        heads = RewardTerminationHeads(heads_preset(str(cfg.heads), **head_fields))
    ae = Autoencoder(config_from_dict(latents.autoencoder_config)).eval()
    ae_dir = Path(cfg.data.latents).parent / "model"
    if (ae_dir / "autoencoder.safetensors").exists():
        load_into(ae, ae_dir, "autoencoder")
    else:
        ae = None
    clip = int(cfg.data.clip_len) if cfg.data.clip_len else 16
    seed = int(cfg.data.seed)
    labels = ["lam"] if mode != "real" else []
    train_ids, val_ids = split_episodes(len(latents), int(cfg.data.val_episodes), str(cfg.data.latents))
    train_set = LatentClipDataset(latents, clip, seed=seed, length=TRAIN_LENGTH, episodes=train_ids, labels=labels)
    val_set = LatentClipDataset(latents, clip, seed=seed + 1, length=int(cfg.data.val_clips), episodes=val_ids,
                                labels=labels) if val_ids else None
    module = DynamicsModule(net, optim_config(cfg.trainer), action_source=mode, heads=heads, decoder=ae,
                            latent_mean=latents.mean, latent_std=latents.std, ema_decay=float(cfg.ema_decay),
                            sample_steps=int(cfg.world.sampler_steps), loss_kwargs={"self_forcing": float(cfg.self_forcing),
                                                      "teacher_forcing": bool(cfg.teacher_forcing)})

    def finish(trainer: L.Trainer, module: StageModule) -> dict:
        seconds = trained_seconds(trainer)
        ema = module.ema.eval()
        save_weights(ema, dyn_cfg, run_dir / "model", "dynamics", extra={"action_source": mode})
        summary: dict = {"train_seconds": seconds, "steps": int(trainer.global_step), "action_source": mode}
        if module.heads is not None:
            save_weights(module.heads.eval(), module.heads.cfg, run_dir / "model", "heads")
        if ae is not None and val_ids and Path(cfg.data.store).exists():
            # Lightning moves the module back to the CPU after fit; the sample callback may have
            # left the (unregistered) decoder on the GPU: put both where the module is.
            ae.to(module.device)
            store = EpisodeStore(cfg.data.store, create=False)
            summary.update(rollout_metrics(ae, ema, latents, store, val_ids, action_source=mode, steps=int(cfg.world.sampler_steps),
                                           num_codes=dyn_cfg.num_actions, device=module.device))
            if module.heads is not None:
                summary.update(heads_metrics(module.heads.eval(), latents, val_ids, action_source=mode, device=module.device))
        atomic_write_json(run_dir / "summary.json", summary, indent=2)  # the step's "done" marker
        return summary

    return Stage(module=module, train_set=train_set, val_set=val_set, finish=finish)


BUILDERS = {"autoencoder": build_autoencoder, "lam": build_lam, "dynamics": build_dynamics}
