"""The action adapter: real action -> latent code in the current state; its fit
(``worldsim/training/adapter_fit.py``); the bundle and the Simulator that use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.action_adapter import ActionAdapter, ActionAdapterConfig
from worldsim.binding import ActionBinding
from worldsim.bundle import BundleError, load_bundle, save_bundle
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.training.adapter_fit import fit_action_adapter
from worldsim.world_options import WorldOptions

DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


class StateDependentCodes:
    """A latent store (the parts the adapter reads) whose code for a transition is
    ``2 * action + [channel 0 of z_t is bright]``: the action alone fixes only half of it."""

    latent_shape = (4, 8, 8)

    def __init__(self, episodes: int = 8, length: int = 60, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.z = [rng.standard_normal((length, 4, 8, 8)).astype(np.float16) for _ in range(episodes)]
        for z in self.z:
            z[:, 0] += rng.choice([-1.5, 1.5], size=(length, 1, 1)).astype(np.float16)
        self.a = [rng.integers(0, 3, length - 1) for _ in range(episodes)]
        self.k = [2 * a + (z[:-1, 0].astype(np.float32).mean((1, 2)) > 0) for a, z in zip(self.a, self.z, strict=True)]

    def __len__(self) -> int:
        return len(self.z)

    def episode_length(self, e: int) -> int:
        return len(self.z[e])

    def read_latents(self, e, start=0, stop=None):
        return self.z[e][start:stop]

    def read_steps(self, e, start=0, stop=None):
        return {"actions": self.a[e][start:stop]}

    def read_labels(self, name, e, start=0, stop=None):
        assert name == "lam"
        return self.k[e][start:stop]

    def normalize(self, z):
        return z


def test_adapter_learns_state_dependent_codes_the_binding_cannot():
    store = StateDependentCodes()
    train, val = list(range(6)), [6, 7]
    binding = ActionBinding.fit(np.concatenate(store.k[:6]), np.concatenate(store.a[:6]), 6, 3)
    adapter, summary = fit_action_adapter(store, train, val, num_actions=3, num_codes=6, binding=binding,
                                          samples=2000, steps=300, batch=64, hidden=16, progress=False)
    assert summary["val_accuracy"] > 0.9
    assert summary["binding_val_accuracy"] < 0.65  # one code per action: right about half the time
    z = torch.zeros(2, 4, 8, 8)
    z[0, 0], z[1, 0] = 1.5, -1.5
    assert adapter.codes(z, torch.tensor([2, 2])).tolist() == [5, 4]


def test_adapter_input_errors_name_the_shape():
    adapter = ActionAdapter(ActionAdapterConfig(4, 8, 8, num_actions=3, num_codes=4, hidden=8))
    with pytest.raises(ValueError, match=r"latents must be \[b, 4, 8, 8\]"):
        adapter(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"actions must be integers \[2\]"):
        adapter(torch.zeros(2, 4, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="num_codes must be >= 1"):
        ActionAdapterConfig(4, 8, 8, num_actions=3, num_codes=0)
    with pytest.raises(ValueError, match="no transitions"):
        fit_action_adapter(StateDependentCodes(episodes=1, length=1), [0], [], num_actions=3, num_codes=6,
                           progress=False)


def _resave(b, path, adapter):
    return save_bundle(path, autoencoder=b.autoencoder, dynamics=b.dynamics, latent_mean=b.latent_mean,
                       latent_std=b.latent_std, contexts=b.contexts, context_actions=b.context_actions,
                       heads=b.heads, lam=b.lam, binding=b.binding, meta=b.meta, action_adapter=adapter)


def test_bundle_carries_the_adapter_and_the_simulator_uses_it(tmp_path, monkeypatch):
    b = load_bundle(untrained_bundle(tmp_path / "plain", action_space=DISCRETE3))
    k = b.num_latent_actions
    adapter = ActionAdapter(ActionAdapterConfig(4, 8, 8, num_actions=3, num_codes=k, hidden=8))
    torch.nn.init.zeros_(adapter.logits.weight)
    with torch.no_grad():  # code k-1 for every action in every state: never the binding's choice
        adapter.logits.bias.copy_(torch.arange(3 * k, dtype=torch.float32) % k)
    loaded = load_bundle(_resave(b, tmp_path / "adapted", adapter))
    assert loaded.action_adapter is not None and loaded.action_adapter.cfg == adapter.cfg
    sim = load_simulator(loaded, WorldOptions(action_type="real", seed=0), batch=3)
    z = torch.randn(3, 4, 8, 8)
    assert sim.model_actions(torch.tensor([0, 1, 2]), latents=z).tolist() == [k - 1] * 3
    # without latents (or without an adapter) the binding's table answers
    assert sim.model_actions(torch.tensor([0, 1, 2])).tolist() == b.binding.action_to_code.clip(0).tolist()
    seen = []
    codes = sim.adapter.codes
    monkeypatch.setattr(sim.adapter, "codes", lambda z, a: seen.append(z.clone()) or codes(z, a))
    sim.reset()
    before = sim.latents.clone()
    sim.step(torch.tensor([0, 1, 2]))
    assert len(seen) == 1 and torch.equal(seen[0], before)  # the frame the actions are taken in
    assert not torch.equal(sim.latents, before)
    plain = load_simulator(b, WorldOptions(action_type="real", seed=0))
    assert plain.adapter is None


def test_bundle_rejects_an_adapter_for_another_game(tmp_path):
    b = load_bundle(untrained_bundle(tmp_path / "plain", action_space=DISCRETE3))
    wrong = ActionAdapter(ActionAdapterConfig(4, 8, 8, num_actions=5, num_codes=b.num_latent_actions, hidden=8))
    with pytest.raises(BundleError, match="num_actions=5 does not match the action space"):
        _resave(b, tmp_path / "bad", wrong)
    shape = ActionAdapter(ActionAdapterConfig(8, 8, 8, num_actions=3, num_codes=b.num_latent_actions, hidden=8))
    with pytest.raises(BundleError, match="latent shape differs"):
        _resave(b, tmp_path / "bad2", shape)
