"""Actions: one vocabulary, and the :class:`ActionSetup` of a world.

Words (each tuple below is the one definition; everything else imports it):

- **action type** (``ACTION_TYPES``): what a caller hands a world: ``latent`` codes of the
  latent action model, or the game's ``real`` actions. A field of
  :class:`~worldsim.world_options.WorldOptions`, overridable per ``Simulator.step`` call.
- **action source** (``ACTION_SOURCES``): what a dynamics was trained on: ``latent`` codes,
  ``real`` actions, or ``both`` (a tuple of the code and the real action as a vector, one-hot
  for a discrete game). The bundle's and the train config's ``action_source``; the train
  config also takes ``auto`` (``TRAIN_ACTION_SOURCES``: the game's actions where every episode
  has them, the codes otherwise).
- **action embedding** (``ACTION_EMBEDDINGS``, ``worldsim.nn.adaln``): how a network embeds
  what it is given: ``discrete`` codes, ``continuous`` vectors, or ``both`` summed. The
  ``action_embedding`` field of ``DynamicsConfig`` and ``HeadsConfig``.
- **policies** (``POLICIES``): the simple action policies of ``worldsim collect`` and
  ``worldsim rollout``: ``random`` (uniform) and ``sticky`` (repeat the previous action with a
  probability, else draw a new one).

:class:`ActionSetup` is a world's action setup, saved in its bundle (``bundle.json``
``action_setup``): the source, the number of latent codes, the game's action space, and (from
the bundle's files) the binding and whether there is an action adapter. It converts a
caller's actions into what the dynamics takes (:meth:`ActionSetup.to_model`), checks them
(:meth:`ActionSetup.check`), sizes the gymnasium spaces (:meth:`ActionSetup.gym_space`), gives
the networks their embedding fields (:meth:`ActionSetup.embedding_fields`) and checks saved
networks against itself (:meth:`ActionSetup.check_networks`, :meth:`ActionSetup.check_adapter`).

**Conversion** (``to_model``). Latent codes for a ``real`` dynamics become the real action the
binding gives each code; real actions for a ``latent`` dynamics become the code the action
adapter gives them in the world's current frame when there is one (the LAM's codes depend on
the state), else the binding's one code per action. A real action the binding never saw maps to
code 0, a code never bound to real action 0 (NOOP in Atari-style games). A ``both`` dynamics
gets the code and the real action (one-hot when discrete).

**Saved names.** Weights and bundles written before these words: the networks' field
``action_type`` is read as ``action_embedding`` (``worldsim.networks``), a dynamics stage's
``extra["actions"]`` as ``extra["action_source"]`` (:func:`trained_source`) and a bundle's
top-level ``action_source`` / ``num_latent_actions`` / ``action_space`` as its
``action_setup`` (:meth:`ActionSetup.from_json`).

einops legend: b worlds, a real action width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldsim.binding import ActionBinding
from worldsim.nn.adaln import ACTION_EMBEDDINGS, ActionInput

ACTION_TYPES = ("latent", "real")
ACTION_SOURCES = ("latent", "real", "both")
TRAIN_ACTION_SOURCES = (*ACTION_SOURCES, "auto")
POLICIES = ("random", "sticky")


def trained_source(meta: dict[str, Any]) -> str:
    """The ``action_source`` of a dynamics saved by a training stage (``worldsim.weights``
    meta): ``extra["action_source"]``, or ``extra["actions"]`` as weights written before the
    rename have it. Weights that record neither were trained on latent codes (the only source
    there was)."""
    extra = meta.get("extra") or {}
    source = extra.get("action_source", extra.get("actions", "latent"))
    if source not in ACTION_SOURCES:
        raise ValueError(f"saved dynamics: action_source {source!r} is not one of {ACTION_SOURCES}")
    return source


def model_input(source: str, codes: Any, real: Any) -> ActionInput:
    """Recorded actions in the form a dynamics trained on ``source`` takes: the LAM's ``codes``,
    the ``real`` actions, or both as a tuple."""
    if source not in ACTION_SOURCES:
        raise ValueError(f"action_source must be one of {ACTION_SOURCES}, got {source!r}")
    return codes if source == "latent" else real if source == "real" else (codes, real)


def box_from_unit(unit: torch.Tensor, space: spaces.Box) -> torch.Tensor:
    """Actions in the unit box ``[-1, 1]^a`` (what a Gaussian policy or planner searches) ->
    the same points of a bounded ``Box`` ``[..., a]`` (float32, on ``unit``'s device)."""
    low = torch.as_tensor(np.asarray(space.low, np.float32).reshape(-1), device=unit.device)
    high = torch.as_tensor(np.asarray(space.high, np.float32).reshape(-1), device=unit.device)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError(f"box_from_unit needs a bounded Box, got {space}")
    if unit.shape[-1] != low.numel():
        raise ValueError(f"box_from_unit: actions [..., {low.numel()}] expected, got {tuple(unit.shape)}")
    return low + (unit.float().clamp(-1, 1) + 1) * (high - low) / 2


@dataclass(frozen=True)
class ActionSetup:
    """What a world's dynamics takes and how a caller's actions reach it (module docstring).

    Fields:
        source: the action source, one of ``ACTION_SOURCES``.
        num_codes: latent action codes (``None``: a real-action world without a binding).
        space: the game's action space JSON (``{"type": "discrete", "n": ..}`` or
            ``{"type": "box", "shape": [..], "low": [..], "high": [..]}``), or ``None``.
        binding: latent code <-> real action tables (``binding.json``), or ``None``.
        adapter: whether the world has an action adapter (``action_adapter.*``).
    """

    source: str = "latent"
    num_codes: int | None = None
    space: dict[str, Any] | None = None
    binding: ActionBinding | None = field(default=None, compare=False, repr=False)
    adapter: bool = False
    _tables: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.source not in ACTION_SOURCES:
            raise ValueError(f"action_source must be one of {ACTION_SOURCES}, got {self.source!r}")
        if self.source in ("real", "both") and not self.space:
            raise ValueError(f"action_source={self.source!r} needs the game's action_space in meta")

    # ------------------------------------------------------------------ saved form
    def to_json(self) -> dict[str, Any]:
        """The saved form (``bundle.json`` ``action_setup``); binding and adapter have files."""
        return {"source": self.source, "num_codes": self.num_codes, "space": self.space}

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, binding: ActionBinding | None = None,
                  adapter: bool = False) -> ActionSetup:
        """From a ``bundle.json``: its ``action_setup``, or the top-level ``action_source``,
        ``num_latent_actions`` and ``action_space`` of bundles written before it."""
        if "action_setup" in doc:
            saved = doc["action_setup"]
            unknown = sorted(set(saved) - {"source", "num_codes", "space"})
            if unknown:
                raise ValueError(f"action_setup: unknown key(s) {unknown}")
            source, codes, space = saved.get("source"), saved.get("num_codes"), saved.get("space")
        else:
            source, codes, space = (doc.get("action_source"), doc.get("num_latent_actions"),
                                    doc.get("action_space"))
        return cls(source, codes, space, binding, adapter)

    # ------------------------------------------------------------------ networks
    def embedding_fields(self) -> dict[str, Any]:
        """The dynamics' action fields for this setup: ``action_embedding`` (``latent`` ->
        ``discrete``; ``real`` -> ``discrete`` or ``continuous`` as the game's space;
        ``both`` -> ``both``), ``num_actions`` (codes, or a discrete game's actions) and
        ``action_dim`` (a continuous game's width, or a discrete one's one-hot width for
        ``both``)."""
        fields: dict[str, Any] = {}
        discrete = bool(self.space) and self.space.get("type") == "discrete"
        if self.source in ("latent", "both"):
            if self.num_codes is None:
                raise ValueError(f"action_source={self.source!r} needs num_codes (the LAM's codebook)")
            fields["num_actions"] = int(self.num_codes)
        if self.source == "real" and discrete:
            fields["num_actions"] = int(self.space["n"])
        elif self.source in ("real", "both"):
            fields["action_dim"] = int(self.space["n"]) if discrete else int(np.prod(self.space["shape"]))
        fields["action_embedding"] = {
            "latent": "discrete",
            "real": "discrete" if discrete else "continuous",
            "both": "both",
        }[self.source]
        return fields

    def check_networks(self, dyn_cfg: Any, heads_cfg: Any, where: str) -> None:
        """The dynamics (and heads) embed actions of this source; ``ValueError`` naming ``where``."""
        want = {"latent": ("discrete",), "real": ("discrete", "continuous"), "both": ("both",)}
        if dyn_cfg.action_embedding not in want[self.source]:
            raise ValueError(
                f"{where}: action_source={self.source!r} needs a dynamics action_embedding in "
                f"{want[self.source]}, got {dyn_cfg.action_embedding!r}"
            )
        if heads_cfg is not None:
            for key in ("action_embedding", "num_actions", "action_dim"):
                if getattr(heads_cfg, key) != getattr(dyn_cfg, key):
                    raise ValueError(
                        f"{where}: heads.{key}={getattr(heads_cfg, key)!r} differs from "
                        f"dynamics.{key}={getattr(dyn_cfg, key)!r}; both see the same actions"
                    )

    def check_adapter(self, cfg: Any, dyn_cfg: Any, where: str) -> None:
        """An action adapter reads the dynamics' latents and maps the game's actions to its codes."""
        space = self.space or {}
        problems = []
        if (cfg.latent_channels, cfg.latent_height, cfg.latent_width) != (
            dyn_cfg.latent_channels, dyn_cfg.latent_height, dyn_cfg.latent_width
        ):
            problems.append("its latent shape differs from the dynamics'")
        if self.source == "real":
            problems.append("the dynamics takes real actions (action_source='real'): nothing to adapt")
        if space.get("type") != "discrete" or int(space.get("n", -1)) != cfg.num_actions:
            problems.append(f"num_actions={cfg.num_actions} does not match the action space {space or None}")
        if self.num_codes not in (None, cfg.num_codes):
            problems.append(f"num_codes={cfg.num_codes} != num_latent_actions={self.num_codes}")
        if problems:
            raise ValueError(f"{where}: action_adapter: " + "; ".join(problems))

    # ------------------------------------------------------------------ callers
    def num_actions(self, action_type: str) -> int | None:
        """Number of discrete actions of a type (``None`` for a continuous real space)."""
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
        if action_type == "latent":
            return self.num_codes
        space = self.space or {}
        return int(space["n"]) if space.get("type") == "discrete" else None

    def gym_space(self, action_type: str, where: str = "bundle"):
        """The gymnasium space of one world's actions of a type: ``Discrete(n)`` or the game's
        ``Box``."""
        n = self.num_actions(action_type)
        if n is not None:
            return spaces.Discrete(n)
        if action_type == "real":
            s = self.space
            return spaces.Box(np.asarray(s["low"], np.float32), np.asarray(s["high"], np.float32),
                              tuple(s["shape"]), np.float32)
        raise ValueError(f"{where} has no latent actions; use action_type='real'")

    def check(self, acts: torch.Tensor, action_type: str, batch: int, *, dtype: torch.dtype,
              where: str = "bundle") -> torch.Tensor:
        """``acts`` as integers ``[b]`` within the type's range, or ``[b, a]`` continuous real
        actions of the game's width (cast to ``dtype``); ``ValueError`` otherwise."""
        n = self.num_actions(action_type)
        if n is None and action_type == "latent":
            raise ValueError(
                f"{where} has no latent actions (the dynamics was trained on continuous real "
                "actions and there is no binding.json); use action_type='real'"
            )
        if n is None:  # continuous real actions [b, a]
            dim = int(np.prod(self.space["shape"]))
            if tuple(acts.shape) != (batch, dim):
                raise ValueError(
                    f"Simulator: real actions must be [{batch}, {dim}], got {tuple(acts.shape)}"
                )
            return acts.to(dtype)
        if tuple(acts.shape) != (batch,) or acts.is_floating_point():
            raise ValueError(
                f"Simulator: {action_type} actions must be integers [{batch}] (one per world), got "
                f"{acts.dtype} {tuple(acts.shape)}"
            )
        if acts.numel() and (int(acts.min()) < 0 or int(acts.max()) >= n):
            raise ValueError(
                f"Simulator: {action_type} actions must lie in [0, {n}), got "
                f"[{int(acts.min())}, {int(acts.max())}]"
            )
        return acts.long()

    def to_model(
        self,
        actions: Any,
        action_type: str,
        batch: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        latents: torch.Tensor | None = None,
        adapter: Any = None,
        where: str = "bundle",
    ) -> ActionInput:
        """A caller's actions of ``action_type`` (``[b]`` ints, or ``[b, a]`` continuous real
        ones) as the dynamics takes them (module docstring, **Conversion**). ``latents``
        ``[b, c, h, w]``: the frames they are taken in, for the ``adapter`` (a loaded
        :class:`~worldsim.action_adapter.ActionAdapter` on ``device``)."""
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
        acts = self.check(torch.as_tensor(actions, device=device), action_type, batch, dtype=dtype,
                          where=where)
        if action_type == "latent":
            if self.source == "latent":
                return acts
            real = self._lookup("to_real", acts, where)
            return real if self.source == "real" else (acts, self._vector(real, dtype))
        if self.source == "real":
            return acts
        if adapter is not None and latents is not None:
            codes = adapter.codes(latents.to(dtype), acts)
        else:
            codes = self._lookup("to_latent", acts, where)
        return codes if self.source == "latent" else (codes, self._vector(acts, dtype))

    def _vector(self, real: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Real actions as the vectors of a ``both`` dynamics (one-hot when discrete)."""
        if self.space["type"] == "discrete":
            return torch.nn.functional.one_hot(real.long(), int(self.space["n"])).to(dtype)
        return real.to(dtype)

    def _lookup(self, table: str, x: torch.Tensor, where: str) -> torch.Tensor:
        if self.binding is None:
            raise ValueError(
                f"{where}: the dynamics was trained on {self.source!r} actions and has no "
                "binding.json to convert the other kind; use the action type the dynamics was "
                "trained on"
            )
        key = (table, str(x.device))
        if key not in self._tables:  # unbound entries (-1) play 0
            raw = self.binding.action_to_code if table == "to_latent" else self.binding.code_to_action
            self._tables[key] = torch.as_tensor(np.where(raw < 0, 0, raw)).to(x.device)
        return self._tables[key][x]

    def replace(self, **changes: Any) -> ActionSetup:
        return dataclasses.replace(self, **changes)


__all__ = [
    "ACTION_EMBEDDINGS",
    "ACTION_SOURCES",
    "ACTION_TYPES",
    "POLICIES",
    "TRAIN_ACTION_SOURCES",
    "ActionSetup",
    "model_input",
    "trained_source",
]
