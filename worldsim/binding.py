"""Action binding: map the latent action model's codes to a game's real actions and back.

Genie (Bruce et al. 2024, section on playability) binds latent actions to real ones from a few
labelled transitions: run the LAM on transitions whose real action is known, count how often
each (code, action) pair occurs, and map

- each code to the real action it most often comes with (``to_real``), so an agent or a player
  acting in latent space can be replayed in the real game, and
- each real action to the code that most often comes with it (``to_latent``), so the real
  game's keys drive the world model.

A code (or action) never seen in the labelled transitions is *unmapped*: ``to_real`` /
``to_latent`` return ``None`` for a scalar, ``-1`` inside arrays, or fall back to a
``default`` the caller names; nothing is guessed silently. Ties go to the smaller index.

``binding_accuracy_at_k`` is Genie's evaluation: fit the binding on ``k`` random labelled
transitions, score ``accuracy`` on all the others, and average over a few random draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

UNMAPPED = -1


def _as_labels(x: Any, name: str, n: int) -> np.ndarray:
    """A flat int64 array of labels in ``[0, n)``, or a ``ValueError`` naming ``name``."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must lie in [0, {n}), got range [{arr.min()}, {arr.max()}]")
    return arr


@dataclass
class ActionBinding:
    """Two lookup tables fitted from co-occurrence counts (see the module docstring).

    ``code_to_action[c]`` is the real action bound to code ``c`` (``-1``: unmapped);
    ``action_to_code[a]`` the code bound to real action ``a`` (``-1``: unmapped); ``counts``
    the ``[num_codes, num_actions]`` co-occurrence matrix it was fitted on.
    """

    code_to_action: np.ndarray
    action_to_code: np.ndarray
    counts: np.ndarray

    @property
    def num_codes(self) -> int:
        return len(self.code_to_action)

    @property
    def num_actions(self) -> int:
        return len(self.action_to_code)

    @classmethod
    def fit(
        cls, latent_codes: Any, real_actions: Any, num_codes: int, num_actions: int
    ) -> ActionBinding:
        """Fit from paired labels of the same transitions (any shape, flattened)."""
        if num_codes < 1 or num_actions < 1:
            raise ValueError(
                f"need num_codes >= 1 and num_actions >= 1, got {num_codes}, {num_actions}"
            )
        codes = _as_labels(latent_codes, "latent_codes", num_codes)
        actions = _as_labels(real_actions, "real_actions", num_actions)
        if codes.shape != actions.shape:
            raise ValueError(
                f"latent_codes and real_actions must label the same transitions: got "
                f"{codes.size} codes and {actions.size} actions"
            )
        counts = np.zeros((num_codes, num_actions), dtype=np.int64)
        np.add.at(counts, (codes, actions), 1)
        code_to_action = np.where(counts.sum(1) > 0, counts.argmax(1), UNMAPPED)
        action_to_code = np.where(counts.sum(0) > 0, counts.argmax(0), UNMAPPED)
        return cls(code_to_action.astype(np.int64), action_to_code.astype(np.int64), counts)

    # ------------------------------------------------------------------ mapping
    def _map(self, table: np.ndarray, x: Any, name: str, default: int | None) -> Any:
        size = len(table)
        arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(
                f"{name} must lie in [0, {size}), got range [{arr.min()}, {arr.max()}]"
            )
        out = table[arr]
        if default is not None:
            out = np.where(out == UNMAPPED, default, out)
        if arr.ndim == 0:
            value = int(out)
            return None if value == UNMAPPED else value
        return out

    def to_real(self, code: Any, default: int | None = None) -> Any:
        """Real action for a code (int -> int or ``None``; array -> array with ``-1`` unmapped).

        ``default`` replaces unmapped results (e.g. the game's NOOP).
        """
        return self._map(self.code_to_action, code, "code", default)

    def to_latent(self, action: Any, default: int | None = None) -> Any:
        """Latent code for a real action (int -> int or ``None``; array -> array, ``-1`` unmapped)."""
        return self._map(self.action_to_code, action, "action", default)

    def unmapped_codes(self) -> list[int]:
        """Codes never seen in the fitting data."""
        return [int(c) for c in np.flatnonzero(self.code_to_action == UNMAPPED)]

    def unmapped_actions(self) -> list[int]:
        """Real actions never seen in the fitting data."""
        return [int(a) for a in np.flatnonzero(self.action_to_code == UNMAPPED)]

    def accuracy(self, latent: Any, real: Any) -> float:
        """Fraction of transitions where ``to_real(code) == real action`` (unmapped counts wrong)."""
        codes = _as_labels(latent, "latent", self.num_codes)
        actions = _as_labels(real, "real", self.num_actions)
        if codes.shape != actions.shape or codes.size == 0:
            raise ValueError(
                f"accuracy needs equally many (>0) codes and actions, got {codes.size} and {actions.size}"
            )
        return float((self.code_to_action[codes] == actions).mean())

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (saved next to the model in a Simulator bundle)."""
        return {
            "num_codes": self.num_codes,
            "num_actions": self.num_actions,
            "code_to_action": self.code_to_action.tolist(),
            "action_to_code": self.action_to_code.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionBinding:
        """Inverse of ``to_dict``; raises ``ValueError`` naming a missing key or bad table."""
        keys = ("num_codes", "num_actions", "code_to_action", "action_to_code", "counts")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(
                f"ActionBinding.from_dict: missing key(s) {missing}; expected {list(keys)}"
            )
        nc, na = int(data["num_codes"]), int(data["num_actions"])
        c2a = np.asarray(data["code_to_action"], dtype=np.int64)
        a2c = np.asarray(data["action_to_code"], dtype=np.int64)
        counts = np.asarray(data["counts"], dtype=np.int64)
        if c2a.shape != (nc,) or a2c.shape != (na,) or counts.shape != (nc, na):
            raise ValueError(
                f"ActionBinding.from_dict: tables do not match num_codes={nc}, num_actions={na}: "
                f"code_to_action {list(c2a.shape)}, action_to_code {list(a2c.shape)}, "
                f"counts {list(counts.shape)}"
            )
        if c2a.min() < UNMAPPED or c2a.max() >= na or a2c.min() < UNMAPPED or a2c.max() >= nc:
            raise ValueError("ActionBinding.from_dict: a table entry is out of range")
        return cls(c2a, a2c, counts)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ActionBinding:
        return cls.from_dict(json.loads(text))


def binding_accuracy_at_k(
    latent_codes: Any,
    real_actions: Any,
    k: int,
    num_codes: int,
    num_actions: int,
    *,
    draws: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Genie's binding evaluation: fit on ``k`` random labelled transitions, score the rest.

    Returns ``mean`` and ``std`` of the held-out accuracy over ``draws`` random draws, and ``k``.
    Needs more than ``k`` transitions so that something is held out.
    """
    codes = _as_labels(latent_codes, "latent_codes", num_codes)
    actions = _as_labels(real_actions, "real_actions", num_actions)
    if codes.shape != actions.shape:
        raise ValueError(f"got {codes.size} codes but {actions.size} actions")
    if not 1 <= k < codes.size:
        raise ValueError(
            f"k must be in [1, {codes.size}) for {codes.size} labelled transitions, got {k}"
        )
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        perm = rng.permutation(codes.size)
        fit_idx, test_idx = perm[:k], perm[k:]
        binding = ActionBinding.fit(codes[fit_idx], actions[fit_idx], num_codes, num_actions)
        scores.append(binding.accuracy(codes[test_idx], actions[test_idx]))
    return {"k": float(k), "mean": float(np.mean(scores)), "std": float(np.std(scores))}
