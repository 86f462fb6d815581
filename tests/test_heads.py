"""Reward and termination heads."""

import pytest
import torch

from worldsim.heads import build_heads, config_from_preset, symexp, symlog, twohot


def test_twohot_round_trips_values():
    bins = torch.linspace(-5, 5, 21)
    values = torch.tensor([-5.0, -0.3, 0.0, 0.26, 4.9])
    enc = twohot(values, bins)
    torch.testing.assert_close(enc.sum(-1), torch.ones(5))
    torch.testing.assert_close((enc * bins).sum(-1), values)
    torch.testing.assert_close(
        symexp(symlog(torch.tensor([-100.0, 0.0, 3.0]))), torch.tensor([-100.0, 0.0, 3.0])
    )


@pytest.mark.parametrize("mode", ["twohot", "regression"])
def test_loss_and_predict_shapes(mode):
    heads = build_heads("tiny", reward_mode=mode)
    z, a = torch.randn(2, 5, 4, 8, 8), torch.randint(0, 4, (2, 4))
    out = heads.loss(z, a, torch.randn(2, 4), torch.rand(2, 4) < 0.2)
    assert {"loss", "reward_loss", "termination_loss", "reward_mae", "termination_acc"} <= set(out)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    pred = heads.predict(z[:, 0], z[:, 1], a[:, 0])
    assert pred["reward"].shape == (2,) and pred["termination_prob"].shape == (2,)
    # Fresh heads predict reward 0 (zero-initialised output layer).
    torch.testing.assert_close(pred["reward"], torch.zeros(2))
    only_reward = heads.loss(z, a, torch.randn(2, 4), None)
    assert "termination_loss" not in only_reward


def test_bad_inputs_raise():
    heads = build_heads("tiny")
    z, a = torch.randn(2, 5, 4, 8, 8), torch.randint(0, 4, (2, 4))
    with pytest.raises(ValueError, match=r"rewards must be \[2, 4\]"):
        heads.loss(z, a, torch.randn(2, 5), None)
    with pytest.raises(ValueError, match="z_prev must be"):
        heads.predict(torch.randn(2, 3, 8, 8), z[:, 1], a[:, 0])
    with pytest.raises(ValueError, match="reward_mode must be one of"):
        config_from_preset("tiny", reward_mode="huber")


def test_heads_learn_a_sparse_reward_and_termination():
    """Reward +1 when action 1 is taken and the next latent is bright; terminate when it is dark."""
    torch.manual_seed(0)
    heads = build_heads("tiny", action_embedding="discrete", num_actions=4)
    opt = torch.optim.Adam(heads.parameters(), lr=3e-3)

    def batch(n):
        bright = torch.rand(n, 2) < 0.5
        z = torch.randn(n, 3, 4, 8, 8) * 0.1
        z[:, 1:, 0] += torch.where(bright, 1.0, -1.0)[..., None, None]
        a = torch.randint(0, 4, (n, 2))
        reward = ((a == 1) & bright).float()
        return z, a, reward, ~bright

    for _ in range(150):
        out = heads.loss(*batch(32))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    z, a, r, term = batch(256)
    pred = heads.predict(z[:, 0], z[:, 1], a[:, 0])
    assert (pred["reward"] - r[:, 0]).abs().mean() < 0.1
    assert ((pred["termination_prob"] > 0.5) == term[:, 0]).float().mean() > 0.95
