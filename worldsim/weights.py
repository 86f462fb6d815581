"""Save and load one network as ``<dir>/<name>.json`` (its config) + ``<dir>/<name>.safetensors``.

This is the exchange format between stages (the latent action model loads the trained
autoencoder, the simulator bundle gathers them all), independent of Lightning's checkpoints,
which hold optimizer state and are only for resuming. Both files are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """Saved weights are missing, truncated, or do not fit the network."""


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(net: nn.Module, config: Any, directory: str | Path, name: str, extra: dict | None = None) -> Path:
    """Write ``net``'s state and its dataclass ``config`` under ``directory``; returns the weights path."""
    directory = Path(directory)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {"format_version": FORMAT_VERSION, "name": name, "class": type(net).__qualname__, "config": cfg,
            "extra": extra or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    weights = directory / f"{name}.safetensors"
    _atomic_replace(weights, lambda tmp: save_file(state, tmp))
    _atomic_replace(directory / f"{name}.json",
                    lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
    return weights


def read_meta(directory: str | Path, name: str) -> dict:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"missing {path}: no saved {name!r} network in {directory}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path} is not valid JSON ({err}); the file is truncated or corrupt") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: format version {meta.get('format_version')!r}, this worldsim reads "
                           f"{FORMAT_VERSION}")
    return meta


def load_state(directory: str | Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsError(f"missing {path}: no saved {name!r} weights in {directory}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path}: {err} (truncated or corrupt file?)") from err


def load_into(net: nn.Module, directory: str | Path, name: str) -> nn.Module:
    """Load saved weights into an already-built ``net``, naming any mismatch."""
    state = load_state(directory, name)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"weights {Path(directory) / (name + '.safetensors')} do not fit "
                           f"{type(net).__name__}: {err}") from err
    return net


def load_network(directory: str | Path, name: str) -> nn.Module:
    """The network ``name`` (autoencoder, lam, dynamics, heads or action_adapter) saved under
    ``directory`` (a training stage's ``<run_dir>/model``), rebuilt from its saved config, in
    eval mode."""
    from worldsim.action_adapter import ActionAdapter, ActionAdapterConfig
    from worldsim.autoencoder import Autoencoder
    from worldsim.autoencoder import config_from_dict as ae_config
    from worldsim.dynamics import DynamicsConfig, DynamicsModel
    from worldsim.heads import HeadsConfig, RewardTerminationHeads
    from worldsim.latent_action import LatentActionModel
    from worldsim.latent_action import config_from_dict as lam_config

    build = {
        "autoencoder": lambda c: Autoencoder(ae_config(c)),
        "lam": lambda c: LatentActionModel(lam_config(c)),
        "dynamics": lambda c: DynamicsModel(DynamicsConfig(**c)),
        "heads": lambda c: RewardTerminationHeads(HeadsConfig(**c)),
        "action_adapter": lambda c: ActionAdapter(ActionAdapterConfig(**c)),
    }
    if name not in build:
        raise ValueError(f"load_network: unknown network {name!r}; allowed: {list(build)}")
    return load_into(build[name](read_meta(directory, name)["config"]), directory, name).eval()
