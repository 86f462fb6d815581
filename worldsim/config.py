"""Hydra composition for every `worldsim` command, with loud errors for misspelt keys.

Configs live in the repository's top-level ``configs/`` (found next to the package in an
editable install, or through ``$WORLDSIM_CONFIG_DIR``). Each command has a primary config
(``configs/<command>.yaml``) that pulls in config groups (``env/``, ``data/``, ``autoencoder/``,
``trainer/``, ...) and, last, an optional ``experiment/`` preset.

We use Hydra's compose API rather than ``@hydra.main`` so that nothing changes the working
directory and a command can be called from Python (tests, the quickstart pipeline) as easily as
from the shell. The composed config is in struct mode: overriding a key that does not exist
fails, naming the key and the closest existing one. ``+key=value`` adds a key only inside a
node that is handed whole to a constructor (a node with ``_target_``, whose fields are checked
when it is instantiated, or a ``kwargs`` node); anywhere else an unknown key would be ignored,
so it is refused too.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class InputError(ValueError):
    """The user's input (a config value, a file, a game id) cannot be used; names it.

    The ``worldsim`` command prints these as one ``error:`` line (exit status 2), not a
    traceback; a plain ``ValueError`` is treated as a bug.
    """


class ConfigError(InputError):
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
    # lazy: `worldsim --help` imports this module and never composes (hydra: 0.25 s to import)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides = _rewrite_env_shortcut(list(overrides or []))
    _refuse_renamed_keys(command, overrides)
    _store_world_presets()
    root = config_dir()
    if not (root / f"{command}.yaml").is_file():
        raise ConfigError(f"no config for command {command!r}: expected {root / (command + '.yaml')}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3", job_name=command):
            try:
                cfg = hydra_compose(config_name=command, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as err:
                bad = _UNKNOWN_KEY.match(str(err))
                if bad is None:
                    raise ConfigError(f"worldsim {command}: {err}") from err
                rest = [o for o in overrides if o.lstrip("+").partition("=")[0] != bad.group(1)]
                keys = _all_keys(_base_config(command, rest))
                raise ConfigError(_unknown_key_message(command, bad.group(1), keys)) from err
            _refuse_added_keys(command, cfg, overrides)
    finally:
        GlobalHydra.instance().clear()
    _refuse_renamed_keys(command, [], cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg


_UNKNOWN_KEY = re.compile(r"^Could not override '([^']+)'")

#: Config keys that were renamed: old dotted key -> new one. Given on the command line or set by
#: a YAML file, an old key is refused on one line naming the new one (never read under either).
RENAMED_KEYS: dict[str, str] = {
    "actions": "action_source",
    **{key: f"world.{key}" for key in ("sampler_steps", "context_noise", "cfg_scale", "device",
                                       "action_type")},
    **{f"agent.{key}": f"world.{key}" for key in ("obs_type", "action_type", "sampler_steps",
                                                  "context_noise", "termination",
                                                  "termination_scale", "precision")},
    "planner.action_type": "world.action_type",
}
_ABSENT = object()


def _refuse_renamed_keys(command: str, overrides: list[str], cfg: DictConfig | None = None) -> None:
    """Refuse an old key of ``RENAMED_KEYS`` in ``overrides`` or in the composed ``cfg``."""
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in RENAMED_KEYS:
            raise ConfigError(f"worldsim {command}: {key}= was renamed; write "
                              f"{RENAMED_KEYS[key]}={value or '...'}")
    for old, new in RENAMED_KEYS.items() if cfg is not None else ():
        if OmegaConf.select(cfg, old, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            raise ConfigError(f"worldsim {command}: a config file sets {old!r}, which was renamed "
                              f"{new!r}; rename it there")


def _store_world_presets() -> None:
    """Register each preset of ``worldsim.world_options.PRESETS`` as an option of the hydra
    group ``world``, typed by ``WorldOptions``: a command's ``world`` node then holds every
    field, with the preset's value, and no YAML file re-declares one."""
    # lazy: hydra (see compose), and world_options imports torch (through actions, ~2 s)
    from hydra.core.config_store import ConfigStore

    from worldsim.world_options import PRESETS

    store = ConfigStore.instance()
    for name, options in PRESETS.items():
        node = OmegaConf.structured(options)
        OmegaConf.set_readonly(node, False)  # a frozen dataclass makes a read-only node
        store.store(group="world", name=name, node=node)


def world_options(cfg: DictConfig, key: str = "world"):
    """The :class:`~worldsim.world_options.WorldOptions` of a composed config's ``world`` node;
    a value it refuses raises :class:`ConfigError` naming ``world.<field>``."""
    # lazy: world_options imports torch (see _store_world_presets)
    from worldsim.world_options import WorldOptions

    node = OmegaConf.to_container(require(cfg, key), resolve=True)
    try:
        return WorldOptions(**node)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err).replace("WorldOptions.", f"{key}.")) from err


def _base_config(command: str, overrides: list[str]) -> DictConfig | None:
    """The config composed without the offending override (inside an initialised hydra)."""
    from hydra import compose as hydra_compose  # lazy, as in compose

    for attempt in (overrides, []):
        try:
            return hydra_compose(config_name=command, overrides=attempt)
        except Exception:  # noqa: BLE001 - only used to find key names for a hint
            continue
    return None


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (``env.size``, ``data.batch_size``, ...)."""
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            keys += _all_keys(child, f"{full}.")
    return keys


def _unknown_key_message(command: str, key: str, candidates: list[str]) -> str:
    """``unknown key 'episodez'; did you mean 'episodes'? ...`` on one line."""
    close = difflib.get_close_matches(key, [c for c in candidates if c != key], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (
        f"worldsim {command}: unknown key {key!r}{hint} Unknown keys are refused; "
        f"`worldsim {command} --cfg` prints every key."
    )


def _open_node(cfg: DictConfig, parent: str) -> bool:
    """Whether keys may be added under ``parent``: a ``_target_`` node or a ``kwargs`` node."""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return False
    return "_target_" in node or parent.rsplit(".", 1)[-1] == "kwargs"


def _refuse_added_keys(command: str, cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse ``+key=value`` where nothing would read ``key`` (it would be silently ignored).

    Runs inside an initialised hydra (``_base_config`` composes again for ``++``).
    """
    for item in overrides:
        if not item.startswith("+"):
            continue
        key = item.lstrip("+").partition("=")[0]
        if group_options(key.replace(".", "/")):  # +group=option selects a config group
            continue
        parent = key.rpartition(".")[0]
        if any(_open_node(cfg, p) for p in [parent, *_parents(parent)] if p):
            continue
        if item.startswith("++"):  # ++key=value also overrides an existing key
            rest = [o for o in overrides if o is not item]
            if key in _all_keys(_base_config(command, rest)):
                continue
        raise ConfigError(_unknown_key_message(command, key, _all_keys(cfg)))


def _parents(dotted: str) -> list[str]:
    """``a.b.c`` -> ``['a.b', 'a']``."""
    parts = dotted.split(".") if dotted else []
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


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


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def typed(
    cfg: DictConfig,
    key: str,
    kind: type,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    optional: bool = False,
):
    """Read ``key`` as ``kind`` (``int``, ``float``, ``bool`` or ``str``), within bounds.

    ``episodes=abc`` gives ``ConfigError("episodes='abc': expected an integer >= 0")``. With
    ``optional``, ``null`` is allowed and returned as ``None``. A float key takes integers.
    """
    value = OmegaConf.select(cfg, key, default=None) if optional else require(cfg, key)
    if value is None:
        return None
    accepted = (int, float) if kind is float else (kind,)
    ok = isinstance(value, accepted) and not (kind is not bool and isinstance(value, bool))
    low_ok = minimum is None or (ok and value >= minimum)
    high_ok = maximum is None or (ok and value <= maximum)
    if not (ok and low_ok and high_ok):
        expected = _KINDS[kind]
        if minimum is not None and maximum is not None:
            expected += f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            expected += f" >= {minimum}"
        elif maximum is not None:
            expected += f" <= {maximum}"
        if optional:
            expected += " or null"
        raise ConfigError(f"{key}={value!r}: expected {expected}")
    return float(value) if kind is float else value
