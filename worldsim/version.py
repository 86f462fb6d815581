"""The package version (one home: ``pyproject.toml`` reads the same number)."""

__version__ = "0.1.0"
