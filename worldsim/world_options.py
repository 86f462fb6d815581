"""How a world is run: one frozen :class:`WorldOptions`, passed whole.

nanoGPT writes ``GPTConfig`` once and calls ``GPT(config)``; in the same way every option of how a
learned world is run (what it is observed as, which actions it takes, how many Euler steps a
frame costs, how an episode ends, in which precision and on which device) lives here, with its
one default, and travels unchanged from a command to the :class:`~worldsim.simulator.Simulator`,
the gymnasium envs (``worldsim.env``), the viewer, ``worldsim rollout`` and the agents::

    from worldsim.simulator import Simulator
    from worldsim.world_options import WorldOptions

    sim = Simulator(bundle, WorldOptions(sampler_steps=2, precision="bfloat16"), batch=64)

Fields are checked when an instance is made: a bad one raises ``ValueError`` on one line naming
the field and what it allows.

**Presets.** ``PRESETS`` names the sets of options that a part of the project runs its worlds
with by design, each a documented departure from the defaults (and the one place of that
choice): ``default``; ``imagination``, the worlds agents train and are ranked in; ``planning``,
the worlds planners search. :func:`preset` returns one, with fields replaced.

**Configs.** ``worldsim.config`` registers each preset as an option of the hydra group
``world`` (``world=default``, ``world=imagination``, ...), typed by this dataclass, so a
command's ``world`` node holds every field with the preset's value and no YAML file re-declares
a default: ``worldsim play bundle=DIR world.sampler_steps=2 world.device=cuda``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from worldsim.actions import ACTION_TYPES

OBS_TYPES = ("pixels", "latents")  # what an env returns: decoded frames or normalised latents
TERMINATIONS = ("threshold", "sample")  # how the termination probability ends a world
PRECISIONS = ("float32", "bfloat16", "float16")  # the networks' and the KV cache's dtype
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"WorldOptions.{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class WorldOptions:
    """How a world is run; every field has its one default here.

    Fields:
        obs_type: what the envs return per world: ``pixels`` (decoded uint8 frames ``[H, W, 3]``)
            or ``latents`` (normalised latents ``[c, h, w]``: no decoder call per step). The
            Simulator itself returns both on demand and ignores it.
        action_type: what ``step`` takes: ``latent`` codes of the latent action model, or the
            game's ``real`` actions (converted through the bundle's binding or action adapter).
        sampler_steps: Euler steps of the flow sampler per generated frame (>= 1).
        context_noise: the noise level in [0, 1] that labels (clean) context frames.
        cfg_scale: classifier-free guidance weight on the action (1 = off; a finite number).
        termination: ``threshold`` (a world ends when the termination probability exceeds 0.5)
            or ``sample`` (a Bernoulli draw from that probability).
        termination_scale: factor (finite, > 0) on the termination probability before either
            rule, capped at 1: pessimism about endings for a model that draws too few of them.
        precision: dtype of the networks and the KV cache: ``float32``, ``bfloat16`` or
            ``float16``.
        autocast: run the networks under bf16 autocast on CUDA (ignored on a CPU).
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu``.
        chunk: worlds per cached pass (>= 1); ``None``: ``worldsim.flow.default_chunk`` of the
            device (a few dozen on a CPU, one pass on a GPU).
        window: frames kept in the KV cache (>= 1); ``None``: the dynamics' ``context_window``.
        seed: seed of the Simulator's torch generator; ``None``: a fresh one per Simulator.
    """

    obs_type: str = "pixels"
    action_type: str = "latent"
    sampler_steps: int = 4
    context_noise: float = 0.1
    cfg_scale: float = 1.0
    termination: str = "threshold"
    termination_scale: float = 1.0
    precision: str = "float32"
    autocast: bool = False
    device: str = "cpu"
    chunk: int | None = None
    window: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, allowed in (
            ("obs_type", OBS_TYPES),
            ("action_type", ACTION_TYPES),
            ("termination", TERMINATIONS),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in allowed:
                _refuse(name, getattr(self, name), f"one of {allowed}")
        if not _is_int(self.sampler_steps) or self.sampler_steps < 1:
            _refuse("sampler_steps", self.sampler_steps, "an integer >= 1")
        if not (_is_number(self.context_noise) and 0.0 <= self.context_noise <= 1.0):
            _refuse("context_noise", self.context_noise, "a number in [0, 1]")
        if not _is_number(self.cfg_scale):
            _refuse("cfg_scale", self.cfg_scale, "a finite number (1 = no guidance)")
        if not (_is_number(self.termination_scale) and self.termination_scale > 0):
            _refuse("termination_scale", self.termination_scale, "a finite number > 0")
        if not isinstance(self.autocast, bool):
            _refuse("autocast", self.autocast, "true or false")
        if not (isinstance(self.device, str) and _DEVICE.match(self.device)):
            _refuse("device", self.device, "cpu, cuda, cuda:N, mps or xpu")
        for name in ("chunk", "window"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                _refuse(name, value, "an integer >= 1, or None")
        if self.seed is not None and not _is_int(self.seed):
            _refuse("seed", self.seed, "an integer, or None")

    @property
    def dtype(self):
        """``precision`` as a ``torch.dtype``."""
        return getattr(torch, self.precision)

    def replace(self, **changes: Any) -> WorldOptions:
        """A copy with ``changes`` (field names; an unknown one raises ``TypeError`` naming it)."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise TypeError(f"unknown world option(s) {unknown}; the fields are {list(FIELDS)}")
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(WorldOptions))

#: Named sets of options, each a deliberate departure from the defaults (module docstring).
PRESETS: dict[str, WorldOptions] = {
    "default": WorldOptions(),
    # Agents train and are ranked in these (``worldsim agent``, agents.imagination and
    # agents.rank): they act on latents (no decoder call per imagined step), and a world ends by
    # a draw from the termination probability: a head that gives a real death p = 0.3 never
    # ends a thresholded world, while a sampled one ends 30% of the time, so the agent learns
    # to fear it (docs/agents.md).
    "imagination": WorldOptions(obs_type="latents", termination="sample"),
    # Planners search these (``worldsim plan``, agents.plan_eval): a plan costs population x
    # iterations x horizon imagined frames, so two Euler steps per frame, not four.
    "planning": WorldOptions(sampler_steps=2),
}


def preset(name: str, **changes: Any) -> WorldOptions:
    """The preset ``name`` of ``PRESETS`` with ``changes`` (field names) replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown world preset {name!r}; presets: {list(PRESETS)}")
    return PRESETS[name].replace(**changes)


__all__ = [
    "FIELDS",
    "OBS_TYPES",
    "PRECISIONS",
    "PRESETS",
    "TERMINATIONS",
    "WorldOptions",
    "preset",
]
