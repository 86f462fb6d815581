"""ActionBinding: Genie's code <-> real action mapping from a few labelled transitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.binding import ActionBinding, binding_accuracy_at_k


def _constructed(n: int = 2000, noise: float = 0.1, seed: int = 0):
    """Codes generated from 5 real actions through a known map (codes 5-7 unused), with noise."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 5, n)
    truth = np.array([3, 0, 6, 1, 4])  # action -> code
    codes = truth[actions]
    flip = rng.random(n) < noise
    codes[flip] = rng.integers(0, 8, flip.sum())
    return codes, actions, truth


def test_fit_recovers_known_map():
    codes, actions, truth = _constructed()
    b = ActionBinding.fit(codes, actions, num_codes=8, num_actions=5)
    for a, c in enumerate(truth):
        assert b.to_latent(a) == c
        assert b.to_real(int(c)) == a
    assert b.counts.sum() == len(codes)
    # 10% of codes are uniform noise: 1/8 of those still land on the right code.
    assert 0.88 < b.accuracy(codes, actions) < 0.95


def test_unmapped_codes_and_actions_are_explicit():
    codes = np.array([0, 0, 1, 1, 1])
    actions = np.array([2, 2, 0, 0, 2])
    b = ActionBinding.fit(codes, actions, num_codes=4, num_actions=3)
    assert b.unmapped_codes() == [2, 3]
    assert b.unmapped_actions() == [1]
    assert b.to_real(3) is None and b.to_latent(1) is None
    assert b.to_real(3, default=0) == 0
    np.testing.assert_array_equal(b.to_real(np.array([0, 1, 2])), [2, 0, -1])
    np.testing.assert_array_equal(b.to_latent(torch.tensor([0, 1, 2]), default=9), [1, 9, 0])
    # an unmapped code never counts as correct
    assert b.accuracy([2, 0], [0, 2]) == 0.5


def test_ties_go_to_smaller_index():
    b = ActionBinding.fit([0, 0], [1, 0], num_codes=2, num_actions=2)
    assert b.to_real(0) == 0


def test_dict_and_json_round_trip():
    codes, actions, _ = _constructed(300)
    b = ActionBinding.fit(codes, actions, 8, 5)
    data = json.loads(json.dumps(b.to_dict()))
    b2 = ActionBinding.from_dict(data)
    np.testing.assert_array_equal(b2.code_to_action, b.code_to_action)
    np.testing.assert_array_equal(b2.action_to_code, b.action_to_code)
    np.testing.assert_array_equal(b2.counts, b.counts)
    assert ActionBinding.from_json(b.to_json()).accuracy(codes, actions) == b.accuracy(
        codes, actions
    )


def test_bad_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="latent_codes must lie in"):
        ActionBinding.fit([0, 9], [0, 1], num_codes=8, num_actions=5)
    with pytest.raises(ValueError, match="same transitions"):
        ActionBinding.fit([0, 1, 2], [0, 1], num_codes=8, num_actions=5)
    with pytest.raises(ValueError, match="integers"):
        ActionBinding.fit([0.5], [0], num_codes=8, num_actions=5)
    b = ActionBinding.fit([0], [0], 2, 2)
    with pytest.raises(ValueError, match="code must lie in"):
        b.to_real(5)
    with pytest.raises(ValueError, match="missing key"):
        ActionBinding.from_dict({"num_codes": 2})
    bad = b.to_dict() | {"code_to_action": [0, 0, 0]}
    with pytest.raises(ValueError, match="do not match"):
        ActionBinding.from_dict(bad)


def test_accuracy_at_k_grows_with_k():
    codes, actions, _ = _constructed(3000, noise=0.3)
    few = binding_accuracy_at_k(codes, actions, 3, 8, 5, draws=20)
    many = binding_accuracy_at_k(codes, actions, 1000, 8, 5, draws=5)
    assert many["mean"] > 0.7 and many["std"] < 0.02
    assert few["mean"] < many["mean"]
    with pytest.raises(ValueError, match="k must be in"):
        binding_accuracy_at_k(codes, actions, 3000, 8, 5)
