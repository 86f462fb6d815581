"""The saved networks by name: one table that rebuilds each from its saved config, used by
training stages' weights (``worldsim.weights.load_network``) and by bundles
(``worldsim.bundle.load_bundle``) alike. A config saved under an older field name
(``RENAMED_FIELDS``) is read under the new one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from worldsim.action_adapter import ActionAdapter, ActionAdapterConfig
from worldsim.autoencoder import Autoencoder
from worldsim.autoencoder import config_from_dict as autoencoder_config
from worldsim.dynamics import DynamicsConfig, DynamicsModel
from worldsim.heads import HeadsConfig, RewardTerminationHeads
from worldsim.latent_action import LatentActionModel
from worldsim.latent_action import config_from_dict as lam_config

# name -> (network class, its config from a saved dict; an unknown or invalid field raises
# TypeError or ValueError naming it)
NETWORKS: dict[str, tuple[type[nn.Module], Callable[[dict[str, Any]], Any]]] = {
    "autoencoder": (Autoencoder, autoencoder_config),
    "lam": (LatentActionModel, lam_config),
    "dynamics": (DynamicsModel, lambda c: DynamicsConfig(**c)),
    "heads": (RewardTerminationHeads, lambda c: HeadsConfig(**c)),
    "action_adapter": (ActionAdapter, lambda c: ActionAdapterConfig(**c)),
}


# name -> {old field: new field} of configs saved before a rename (worldsim/actions.py, "Saved names")
RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "dynamics": {"action_type": "action_embedding"},
    "heads": {"action_type": "action_embedding"},
}


def current_fields(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Saved config fields of network ``name`` under today's names (``RENAMED_FIELDS``)."""
    out = dict(values)
    for old, new in RENAMED_FIELDS.get(name, {}).items():
        if old in out:
            if new in out:
                raise ValueError(f"{name} config holds both {old!r} and its new name {new!r}")
            out[new] = out.pop(old)
    return out


def network_config(name: str, values: dict[str, Any]) -> Any:
    """The config of network ``name`` from its saved fields (old names read as new ones)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; allowed: {list(NETWORKS)}")
    return NETWORKS[name][1](current_fields(name, values))


def network_builder(name: str, values: dict[str, Any]) -> Callable[[], nn.Module]:
    """A function that builds network ``name`` from its saved config (checked now)."""
    cfg = network_config(name, values)
    cls = NETWORKS[name][0]
    return lambda: cls(cfg)


__all__ = ["NETWORKS", "RENAMED_FIELDS", "current_fields", "network_builder", "network_config"]
