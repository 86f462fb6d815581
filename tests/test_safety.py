"""Nothing a user loads runs code, and every bad file is a one-line error naming it.

A crafted pickle payload (an object whose ``__reduce__`` creates a marker file) must not run
in any loader: run checkpoints, agent checkpoints, bundles (weights, stats, start contexts) and
saved networks. Sizes come from the safetensors header before anything is built.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.trainer import ActorCriticTrainer, TrainConfig, load_checkpoint
from worldsim.bundle import BundleError, load_bundle
from worldsim.config import ConfigError, compose
from worldsim.testing import untrained_bundle
from worldsim.training.train import run
from worldsim.weights import WeightsError, load_network, save_weights


class Payload:
    """Unpickling this creates ``marker``: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------ torch checkpoints
def test_run_checkpoint_with_a_payload_is_refused(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "ran"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 10, "state_dict": {}, "x": Payload(marker)}, ckpt)
    cfg = compose("train", ["experiment=tiny", f"data.store={tmp_path / 'store'}", f"run_dir={run_dir}",
                            "resume=true"])
    with pytest.raises(ConfigError, match="refused") as err:
        run(cfg)
    assert str(ckpt) in one_line(err) and "io.open" in str(err.value)
    assert not marker.exists()


class ZeroSource:
    """Two worlds of constant latents, reward 1, never ending: enough for a real checkpoint."""

    num_envs = 2

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return torch.zeros(2, 4, 8, 8)

    def step(self, actions: torch.Tensor):
        return torch.randn(2, 4, 8, 8), torch.ones(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)


def agent_trainer(out: Path, updates: int) -> ActorCriticTrainer:
    torch.manual_seed(0)
    model = ActorCritic(ActorCriticConfig(obs_shape=(4, 8, 8), num_actions=3, hidden=8))
    cfg = TrainConfig(updates=updates, horizon=3, log_every=1, ckpt_every=1, progress=False)
    return ActorCriticTrainer(model, ZeroSource(), cfg, out, meta={"name": "zero", "bundle": str(out)})


def test_agent_checkpoint_is_plain_data_and_resumes(tmp_path):
    """A real agent checkpoint (optimizer state, generator, curve rows, meta) loads with
    weights_only=True, for evaluation and for resuming."""
    agent_trainer(tmp_path, updates=2).fit()
    model, ckpt = load_checkpoint(tmp_path)
    assert ckpt["update"] == 2 and len(ckpt["rows"]) == 2 and ckpt["meta"]["name"] == "zero"
    resumed = agent_trainer(tmp_path, updates=3)
    assert resumed.update == 2 and resumed.optimizer.state_dict()["state"]
    resumed.fit()
    assert load_checkpoint(tmp_path)[1]["update"] == 3


def test_agent_checkpoint_with_a_payload_is_refused(tmp_path):
    agent_trainer(tmp_path, updates=1).fit()
    ckpt, marker = tmp_path / "checkpoint.pt", tmp_path / "ran"
    state = torch.load(ckpt, weights_only=True)
    state["meta"]["name"] = Payload(marker)
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match="refused") as err:  # agent mode=eval / mode=rank
        load_checkpoint(ckpt)
    assert str(ckpt) in one_line(err)
    with pytest.raises(ValueError, match="refused") as err:  # agent mode=train, resume: true
        agent_trainer(tmp_path, updates=2)
    assert str(ckpt) in one_line(err)
    assert not marker.exists()


def test_truncated_agent_checkpoint_is_named(tmp_path):
    agent_trainer(tmp_path, updates=1).fit()
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_checkpoint(ckpt)
    assert str(ckpt) in one_line(err)


# ------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("safety") / "world")


@pytest.fixture
def copy(world, tmp_path):
    return Path(shutil.copytree(world, tmp_path / "copy"))


def test_huge_declared_network_fails_before_allocating(copy, monkeypatch):
    """A bundle's dynamics.json declaring dim=32768, depth=64 (about 5 TB of float32) fails on
    the header comparison; the network is only ever built on the meta device."""
    from worldsim import networks

    cls, cfg_from = networks.NETWORKS["dynamics"]

    def meta_only(cfg):
        if cfg.dim > 1024:
            assert torch.empty(0).device.type == "meta", "the huge network was built for real"
        return cls(cfg)

    monkeypatch.setitem(networks.NETWORKS, "dynamics", (meta_only, cfg_from))
    meta = json.loads((copy / "dynamics.json").read_text())
    meta["config"].update(dim=32768, depth=64)
    (copy / "dynamics.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"dynamics\.safetensors: tensor '.+' is \[.*\] but the config") as err:
        load_bundle(copy)
    assert "dynamics.json" in one_line(err) and "32768" in str(err.value)


def test_saved_network_config_is_checked_against_the_header(tmp_path):
    from worldsim.heads import RewardTerminationHeads
    from worldsim.heads import config_from_preset as heads_preset

    heads = RewardTerminationHeads(heads_preset("tiny", latent_channels=4, latent_height=8, latent_width=8))
    save_weights(heads, heads.cfg, tmp_path, "heads")
    meta = json.loads((tmp_path / "heads.json").read_text())
    meta["config"]["hidden"] = 4096
    (tmp_path / "heads.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"heads\.safetensors: tensor .* but the config in .*heads\.json"):
        load_network(tmp_path, "heads")


def test_latent_stats_must_be_finite_with_positive_std(copy):
    for mean, std in (([0.0] * 4, [1.0, 0.0, 1.0, 1.0]), ([0.0] * 4, [1.0, -2.0, 1.0, 1.0]),
                      ([float("nan"), 0, 0, 0], [1.0] * 4), ([0.0] * 4, [1.0, 1.0, float("inf"), 1.0])):
        (copy / "latent_stats.json").write_text(json.dumps({"mean": mean, "std": std}))
        with pytest.raises(BundleError, match="latent_stats.json needs finite mean and std > 0") as err:
            load_bundle(copy)
        assert str(copy) in one_line(err)


def test_non_finite_weights_are_refused(copy):
    from safetensors.torch import load_file, save_file

    state = load_file(str(copy / "dynamics.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, str(copy / "dynamics.safetensors"))
    with pytest.raises(BundleError, match=rf"dynamics\.safetensors: tensor '{key}' holds NaN") as err:
        load_bundle(copy)
    assert str(copy) in one_line(err)


def _write_contexts(path: Path, **arrays) -> None:
    np.savez(path / "contexts.npz", **arrays)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated", r"cannot read contexts\.npz"),
        ("not a zip", r"cannot read contexts\.npz"),
        ("float32", r"'frames' must be uint8 \[N, k, H, W, 3\], got float32"),
        ("no contexts", r"holds no start context: 'frames' is \[0, 2, 32, 32, 3\]"),
        ("rank 4", r"'frames' must be uint8 \[N, k, H, W, 3\], got uint8 \[2, 32, 32, 3\]"),
        ("object array", r"cannot read contexts\.npz: it holds object arrays, which are refused"),
        ("no frames", r"lacks the 'frames' array"),
        ("bad actions", r"array 'actions' must be integer \[4, 1\]"),
        ("frame size", r"do not match the autoencoder's 32x32"),
    ],
)
def test_broken_contexts_name_the_bundle_file(copy, case, expected):
    npz, marker = copy / "contexts.npz", copy / "ran"
    frames = np.zeros((4, 2, 32, 32, 3), np.uint8)
    if case == "truncated":
        npz.write_bytes(npz.read_bytes()[:300])
    elif case == "not a zip":
        npz.write_text("hello")
    elif case == "float32":
        _write_contexts(copy, frames=frames.astype(np.float32))
    elif case == "no contexts":
        _write_contexts(copy, frames=frames[:0])
    elif case == "rank 4":
        _write_contexts(copy, frames=frames[0])
    elif case == "object array":
        _write_contexts(copy, frames=np.array([Payload(marker)], dtype=object))
    elif case == "no frames":
        _write_contexts(copy, images=frames)
    elif case == "bad actions":
        _write_contexts(copy, frames=frames, actions=np.zeros((4, 3), np.int64))
    elif case == "frame size":
        _write_contexts(copy, frames=np.zeros((4, 2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=expected) as err:
        load_bundle(copy)
    assert isinstance(err.value, BundleError) and str(copy) in one_line(err)
    assert not marker.exists()


def test_truncated_contexts_member_is_named(copy):
    """A zip whose directory is intact but whose 'frames' member is cut short."""
    frames = np.random.default_rng(0).integers(0, 255, (4, 2, 32, 32, 3), dtype=np.uint8)
    with zipfile.ZipFile(copy / "contexts.npz", "w") as z:
        import io

        buf = io.BytesIO()
        np.save(buf, frames)
        z.writestr("frames.npy", buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BundleError, match=r"cannot read contexts\.npz") as err:
        load_bundle(copy)
    assert str(copy) in one_line(err)
