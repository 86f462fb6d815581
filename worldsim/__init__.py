"""worldsim: learn a playable world from gameplay video."""

from typing import Any

from worldsim.version import __version__ as __version__


def __getattr__(name: str) -> Any:
    # Lazy export: importing ``worldsim`` (as `worldsim --help` does) stays cheap: no torch
    # (~2 s to import) until the name is used.
    if name == "load_simulator":
        from worldsim.simulator import load_simulator

        return load_simulator
    raise AttributeError(f"module 'worldsim' has no attribute {name!r}")
