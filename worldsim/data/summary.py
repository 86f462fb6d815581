"""``worldsim info store=DIR``: print the summary of an episode store, and check its shards.

Read-only: the store is opened with ``create=False``, so nothing in the folder is written,
renamed or deleted. Shards that cannot be read are named in one ``warning:`` line each.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import DictConfig

from worldsim.config import ConfigError, require, typed
from worldsim.data.store import EpisodeStore

CHECKS = ("quick", "full", "none")


def run(cfg: DictConfig) -> dict:
    root = Path(require(cfg, "store"))
    check = typed(cfg, "check", str)
    if check not in CHECKS:
        raise ConfigError(f"check={check!r}: allowed values are {', '.join(CHECKS)}")
    if not root.is_dir():
        raise ConfigError(f"store={root}: no such directory")
    store = EpisodeStore(root, create=False)
    bad = dict(store.bad_shards)
    if check != "none":
        bad.update(store.verify(full=check == "full"))
    store.print_summary()
    for name in sorted(set(bad) - set(store.bad_shards)):  # skipped ones were warned on open
        warnings.warn(f"{root / name}: {bad[name]}; reading this episode will fail", stacklevel=2)
    return {**store.summary(), "bad_shards": bad}
