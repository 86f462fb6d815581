"""Shared fixtures: a tiny recorded store of the default game, made once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """Six short episodes of the default built-in game, 32x32, with actions and rewards."""
    import envs
    from envs.record import record

    out = tmp_path_factory.mktemp("tiny_store") / "store"
    record(
        envs.BUILTIN_GAMES[0],
        6,
        out,
        policy="sticky",
        num_envs=2,
        seed=0,
        size=32,
        max_steps=40,
        progress=False,
    )
    return out


def pytest_configure(config):
    # The test models are tiny: one thread avoids thread start-up costs that dominate small ops,
    # and keeps timings sane when other processes share the two cores.
    import torch

    torch.set_num_threads(1)
