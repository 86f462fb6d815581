"""The ``worldsim`` command: ``worldsim <command> [key=value ...]``.

Every command composes ``configs/<command>.yaml`` with the hydra-style overrides given on the
command line (``worldsim collect env=ALE/Breakout-v5 episodes=100 out=data/breakout``) and calls
a function ``run(cfg)``. Commands are found in two places:

- built in, below (``train``, ``quickstart``, ``info``), all inside the ``worldsim`` package;
- the ``worldsim.commands`` entry-point group, through which the ``envs`` and ``agents``
  packages add theirs (``collect``, ...). This keeps the dependency rule: ``worldsim`` never
  imports ``envs`` or ``agents``; they plug into it.

A bare word right after the command is its mode: ``worldsim agent train ...`` is
``worldsim agent mode=train ...`` (for commands whose config has a ``mode`` key).

Flags: ``--cfg`` prints the composed config and exits; ``--help`` lists the commands.

Errors in what the user gave (``USER_ERRORS``: a config value, a file, a game id, a store, a
bundle, a diverged training run) print one ``error: ...`` line and exit with status 2; any other
exception is a bug and keeps its traceback. Warnings print as one ``warning: ...`` line.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points

from omegaconf import DictConfig

from worldsim.config import ConfigError, compose, to_yaml

BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("worldsim.training.train:run", "train one stage: stage=autoencoder|lam|dynamics"),
    "quickstart": ("worldsim.quickstart:run", "the whole pipeline on the default game"),
    "info": ("worldsim.data.summary:run", "print the summary of an episode store: store=DIR"),
    "play": ("worldsim.viewer:run", "play a world model with the keyboard: bundle=DIR"),
    "rollout": ("worldsim.rollout:run", "write an mp4 of generated worlds: bundle=DIR out=FILE"),
}
PLUGIN_GROUP = "worldsim.commands"

#: Exceptions that mean the user's input cannot be used, as ``module:Class``. Each names the
#: key, file or id at fault. Their modules are not imported here: an exception of a class can
#: only exist once its module is loaded.
USER_ERRORS: tuple[str, ...] = (
    "worldsim.config:InputError",  # ConfigError and other input checks (a ValueError)
    "worldsim.data.store:StoreError",
    "worldsim.data.shards:ShardError",
    "worldsim.data.video_import:VideoImportError",
    "worldsim.data.latent_store:LatentStoreError",
    "worldsim.bundle:BundleError",
    "worldsim.weights:WeightsError",
    "worldsim.training.base:TrainingDiverged",
)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is one of ``USER_ERRORS`` (printed as one line, not a traceback)."""
    for spec in USER_ERRORS:
        module, _, name = spec.partition(":")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def _plugin_commands() -> dict[str, tuple[str, str]]:
    found = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        found[ep.name] = (ep.value, f"(from {ep.value.split(':')[0]})")
    return found


def commands() -> dict[str, tuple[str, str]]:
    """Every command name -> (``module:function``, one-line help)."""
    return {**_plugin_commands(), **BUILTIN_COMMANDS}


def resolve(name: str) -> Callable[[DictConfig], object]:
    table = commands()
    if name not in table:
        raise ConfigError(f"unknown command {name!r}; commands: {', '.join(sorted(table))}")
    module, _, attr = table[name][0].partition(":")
    return getattr(importlib.import_module(module), attr)


def run_command(name: str, overrides: list[str] | None = None):
    """Compose the config of command ``name`` and run it; returns what the command returns."""
    return resolve(name)(compose(name, overrides))


def _usage() -> str:
    lines = ["usage: worldsim <command> [mode] [key=value ...] [--cfg]", "", "commands:"]
    for name, (_, text) in sorted(commands().items()):
        lines.append(f"  {name:<12} {text}")
    lines += [
        "",
        "Overrides are hydra's: key=value, group=option; +field=value adds a field to a preset",
        "(autoencoder, lam, dynamics) or to env.kwargs. Unknown keys are refused.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest = [f"mode={rest[0]}", *rest[1:]]  # `worldsim agent train ...` means mode=train
    show_cfg = "--cfg" in rest
    rest = [a for a in rest if a != "--cfg"]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if show_cfg:
                print(to_yaml(compose(name, rest)))
                return 0
            run_command(name, rest)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
