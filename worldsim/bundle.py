"""A Simulator bundle: one directory holding everything a trained world needs to run.

Layout (every file is written into a temporary sibling directory that is renamed into place at
the end, so a half-written bundle never exists under the final name)::

    bundle.json           format version, worldsim version, the names of its networks, the
                          action setup (``action_setup``: source, num_codes, the game's action
                          space; ``worldsim.actions.ActionSetup``), frame size, fps, source game id
    autoencoder.{json,safetensors}   frame autoencoder (``worldsim.weights`` format: the
                          config, in <name>.json, is stored there and only there)
    dynamics.{json,safetensors}      spatiotemporal DiT
    heads.{json,safetensors}         reward / termination heads (optional)
    lam.{json,safetensors}           latent action model (optional)
    action_adapter.{json,safetensors}  real action -> latent code in the current state (optional;
                          ``worldsim.action_adapter``; the Simulator prefers it to the binding)
    latent_stats.json     per-channel ``mean`` / ``std`` of the latents the dynamics works on
    binding.json          latent code <-> real action binding (optional)
    contexts.npz          start contexts: ``frames`` uint8 [N, k, H, W, 3] and optionally
                          ``actions`` ([N, k-1] int64 or [N, k-1, a] float32, in the form the
                          dynamics is conditioned on; for ``action_source="both"`` two arrays
                          ``actions_codes`` and ``actions_vectors``)

**Action setup.** ``Bundle.actions`` (:class:`~worldsim.actions.ActionSetup`) says what the
dynamics was trained on (its ``source``: ``latent`` codes of the latent action model, ``real``
actions of the game, or ``both``), how many codes there are, the game's action space, the
binding and whether there is an action adapter; it converts a caller's actions into the
dynamics' form and checks the saved networks against itself.

**Older formats**, all read: format 1 keeps the action setup as the top-level
``action_source``, ``num_latent_actions`` and ``action_space`` of ``bundle.json`` and names the
networks' field ``action_type`` (now ``action_embedding``); formats 1 and 2 hold each network's
config twice, in ``bundle.json`` ``networks`` and in ``<name>.json``, and are built from the
first (as their readers did).

einops legend: n contexts, k context frames, H W frame size, c latent channels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worldsim.action_adapter import ActionAdapter
from worldsim.actions import ActionSetup
from worldsim.autoencoder import Autoencoder
from worldsim.binding import ActionBinding
from worldsim.context_file import read_contexts
from worldsim.dynamics import DynamicsModel
from worldsim.heads import RewardTerminationHeads
from worldsim.latent_action import LatentActionModel
from worldsim.networks import NETWORKS, network_builder
from worldsim.version import __version__
from worldsim.weights import WeightsError, build_and_load, read_meta, save_weights

BUNDLE_FORMAT = 3
SUPPORTED_FORMATS = (1, 2, 3)  # module docstring, "Older formats"
META_KEYS = ("action_source", "action_space", "fps", "game", "num_latent_actions")


class BundleError(ValueError):
    """A bundle directory is missing, incomplete, of an unknown format, or inconsistent."""


@dataclass
class Bundle:
    """The loaded parts of a bundle (networks in eval mode on the CPU, float32)."""

    path: Path
    autoencoder: Autoencoder
    dynamics: DynamicsModel
    latent_mean: torch.Tensor  # [c]
    latent_std: torch.Tensor  # [c]
    contexts: np.ndarray  # uint8 [n, k, H, W, 3]
    context_actions: Any = None  # [n, k-1] | [n, k-1, a] | (codes, vectors) | None
    heads: RewardTerminationHeads | None = None
    lam: LatentActionModel | None = None
    binding: ActionBinding | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # META_KEYS (what save_bundle takes)
    action_adapter: ActionAdapter | None = None
    actions: ActionSetup | None = None  # None: built from meta, binding and adapter

    def __post_init__(self) -> None:
        if self.actions is None:
            self.actions = ActionSetup(
                self.meta.get("action_source", "latent"),
                self.meta.get("num_latent_actions"),
                self.meta.get("action_space"),
                self.binding,
                self.action_adapter is not None,
            )

    @property
    def action_source(self) -> str:
        return self.actions.source

    @property
    def action_space(self) -> dict[str, Any] | None:
        """The real game's action space JSON (``{"type": "discrete", "n": ..}`` or box), or None."""
        return self.actions.space

    @property
    def num_latent_actions(self) -> int | None:
        return self.actions.num_codes

    @property
    def fps(self) -> float:
        return float(self.meta.get("fps") or 15.0)

    @property
    def frame_size(self) -> tuple[int, int]:
        return (self.autoencoder.cfg.frame_height, self.autoencoder.cfg.frame_width)


# --------------------------------------------------------------------------------- saving
def _config_of(name: str, net: nn.Module) -> Any:
    cfg = getattr(net, "cfg", None)
    if not dataclasses.is_dataclass(cfg):
        raise BundleError(f"save_bundle: {name} ({type(net).__name__}) has no dataclass config")
    return cfg


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_contexts(contexts: Any, frame_size: tuple[int, int]) -> np.ndarray:
    frames = _as_numpy(contexts)
    if frames.ndim == 4:  # one context [k, H, W, 3]
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise BundleError(
            f"save_bundle: contexts must be uint8 [N, k, H, W, 3], got {frames.dtype} "
            f"{list(frames.shape)}"
        )
    if tuple(frames.shape[2:4]) != frame_size or frames.shape[0] < 1:
        raise BundleError(
            f"save_bundle: contexts are {frames.shape[2]}x{frames.shape[3]} frames but the "
            f"autoencoder expects {frame_size[0]}x{frame_size[1]} (and N >= 1)"
        )
    return frames


def _infer_meta(meta: dict[str, Any], dynamics, lam, binding) -> dict[str, Any]:
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise BundleError(f"save_bundle: unknown meta key(s) {unknown}; allowed: {list(META_KEYS)}")
    out = dict(meta)
    source = out.setdefault("action_source", "latent")
    if out.get("num_latent_actions") is None:
        if lam is not None:
            out["num_latent_actions"] = lam.cfg.num_codes
        elif source in ("latent", "both"):
            out["num_latent_actions"] = dynamics.cfg.num_actions
        elif binding is not None:
            out["num_latent_actions"] = binding.num_codes
        else:
            out["num_latent_actions"] = None
    out.setdefault("action_space", None)
    out.setdefault("fps", 15.0)
    out.setdefault("game", None)
    return out


def _action_setup(meta: dict[str, Any], binding, adapter, dyn_cfg, heads_cfg, adapter_cfg,
                  where: str) -> ActionSetup:
    """The bundle's action setup, checked against its networks (``BundleError`` naming ``where``)."""
    try:
        setup = ActionSetup(meta["action_source"], meta.get("num_latent_actions"),
                            meta.get("action_space"), binding, adapter)
        setup.check_networks(dyn_cfg, heads_cfg, where)
        if adapter_cfg is not None:
            setup.check_adapter(adapter_cfg, dyn_cfg, where)
    except ValueError as err:
        message = str(err)
        raise BundleError(message if message.startswith(where) else f"{where}: {message}") from err
    return setup


def save_bundle(
    path: str | os.PathLike,
    *,
    autoencoder: Autoencoder,
    dynamics: DynamicsModel,
    latent_mean: Any,
    latent_std: Any,
    contexts: Any,
    context_actions: Any = None,
    heads: RewardTerminationHeads | None = None,
    lam: LatentActionModel | None = None,
    binding: ActionBinding | None = None,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
    action_adapter: ActionAdapter | None = None,
) -> Path:
    """Write a bundle directory at ``path`` atomically; returns the path.

    ``meta`` may hold ``action_source`` (latent|real|both, default latent), ``action_space``
    (the game's action space JSON), ``fps``, ``game`` (source id) and ``num_latent_actions``.
    An existing ``path`` is replaced only with ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"save_bundle: {path} exists; pass overwrite=True to replace it")
    frame_size = (autoencoder.cfg.frame_height, autoencoder.cfg.frame_width)
    frames = _check_contexts(contexts, frame_size)
    mean, std = _as_numpy(latent_mean).astype(np.float64), _as_numpy(latent_std).astype(np.float64)
    c = dynamics.cfg.latent_channels
    if mean.shape != (c,) or std.shape != (c,) or (std <= 0).any():
        raise BundleError(
            f"save_bundle: latent_mean/latent_std must be [{c}] (std > 0), got "
            f"{list(mean.shape)} / {list(std.shape)}"
        )
    info = _infer_meta(dict(meta or {}), dynamics, lam, binding)
    setup = _action_setup(info, binding, action_adapter is not None, dynamics.cfg,
                          heads.cfg if heads else None,
                          action_adapter.cfg if action_adapter else None, "save_bundle")
    nets = {"autoencoder": autoencoder, "dynamics": dynamics, "heads": heads, "lam": lam,
            "action_adapter": action_adapter}
    doc = {
        "format_version": BUNDLE_FORMAT,
        "worldsim_version": __version__,
        "networks": [name for name, net in nets.items() if net is not None],
        "frame_size": list(frame_size),
        "action_setup": setup.to_json(),
        "fps": info["fps"],
        "game": info["game"],
    }
    arrays = {"frames": frames}
    if context_actions is not None:
        if isinstance(context_actions, tuple):
            arrays["actions_codes"] = _as_numpy(context_actions[0]).astype(np.int64)
            arrays["actions_vectors"] = _as_numpy(context_actions[1]).astype(np.float32)
        else:
            acts = _as_numpy(context_actions)
            arrays["actions"] = acts.astype(np.int64 if acts.ndim == 2 else np.float32)
        lead = next(a for k, a in arrays.items() if k != "frames").shape[:2]
        if tuple(lead) != (frames.shape[0], frames.shape[1] - 1):
            raise BundleError(
                f"save_bundle: context_actions lead shape {list(lead)} must be "
                f"[N={frames.shape[0]}, k-1={frames.shape[1] - 1}]"
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name, net in nets.items():
            if net is not None:
                save_weights(net, _config_of(name, net), tmp, name)
        (tmp / "latent_stats.json").write_text(
            json.dumps({"mean": mean.tolist(), "std": std.tolist()}, indent=2)
        )
        if binding is not None:
            (tmp / "binding.json").write_text(json.dumps(binding.to_dict()))
        np.savez_compressed(tmp / "contexts.npz", **arrays)
        (tmp / "bundle.json").write_text(json.dumps(doc, indent=2))  # last: marks completion
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------------- loading
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"bundle {path.parent}: missing file {path.name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"bundle file {path} is not valid JSON: {err}") from err


def _configs(root: Path, doc: dict[str, Any]) -> dict[str, tuple[Any, Path, str]]:
    """Network name -> (its saved config, the file holding it, how to name it in errors): each
    ``<name>.json``, or the ``bundle.json`` ``networks`` configs of formats 1 and 2."""
    listed = doc.get("networks", [])
    if isinstance(listed, dict):
        return {n: (v, root / "bundle.json", f"bundle.json networks.{n}") for n, v in listed.items()}
    unknown = sorted(set(listed) - set(NETWORKS))
    if unknown:
        raise BundleError(f"bundle {root}: bundle.json lists unknown network(s) {unknown}")
    out = {}
    for name in listed:
        try:
            out[name] = (read_meta(root, name)["config"], root / f"{name}.json", f"{name}.json config")
        except WeightsError as err:
            raise BundleError(f"bundle {root}: {err}") from err
    return out


def _build(root: Path, name: str, config: Any, config_file: Path, label: str) -> nn.Module:
    try:
        build = network_builder(name, config)
    except (TypeError, ValueError) as err:
        raise BundleError(f"bundle {root}: {label} is not a valid config: {err}") from err
    for suffix in (".json", ".safetensors"):
        if not (root / f"{name}{suffix}").is_file():
            raise BundleError(f"bundle {root}: missing file {name}{suffix}")
    try:  # the file's shapes are checked against the config before the network is built
        net = build_and_load(build, root, name, config_file)
    except WeightsError as err:
        raise BundleError(f"bundle {root}: {name} weights do not fit their config: {err}") from err
    return net.eval()


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle directory written by :func:`save_bundle`; raises :class:`BundleError`."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist (or is not a directory)")
    doc = _read_json(root / "bundle.json")
    version = doc.get("format_version")
    if version not in SUPPORTED_FORMATS:
        raise BundleError(
            f"bundle {root}: format version {version!r} is not supported; this worldsim "
            f"({__version__}) reads versions {list(SUPPORTED_FORMATS)}"
        )
    for required in ("autoencoder", "dynamics"):
        if required not in doc.get("networks", []):
            raise BundleError(f"bundle {root}: bundle.json lists no {required!r} network")
    configs = _configs(root, doc)
    nets = {name: _build(root, name, *configs[name]) if name in configs else None for name in NETWORKS}
    stats = _read_json(root / "latent_stats.json")
    c = nets["dynamics"].cfg.latent_channels
    try:
        mean = torch.tensor(stats["mean"], dtype=torch.float32)
        std = torch.tensor(stats["std"], dtype=torch.float32)
    except KeyError as err:
        raise BundleError(f"bundle {root}: latent_stats.json lacks key {err}") from err
    if mean.shape != (c,) or std.shape != (c,):
        raise BundleError(f"bundle {root}: latent_stats.json mean/std must have {c} channels")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise BundleError(
            f"bundle {root}: latent_stats.json needs finite mean and std > 0, got mean "
            f"{mean.tolist()} std {std.tolist()}"
        )
    binding = None
    if (root / "binding.json").is_file():
        try:
            binding = ActionBinding.from_dict(_read_json(root / "binding.json"))
        except ValueError as err:
            raise BundleError(f"bundle {root}: binding.json: {err}") from err
    where, adapter = f"bundle {root}", nets["action_adapter"]
    try:
        saved = ActionSetup.from_json(doc)
    except ValueError as err:
        raise BundleError(f"{where}: {err}") from err
    meta = {"action_source": saved.source, "num_latent_actions": saved.num_codes,
            "action_space": saved.space, "fps": doc.get("fps"), "game": doc.get("game")}
    setup = _action_setup(meta, binding, adapter is not None, nets["dynamics"].cfg,
                            nets["heads"] and nets["heads"].cfg, adapter and adapter.cfg, where)
    ae = nets["autoencoder"]
    try:
        frames, actions = read_contexts(
            root / "contexts.npz", (ae.cfg.frame_height, ae.cfg.frame_width)
        )
    except ValueError as err:
        raise BundleError(f"bundle {root}: {err}") from err
    return Bundle(
        path=root,
        autoencoder=ae,
        dynamics=nets["dynamics"],
        latent_mean=mean,
        latent_std=std,
        contexts=frames,
        context_actions=actions,
        heads=nets["heads"],
        lam=nets["lam"],
        binding=binding,
        meta=meta,
        action_adapter=adapter,
        actions=setup,
    )


__all__ = [
    "BUNDLE_FORMAT",
    "SUPPORTED_FORMATS",
    "Bundle",
    "BundleError",
    "load_bundle",
    "save_bundle",
]
