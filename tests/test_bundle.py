"""Simulator bundles: round trip, atomic writes, and clear errors for broken bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.autoencoder import Autoencoder
from worldsim.autoencoder import config_from_preset as ae_preset
from worldsim.bundle import BundleError, load_bundle, save_bundle
from worldsim.dynamics import build_dynamics
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions

DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("b") / "world", action_space=DISCRETE3)


def test_round_trip_restores_weights_stats_and_meta(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.action_source == "latent" and b.num_latent_actions == 4
    assert b.action_space == DISCRETE3 and b.fps == 15.0 and b.frame_size == (32, 32)
    assert b.contexts.shape == (4, 2, 32, 32, 3) and b.contexts.dtype == np.uint8
    assert b.context_actions.shape == (4, 1)
    assert b.heads is not None and b.lam is None and b.binding.num_actions == 3
    # Same seed -> same networks as saved: rebuild and compare a parameter.
    torch.manual_seed(0)
    ae = Autoencoder(ae_preset("tiny"))
    for (name, p), q in zip(ae.state_dict().items(), b.autoencoder.state_dict().values()):
        assert torch.equal(p, q), name
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    assert doc["format_version"] == 3 and doc["networks"] == ["autoencoder", "dynamics", "heads"]
    # each network's config is stored once, in its <name>.json
    assert json.loads((bundle_dir / "dynamics.json").read_text())["config"]["dim"] == b.dynamics.cfg.dim


def test_save_refuses_existing_dir_and_leaves_no_temp_files(tmp_path):
    path = untrained_bundle(tmp_path / "w", heads=False)
    with pytest.raises(BundleError, match="exists"):
        untrained_bundle(path, overwrite=False)
    untrained_bundle(path, overwrite=True, heads=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    assert not (path / "heads.safetensors").exists()


def test_failed_save_leaves_nothing(tmp_path):
    ae, dyn = Autoencoder(ae_preset("tiny")), build_dynamics("tiny")
    bad = np.zeros((2, 2, 16, 16, 3), np.uint8)  # wrong frame size
    with pytest.raises(BundleError, match="16x16"):
        save_bundle(
            tmp_path / "x",
            autoencoder=ae,
            dynamics=dyn,
            latent_mean=np.zeros(4),
            latent_std=np.ones(4),
            contexts=bad,
        )
    with pytest.raises(BundleError, match="action_source"):
        save_bundle(
            tmp_path / "x",
            autoencoder=ae,
            dynamics=dyn,
            latent_mean=np.zeros(4),
            latent_std=np.ones(4),
            contexts=np.zeros((1, 2, 32, 32, 3), np.uint8),
            meta={"action_source": "keyboard"},
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_and_files_are_named(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    import shutil

    for victim in ("dynamics.safetensors", "latent_stats.json", "contexts.npz", "bundle.json"):
        copy = tmp_path / victim
        shutil.copytree(bundle_dir, copy)
        (copy / victim).unlink()
        with pytest.raises(BundleError, match=victim.replace(".", r"\.")):
            load_bundle(copy)


def test_unsupported_format_version_lists_supported(tmp_path, bundle_dir):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(bundle_dir, copy)
    doc = json.loads((copy / "bundle.json").read_text())
    doc["format_version"] = 99
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"99.*versions \[1, 2, 3\]"):
        load_bundle(copy)


def test_weights_that_do_not_fit_their_config(tmp_path, bundle_dir):
    import shutil

    copy = tmp_path / "mismatch"
    shutil.copytree(bundle_dir, copy)
    meta = json.loads((copy / "dynamics.json").read_text())
    meta["config"]["dim"] = 64
    (copy / "dynamics.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="dynamics weights do not fit"):
        load_bundle(copy)
    meta["config"]["bogus_field"] = 1
    (copy / "dynamics.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="dynamics.json config is not a valid config"):
        load_bundle(copy)


def test_bundles_holding_each_config_twice_are_built_from_bundle_json(tmp_path, bundle_dir):
    """Formats 1 and 2 kept every config in bundle.json ``networks`` too, and were built from
    there: still read, and still from there."""
    import shutil

    copy = tmp_path / "format2"
    shutil.copytree(bundle_dir, copy)
    doc = json.loads((copy / "bundle.json").read_text())
    doc["format_version"] = 2
    doc["networks"] = {n: json.loads((copy / f"{n}.json").read_text())["config"] for n in doc["networks"]}
    (copy / "bundle.json").write_text(json.dumps(doc))
    b = load_bundle(copy)
    assert b.heads is not None and b.dynamics.cfg == load_bundle(bundle_dir).dynamics.cfg
    doc["networks"]["dynamics"]["dim"] = 64
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="dynamics weights do not fit"):
        load_bundle(copy)


def test_load_simulator_and_lazy_package_export(bundle_dir):
    import worldsim

    sim = worldsim.load_simulator(bundle_dir, WorldOptions(seed=0), batch=2)
    assert sim.batch == 2 and sim.latent_shape == (4, 8, 8)
    assert load_simulator(load_bundle(bundle_dir)).batch == 1


def test_real_action_bundles_check_their_action_space(tmp_path):
    path = untrained_bundle(tmp_path / "real", action_source="real", action_space=DISCRETE3)
    b = load_bundle(path)
    assert b.dynamics.cfg.num_actions == 3 and b.binding is not None and b.num_latent_actions == 8
    ae, dyn = Autoencoder(ae_preset("tiny")), build_dynamics("tiny")
    with pytest.raises(BundleError, match="action_space"):
        save_bundle(
            tmp_path / "y",
            autoencoder=ae,
            dynamics=dyn,
            latent_mean=np.zeros(4),
            latent_std=np.ones(4),
            contexts=np.zeros((1, 1, 32, 32, 3), np.uint8),
            meta={"action_source": "real"},
        )
