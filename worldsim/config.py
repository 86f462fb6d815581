"""Hydra composition for every `worldsim` command, with loud errors for misspelt keys.

Configs live in the repository's top-level ``configs/`` (found next to the package in an
editable install, or through ``$WORLDSIM_CONFIG_DIR``). Each command has a primary config
(``configs/<command>.yaml``) that pulls in config groups (``env/``, ``data/``, ``autoencoder/``,
``trainer/``, ...) and, last, an optional ``experiment/`` preset.

We use Hydra's compose API rather than ``@hydra.main`` so that nothing changes the working
directory and a command can be called from Python (tests, the quickstart pipeline) as easily as
from the shell. The composed config is in struct mode: overriding a key that does not exist
fails with Hydra's message naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A command's overrides do not compose into a valid config."""


def config_dir() -> Path:
    """The directory holding the hydra configs."""
    env = os.environ.get("WORLDSIM_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "configs")
    for path in candidates:
        if (path / "collect.yaml").is_file():
            return path
    raise ConfigError(
        "worldsim cannot find its configs/ directory (looked in "
        + ", ".join(str(p) for p in candidates)
        + "). Install the project in editable mode (`pip install -e .`) from a checkout, "
        "or point WORLDSIM_CONFIG_DIR at the checkout's configs/."
    )


def group_options(group: str) -> list[str]:
    """Names of the options of a config group, e.g. ``group_options('env')``."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _rewrite_env_shortcut(overrides: list[str]) -> list[str]:
    """Let ``env=ALE/Breakout-v5`` name any gymnasium id, not only a file in configs/env/.

    An ``env=`` value that is not an option of the ``env`` group becomes ``env=gym env.id=VALUE``.
    """
    options = set(group_options("env"))
    out: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key == "env" and value and value not in options:
            out += ["env=gym", f"env.id={value}"]
        else:
            out.append(item)
    return out


def compose(command: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``configs/<command>.yaml`` with hydra-style ``key=value`` overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = _rewrite_env_shortcut(list(overrides or []))
    root = config_dir()
    if not (root / f"{command}.yaml").is_file():
        raise ConfigError(f"no config for command {command!r}: expected {root / (command + '.yaml')}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3", job_name=command):
            cfg = hydra_compose(config_name=command, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"worldsim {command}: {err}") from err
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def require(cfg: DictConfig, key: str):
    """Read a mandatory key, naming it when it is missing (``???``)."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as err:  # omegaconf raises MissingMandatoryValue
        raise ConfigError(f"missing value for {key!r}: pass {key}=...") from err
    if value is None:
        raise ConfigError(f"missing value for {key!r}: pass {key}=...")
    return value
