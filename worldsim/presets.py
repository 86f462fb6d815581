"""Named size presets of a model config: one mechanism for every model file.

Each model keeps its ``@dataclass`` config (the one home of its defaults) and a ``PRESETS``
dict; ``from_preset`` and ``replace_fields`` build a config from them, naming an unknown preset
or field and listing the allowed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def replace_fields(base: C, values: Mapping[str, Any], label: str) -> C:
    """``base`` with fields replaced; ``label`` names the config in the error (e.g. ``'DynamicsConfig'``)."""
    allowed = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown {label} field(s) {unknown}; allowed fields: {', '.join(allowed)}"
        )
    return dataclasses.replace(base, **values)


def from_preset(presets: Mapping[str, C], name: str, what: str, label: str, **overrides: Any) -> C:
    """The preset ``name`` of ``presets`` with fields overridden; ``what`` names the model."""
    if name not in presets:
        raise ValueError(f"unknown {what} preset {name!r}; allowed presets: {', '.join(presets)}")
    return replace_fields(presets[name], overrides, label)
