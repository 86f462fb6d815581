"""``worldsim info store=DIR``: print the summary of an episode store."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from worldsim.config import ConfigError, require
from worldsim.data.store import EpisodeStore


def run(cfg: DictConfig) -> dict:
    root = Path(require(cfg, "store"))
    if not root.is_dir():
        raise ConfigError(f"store={root}: no such directory")
    store = EpisodeStore(root, create=False)
    store.print_summary()
    return store.summary()
