"""worldsim: learn a playable world from gameplay video."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy exports: importing ``worldsim`` stays cheap (no torch until a name is used).
    if name == "load_simulator":
        from worldsim.bundle import load_simulator

        return load_simulator
    raise AttributeError(f"module 'worldsim' has no attribute {name!r}")
