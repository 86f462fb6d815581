"""worldsim: learn a playable world from gameplay video."""
__version__ = "0.1.0"
