"""The actor-critic's Gaussian head for games with a Box of actions: bounded, learns a continuous
bandit by policy gradient, and trains inside a Box world; random and agent actions reach the
Box through the unit box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.actor_critic import (
    MAX_STD,
    MIN_STD,
    ActorCritic,
    ActorCriticConfig,
    actor_critic_loss,
)
from agents.evaluate import RandomPolicy
from agents.imagination import ImaginationSource, agent_config, train_in_imagination
from agents.trainer import TrainConfig, load_checkpoint
from worldsim.actions import box_from_unit
from worldsim.testing import untrained_bundle
from worldsim.world_options import preset

BOX = {"type": "box", "shape": [2], "low": [0.0, -4.0], "high": [512.0, 4.0]}


def _model(seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    cfg = ActorCriticConfig(obs_type="latents", obs_shape=(2, 2, 2), action_dim=2, channels=(4,),
                            hidden=16)
    return ActorCritic(cfg)


def test_gaussian_head_is_bounded_and_scores_its_actions():
    model = _model()
    obs = torch.randn(5, *model.cfg.obs_shape)
    head, value = model(obs)
    assert head.shape == (5, 4) and value.shape == (5,)
    dist = model.distribution(head).base_dist
    assert (dist.stddev >= MIN_STD).all() and (dist.stddev <= MAX_STD).all()
    assert (dist.mean.abs() <= 1).all()
    a = model.act(obs, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, 2) and a.dtype == torch.float32 and (a.abs() <= 1).all()
    torch.testing.assert_close(model.act(obs, greedy=True), dist.mean)
    loss, logs = actor_critic_loss(model, obs[None], a[None], torch.ones(1, 5), entropy_coef=0.01)
    loss.backward()
    assert model.policy.weight.grad.abs().sum() > 0 and np.isfinite(logs["entropy"])
    with pytest.raises(ValueError, match="action_dim"):
        ActorCriticConfig(num_actions=0, action_dim=0)


def test_gaussian_head_learns_a_continuous_bandit():
    """Reward -|a - target|^2: REINFORCE with the value baseline moves the mean to the target."""
    model = _model(1)
    target = torch.tensor([0.6, -0.4])
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    obs = torch.zeros(1, 64, *model.cfg.obs_shape)
    g = torch.Generator().manual_seed(0)
    start = float((model.act(obs[0], greedy=True)[0] - target).norm())
    for _ in range(300):
        a = model.act(obs[0], generator=g)[None]
        reward = -(a - target).pow(2).sum(-1)
        loss, _ = actor_critic_loss(model, obs, a, reward, entropy_coef=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float((model.act(obs[0], greedy=True)[0] - target).norm())
    assert start > 0.5 and end < 0.1, (start, end)


def test_unit_box_actions_reach_the_box():
    space = spaces.Box(np.array([0.0, -4.0], np.float32), np.array([512.0, 4.0], np.float32))
    unit = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [3.0, -3.0]])
    torch.testing.assert_close(box_from_unit(unit, space),
                               torch.tensor([[0.0, -4.0], [256.0, 0.0], [512.0, 4.0], [512.0, -4.0]]))
    with pytest.raises(ValueError, match="bounded"):
        box_from_unit(unit, spaces.Box(-np.inf, np.inf, (2,), np.float32))
    rand = RandomPolicy.for_space(space, seed=0)
    a = rand(torch.zeros(1000, 3))
    assert a.shape == (1000, 2) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.5
    assert RandomPolicy.for_space(spaces.Discrete(5))(torch.zeros(7, 3)).shape == (7,)
    with pytest.raises(ValueError, match="Box"):
        agent_config("latents", (2, 2, 2), spaces.Box(-np.inf, np.inf, (2,), np.float32))


def test_imagination_training_in_a_box_world(tmp_path):
    bundle = untrained_bundle(tmp_path / "b", "tiny", action_source="real", action_space=BOX,
                              heads=False)
    options = preset("imagination", sampler_steps=1, action_type="real")
    source = ImaginationSource(bundle, 2, options)
    assert source.num_actions is None and isinstance(source.action_space, spaces.Box)
    source.reset(seed=0)
    obs, reward, terminated, truncated = source.step(torch.tensor([[1.0, -1.0], [0.0, 0.5]]))
    assert obs.shape == (2, *source.obs_shape) and reward.shape == (2,)
    source.close()
    train = TrainConfig(updates=2, horizon=3, log_every=1, ckpt_every=2, progress=False, seed=0)
    train_in_imagination(bundle, tmp_path / "agent", options=options, num_envs=2, train=train,
                         network={"channels": (4,), "hidden": 16})
    model, ckpt = load_checkpoint(tmp_path / "agent" / "checkpoint.pt")
    assert model.cfg.action_dim == 2 and ckpt["update"] == 2
