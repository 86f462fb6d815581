"""The saved networks by name: one table that rebuilds each from its saved config, used by
training stages' weights (``worldsim.weights.load_network``) and by bundles
(``worldsim.bundle.load_bundle``) alike."""

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


def network_config(name: str, values: dict[str, Any]) -> Any:
    """The config of network ``name`` from its saved fields."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; allowed: {list(NETWORKS)}")
    return NETWORKS[name][1](values)


def network_builder(name: str, values: dict[str, Any]) -> Callable[[], nn.Module]:
    """A function that builds network ``name`` from its saved config (checked now)."""
    cfg = network_config(name, values)
    cls = NETWORKS[name][0]
    return lambda: cls(cfg)


__all__ = ["NETWORKS", "network_builder", "network_config"]
