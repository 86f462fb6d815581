"""One action vocabulary: ActionSetup's conversion and checks, the saved names of older weights
and bundles (read under the new ones), and config keys that were renamed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.actions import (
    ACTION_SOURCES,
    ActionSetup,
    model_input,
    trained_source,
)
from worldsim.binding import ActionBinding
from worldsim.bundle import load_bundle, save_bundle
from worldsim.config import ConfigError, compose
from worldsim.simulator import Simulator
from worldsim.world_options import WorldOptions

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}
BOX2 = {"type": "box", "shape": [2], "low": [-1, -1], "high": [1, 1]}
CPU = dict(device=torch.device("cpu"), dtype=torch.float32)


def _binding() -> ActionBinding:
    """4 codes, 3 actions: code c plays action c (code 3 unbound); action a is code a."""
    return ActionBinding.fit([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2], num_codes=4, num_actions=3)


class _Adapter:
    """An action adapter whose code depends on the frame: the sign of its first latent."""

    def codes(self, latents, actions):
        return (latents[:, 0, 0, 0] > 0).long() * 3


def test_latent_dynamics_take_codes_and_real_actions_through_binding_or_adapter():
    setup = ActionSetup("latent", 4, DISCRETE3, _binding())
    codes = setup.to_model(torch.tensor([0, 3, 2]), "latent", 3, **CPU)
    assert codes.tolist() == [0, 3, 2]
    assert setup.to_model([2, 0, 1], "real", 3, **CPU).tolist() == [2, 0, 1]
    z = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1).expand(2, 4, 8, 8)
    got = setup.to_model([1, 1], "real", 2, latents=z, adapter=_Adapter(), **CPU)
    assert got.tolist() == [3, 0]  # the adapter's codes, which depend on the frame
    assert setup.num_actions("latent") == 4 and setup.num_actions("real") == 3
    assert setup.gym_space("latent").n == 4 and setup.gym_space("real").n == 3


def test_real_and_both_dynamics_get_real_actions_and_vectors():
    real = ActionSetup("real", 4, DISCRETE3, _binding())
    assert real.to_model([0, 3], "latent", 2, **CPU).tolist() == [0, 0]  # unbound code 3 -> 0
    assert real.to_model([2, 1], "real", 2, **CPU).tolist() == [2, 1]
    both = ActionSetup("both", 4, DISCRETE3, _binding())
    codes, vectors = both.to_model([1, 3], "latent", 2, **CPU)
    assert codes.tolist() == [1, 3] and vectors.tolist() == [[0, 1, 0], [1, 0, 0]]
    codes, vectors = both.to_model([2, 0], "real", 2, **CPU)
    assert codes.tolist() == [2, 0] and vectors.tolist() == [[0, 0, 1], [1, 0, 0]]
    box = ActionSetup("real", None, BOX2)
    out = box.to_model(np.zeros((3, 2)), "real", 3, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 2)
    assert box.num_actions("real") is None and box.gym_space("real").shape == (2,)


def test_actions_are_checked_and_missing_conversions_named():
    setup = ActionSetup("latent", 4, DISCRETE3, None)
    with pytest.raises(ValueError, match=r"latent actions must lie in \[0, 4\)"):
        setup.to_model([0, 4], "latent", 2, **CPU)
    with pytest.raises(ValueError, match=r"integers \[2\]"):
        setup.to_model([0.5, 1.0], "latent", 2, **CPU)
    with pytest.raises(ValueError, match=r"integers \[2\]"):
        setup.to_model([0, 1, 2], "latent", 2, **CPU)
    with pytest.raises(ValueError, match="^bundle x: .* has no binding.json"):
        setup.to_model([0, 1], "real", 2, where="bundle x", **CPU)
    with pytest.raises(ValueError, match="action_type must be one of"):
        setup.to_model([0], "codes", 1, **CPU)
    box = ActionSetup("real", None, BOX2)
    with pytest.raises(ValueError, match=r"real actions must be \[3, 2\]"):
        box.to_model(np.zeros((3, 3)), "real", 3, **CPU)
    with pytest.raises(ValueError, match="has no latent actions"):
        box.to_model([0, 0, 0], "latent", 3, **CPU)
    with pytest.raises(ValueError, match="has no latent actions"):
        box.gym_space("latent")
    with pytest.raises(ValueError, match="action_source must be one of"):
        ActionSetup("keyboard")
    with pytest.raises(ValueError, match="needs the game's action_space"):
        ActionSetup("both", 4)


def test_networks_get_their_embedding_fields_and_are_checked_against_them():
    from worldsim.dynamics import config_from_preset as dynamics_preset
    from worldsim.heads import config_from_preset as heads_preset

    assert ActionSetup("latent", 16).embedding_fields() == {"action_embedding": "discrete", "num_actions": 16}
    assert ActionSetup("real", 8, DISCRETE3).embedding_fields() == {"action_embedding": "discrete",
                                                                     "num_actions": 3}
    assert ActionSetup("real", None, BOX2).embedding_fields() == {"action_embedding": "continuous",
                                                                  "action_dim": 2}
    assert ActionSetup("both", 4, BOX2).embedding_fields() == {"action_embedding": "both",
                                                               "num_actions": 4, "action_dim": 2}
    both = ActionSetup("both", 4, DISCRETE3)
    dyn = dynamics_preset("tiny", **both.embedding_fields())
    both.check_networks(dyn, None, "here")
    with pytest.raises(ValueError, match=r"^here: action_source='latent' needs a dynamics action_embedding"):
        ActionSetup("latent", 4).check_networks(dyn, None, "here")
    heads = heads_preset("tiny", num_actions=4)
    with pytest.raises(ValueError, match="heads.action_embedding='discrete' differs"):
        both.check_networks(dyn, heads, "here")


def test_recorded_actions_and_saved_sources():
    codes, real = torch.tensor([1, 2]), torch.tensor([0, 1])
    assert model_input("latent", codes, real) is codes and model_input("real", codes, real) is real
    assert model_input("both", codes, real) == (codes, real)
    assert trained_source({"extra": {"action_source": "both"}}) == "both"
    assert trained_source({"extra": {"actions": "real"}}) == "real"  # weights written before the rename
    assert trained_source({"extra": {}}) == "latent"
    with pytest.raises(ValueError, match="action_source"):
        trained_source({"extra": {"action_source": "keys"}})


def test_each_vocabulary_is_defined_once():
    vocabularies = ['("latent", "real")', '("latent", "real", "both")', '("pixels", "latents")',
                    '("random", "sticky")', '("discrete", "continuous", "both")',
                    '("threshold", "sample")', '("float32", "bfloat16", "float16")']
    for words in vocabularies:
        homes = [str(p.relative_to(ROOT)) for folder in ("worldsim", "agents", "envs")
                 for p in (ROOT / folder).rglob("*.py") if words in p.read_text()]
        assert len(homes) == 1, (words, homes)
    assert set(ACTION_SOURCES) == {"latent", "real", "both"}


# ----------------------------------------------------------------------------- old names
def _old_bundle_runs(bundle) -> dict[str, np.ndarray]:
    """The seeded runs of tests/data/bundle_v1_reference.npz: the dynamics' weights redrawn
    (a fresh DiT predicts zero velocity), two worlds, three steps of latent then real actions;
    latents, reward and termination per step."""
    out = {}
    for kind, acts in (("latent", [[0, 3], [1, 2], [3, 3]]), ("real", [[0, 2], [1, 1], [2, 0]])):
        gen = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for p in bundle.dynamics.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.08)
        sim = Simulator(bundle, WorldOptions(seed=0, sampler_steps=2, action_type=kind), batch=2)
        sim.reset(torch.tensor([0, 1]))
        rows = []
        for a in acts:
            r = sim.step(torch.tensor(a))
            rows.append(torch.cat([r.latents.flatten(1), r.reward[:, None], r.terminated[:, None].float()], 1))
        out[kind] = torch.stack(rows).numpy()
    return out


def test_a_bundle_written_in_the_old_format_loads_and_behaves_the_same(tmp_path):
    """tests/data/bundle_v1: ``worldsim.testing.untrained_bundle(path, "tiny",
    action_source="both", action_space=DISCRETE3, num_contexts=2)`` as the format-1 writer saved
    it (the action setup as top-level keys, the networks' field ``action_type``, each config in
    bundle.json and in <name>.json), and the runs of :func:`_old_bundle_runs` that format's
    Simulator drew (bundle_v1_reference.npz)."""
    old = DATA / "bundle_v1"
    doc = json.loads((old / "bundle.json").read_text())
    assert doc["format_version"] == 1 and doc["action_source"] == "both"
    assert doc["networks"]["dynamics"]["action_type"] == "both"
    b = load_bundle(old)
    assert b.actions == ActionSetup("both", 4, DISCRETE3, adapter=False)
    assert b.binding is not None and b.actions.binding is b.binding
    assert b.dynamics.cfg.action_embedding == "both" and b.heads.cfg.action_embedding == "both"
    reference = np.load(DATA / "bundle_v1_reference.npz")
    runs = _old_bundle_runs(b)
    for kind in ("latent", "real"):  # written with 2 CPU threads: float sums in another order
        np.testing.assert_allclose(runs[kind], reference[kind], atol=1e-5, rtol=0, err_msg=kind)
    # Saved again, it takes today's names and runs the same worlds.
    again = save_bundle(tmp_path / "new", autoencoder=b.autoencoder, dynamics=load_bundle(old).dynamics,
                        latent_mean=b.latent_mean, latent_std=b.latent_std, contexts=b.contexts,
                        heads=b.heads, binding=b.binding, meta=b.meta)
    doc = json.loads((again / "bundle.json").read_text())
    assert "action_source" not in doc and doc["action_setup"]["source"] == "both"
    assert json.loads((again / "dynamics.json").read_text())["config"]["action_embedding"] == "both"
    renewed = load_bundle(again)
    assert renewed.actions == b.actions
    for kind, run in _old_bundle_runs(renewed).items():
        np.testing.assert_array_equal(run, runs[kind], err_msg=kind)


def test_weights_saved_under_the_old_names_load(tmp_path):
    from worldsim.dynamics import build_dynamics
    from worldsim.weights import load_network, read_meta, save_weights

    net = build_dynamics("tiny", action_embedding="continuous", action_dim=2)
    save_weights(net, net.cfg, tmp_path, "dynamics", extra={"action_source": "real"})
    path = tmp_path / "dynamics.json"
    meta = json.loads(path.read_text())
    meta["format_version"] = 1
    meta["config"]["action_type"] = meta["config"].pop("action_embedding")
    meta["extra"] = {"actions": meta["extra"].pop("action_source")}
    path.write_text(json.dumps(meta))
    assert read_meta(tmp_path, "dynamics")["config"]["action_embedding"] == "continuous"
    assert trained_source(read_meta(tmp_path, "dynamics")) == "real"
    loaded = load_network(tmp_path, "dynamics")
    assert loaded.cfg == net.cfg
    for p, q in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------- renamed keys
def test_old_config_keys_are_refused_naming_the_new_one(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^worldsim train: actions= was renamed; write action_source=real$"):
        compose("train", ["actions=real"])
    with pytest.raises(ConfigError, match=r"write world\.termination=threshold"):
        compose("agent", ["bundle=x", "agent.termination=threshold"])
    assert compose("train", ["action_source=auto"]).action_source == "auto"
    # an old key set by a YAML file (here an experiment preset) is refused too
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "experiment" / "old.yaml").write_text("# @package _global_\nactions: real\n")
    monkeypatch.setenv("WORLDSIM_CONFIG_DIR", str(configs))
    with pytest.raises(ConfigError, match=re.escape("sets 'actions', which was renamed 'action_source'")):
        compose("quickstart", ["experiment=old"])
