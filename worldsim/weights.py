"""Save and load one network as ``<dir>/<name>.json`` (its config) + ``<dir>/<name>.safetensors``.

This is the exchange format between stages (the latent action model loads the trained
autoencoder, the simulator bundle gathers them all), independent of Lightning's checkpoints,
which hold optimizer state and are only for resuming. Both files are written atomically.

Nothing read here runs code: configs are JSON, weights safetensors, and the torch files that
remain (Lightning and agent checkpoints) go through :func:`load_plain`, which refuses any object
other than tensors and plain data. Before a network is built from a saved config, the shapes
in the safetensors header are compared with the ones that config makes (built on the ``meta``
device, which allocates nothing), so a config declaring a huge network fails before any memory
is spent on it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from worldsim.data.atomic import atomic_path, atomic_write_bytes
from worldsim.networks import NETWORKS, current_fields, network_builder

FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)  # 1: configs under the field names of worldsim.networks.RENAMED_FIELDS


class WeightsError(RuntimeError):
    """Saved weights are missing, truncated, or do not fit the network."""


def save_weights(net: nn.Module, config: Any, directory: str | Path, name: str, extra: dict | None = None) -> Path:
    """Write ``net``'s state and its dataclass ``config`` under ``directory``; returns the weights path."""
    directory = Path(directory)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {"format_version": FORMAT_VERSION, "name": name, "class": type(net).__qualname__, "config": cfg,
            "extra": extra or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    weights = directory / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, tmp)
    atomic_write_bytes(directory / f"{name}.json", json.dumps(meta, indent=2, default=str).encode("utf-8"))
    return weights


def read_meta(directory: str | Path, name: str) -> dict:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"missing {path}: no saved {name!r} network in {directory}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path} is not valid JSON ({err}); the file is truncated or corrupt") from err
    if meta.get("format_version") not in SUPPORTED_VERSIONS:
        raise WeightsError(f"{path}: format version {meta.get('format_version')!r}, this worldsim reads "
                           f"{list(SUPPORTED_VERSIONS)}")
    if name in NETWORKS and isinstance(meta.get("config"), dict):
        try:
            meta["config"] = current_fields(name, meta["config"])
        except ValueError as err:
            raise WeightsError(f"{path}: {err}") from err
    return meta


def load_state(directory: str | Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsError(f"missing {path}: no saved {name!r} weights in {directory}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path}: {err} (truncated or corrupt file?)") from err


def load_plain(path: str | Path, *, mmap: bool = False) -> Any:
    """A ``torch.save`` file holding only tensors and plain data (dicts, lists, tuples, numbers,
    strings), read with ``weights_only=True``: a file holding any other object is refused before
    that object is built, so a crafted file cannot run code. Raises :class:`WeightsError` (one
    line naming the file)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except UnpicklingError as err:
        found = re.search(r"Unsupported global: ([^\n]*?)(?: was not an allowed global|\n|$)", str(err))
        what = found.group(1) if found else _first_line(err)
        raise WeightsError(f"refused to load {path}: it holds objects other than tensors and plain data "
                           f"({what}), and loading those could run code") from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"cannot read {path}: {_first_line(err)} (truncated or corrupt file?)") from err


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"weights {path}: tensor {key!r} holds NaN or infinite values")


def load_into(net: nn.Module, directory: str | Path, name: str) -> nn.Module:
    """Load saved weights into an already-built ``net``, naming any mismatch or non-finite tensor."""
    path = Path(directory) / f"{name}.safetensors"
    state = load_state(directory, name)
    _check_finite(state, path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"weights {path} do not fit {type(net).__name__}: {err}") from err
    return net


def header_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (reads the header only)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path}: {err} (truncated or corrupt file?)") from err


def check_shapes(build: Callable[[], nn.Module], path: str | Path, config_file: str | Path) -> None:
    """Compare the shapes ``build()`` would make (built on the ``meta`` device: no memory) with
    the tensors in the safetensors file ``path``; raises :class:`WeightsError` naming the first
    difference, before anything is allocated for a network the file does not hold."""
    path = Path(path)
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in build().state_dict().items()}
    found = header_shapes(path)
    for key, shape in expected.items():
        if key not in found:
            raise WeightsError(f"weights {path} lack tensor {key!r} ({shape}) that the config in "
                               f"{config_file} makes")
        if found[key] != shape:
            raise WeightsError(f"weights {path}: tensor {key!r} is {found[key]} but the config in "
                               f"{config_file} makes {shape}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise WeightsError(f"weights {path} hold tensor {extra[0]!r} ({found[extra[0]]}) that the config "
                           f"in {config_file} does not make")


def build_and_load(build: Callable[[], nn.Module], directory: str | Path, name: str,
                   config_file: str | Path) -> nn.Module:
    """``build()`` the network and load ``<directory>/<name>.safetensors`` into it, after
    checking that the file's shapes fit what ``build`` makes (see :func:`check_shapes`)."""
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsError(f"missing {path}: no saved {name!r} weights in {directory}")
    check_shapes(build, path, config_file)
    return load_into(build(), directory, name)


def load_network(directory: str | Path, name: str) -> nn.Module:
    """The network ``name`` (autoencoder, lam, dynamics, heads or action_adapter) saved under
    ``directory`` (a training stage's ``<run_dir>/model``), rebuilt from its saved config, in
    eval mode."""
    if name not in NETWORKS:
        raise ValueError(f"load_network: unknown network {name!r}; allowed: {list(NETWORKS)}")
    build = network_builder(name, read_meta(directory, name)["config"])
    return build_and_load(build, directory, name, Path(directory) / f"{name}.json").eval()
