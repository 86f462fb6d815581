"""Freshly initialised bundles for tests and benchmarks: untrained weights cost the same FLOPs as
trained ones, and exercise every loading and stepping path without a training run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim import autoencoder as ae_mod
from worldsim import dynamics as dyn_mod
from worldsim import heads as heads_mod
from worldsim.actions import ActionSetup
from worldsim.autoencoder import Autoencoder
from worldsim.binding import ActionBinding
from worldsim.bundle import save_bundle
from worldsim.dynamics import DynamicsModel
from worldsim.heads import RewardTerminationHeads


def untrained_bundle(
    path: str | os.PathLike,
    preset: str = "tiny",
    *,
    heads: bool = True,
    num_contexts: int = 4,
    context_frames: int = 2,
    action_source: str = "latent",
    action_space: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = True,
) -> Path:
    """Write a bundle of freshly initialised ``preset`` networks (for tests and benchmarks:
    untrained weights cost the same FLOPs as trained ones). The dynamics and heads take the
    autoencoder's latent shape; the start contexts are random frames. With an ``action_space``
    (discrete), a binding fitted on random (code, action) pairs is included."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ae = Autoencoder(ae_mod.config_from_preset(preset))
    c, h, w = ae.latent_shape(ae.cfg.frame_height, ae.cfg.frame_width)
    shape = dict(latent_channels=c, latent_height=h, latent_width=w)
    n_real = int(action_space["n"]) if action_space and action_space["type"] == "discrete" else 0
    # a real-action world gets a binding of 8 codes; the others the preset's codebook
    codes = dyn_mod.config_from_preset(preset).num_actions if action_source != "real" else 8
    setup = ActionSetup(action_source, codes, action_space)
    dyn = DynamicsModel(dyn_mod.config_from_preset(preset, **shape, **setup.embedding_fields()))
    hd = (
        RewardTerminationHeads(
            heads_mod.config_from_preset(
                preset if preset in heads_mod.PRESETS else "tiny",
                **shape,
                num_actions=dyn.cfg.num_actions,
                action_embedding=dyn.cfg.action_embedding,
                action_dim=dyn.cfg.action_dim,
            )
        )
        if heads
        else None
    )
    binding = None
    if n_real:
        pairs = rng.integers(0, [codes, n_real], size=(256, 2))
        binding = ActionBinding.fit(pairs[:, 0], pairs[:, 1], codes, n_real)
    frames = rng.integers(
        0,
        256,
        (num_contexts, context_frames, ae.cfg.frame_height, ae.cfg.frame_width, 3),
        dtype=np.uint8,
    )
    ctx_actions: Any = None
    if action_source == "latent":
        ctx_actions = rng.integers(0, codes, (num_contexts, context_frames - 1))
    return save_bundle(
        path,
        autoencoder=ae,
        dynamics=dyn,
        latent_mean=np.zeros(c),
        latent_std=np.ones(c),
        contexts=frames,
        context_actions=ctx_actions,
        heads=hd,
        binding=binding,
        overwrite=overwrite,
        meta={
            "action_source": action_source,
            "action_space": action_space,
            "fps": 15.0,
            "game": f"untrained-{preset}",
            "num_latent_actions": codes if (action_source != "real" or binding) else None,
        },
    )


__all__ = ["untrained_bundle"]
