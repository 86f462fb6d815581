"""Heads fitted on the dynamics' own rollouts: the pool's alignment, the fit
(``worldsim/training/heads_refit.py``), the scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from worldsim.dynamics import build_dynamics
from worldsim.heads import build_heads
from worldsim.heads_on_rollouts import RolloutPool, build_pool, event_scores
from worldsim.training.heads_refit import fit_heads


class FakeLatents:
    """A latent store whose frame t of episode e is filled with ``e + t / 100``; reward[t] = t,
    label[t] = t % 4, and the last transition of every episode terminates."""

    def __init__(self, lengths=(20, 14, 30), rewards=True):
        self.lengths, self.rewards = list(lengths), rewards

    def __len__(self):
        return len(self.lengths)

    def episode_length(self, i):
        return self.lengths[i]

    def has(self, i, name):
        return name != "rewards" or self.rewards

    def read_latents(self, i, start=0, stop=None):
        t = np.arange(self.lengths[i])[start:stop]
        return np.broadcast_to((i + t / 100)[:, None, None, None], (len(t), 4, 8, 8)).astype(np.float16)

    def read_labels(self, name, i, start=0, stop=None):
        return (np.arange(self.lengths[i] - 1) % 4)[start:stop]

    def read_steps(self, i, start=0, stop=None):
        n = self.lengths[i] - 1
        term = np.zeros(n, bool)
        term[-1] = True
        return {"rewards": np.arange(n, dtype=np.float32)[start:stop], "terminated": term[start:stop],
                "actions": (np.arange(n) % 5)[start:stop]}

    def normalize(self, z):
        return z


def test_pool_aligns_frames_actions_and_rewards():
    store = FakeLatents()
    dyn = build_dynamics("tiny")
    pool = build_pool(dyn, store, [0, 2], windows=12, context=3, horizon=4, progress=False, batch=5)
    assert len(pool) == 12
    assert pool.real.shape == pool.generated.shape == (12, 5, 4, 8, 8)
    assert pool.actions.shape == pool.rewards.shape == pool.terminated.shape == (12, 4)
    # The first frame of both clips is the last real context frame.
    torch.testing.assert_close(pool.generated[:, 0], pool.real[:, 0])
    for i in range(12):
        value = float(pool.real[i, 0, 0, 0, 0])
        episode = round(value)
        assert episode in (0, 2)  # held-out episode 1 never appears
        t = round((value - episode) * 100)  # frame index of the clip's first frame
        # transition k of the clip is the episode's transition t + k: reward t + k, label (t + k) % 4
        assert pool.rewards[i].tolist() == [float(t + k) for k in range(4)]
        assert pool.actions[i].tolist() == [(t + k) % 4 for k in range(4)]
        assert pool.terminated[i].tolist() == [t + k == store.lengths[episode] - 2 for k in range(4)]
        real_next = float(pool.real[i, 1, 0, 0, 0])
        assert real_next == pytest.approx(episode + (t + 1) / 100, abs=1e-3)
    # The generated frames are the model's, not copies of the real ones.
    assert not torch.allclose(pool.generated[:, 1:], pool.real[:, 1:])


def test_pool_refuses_data_without_rewards_and_unknown_actions():
    dyn = build_dynamics("tiny")
    with pytest.raises(ValueError, match="have no rewards"):
        build_pool(dyn, FakeLatents(rewards=False), [0], windows=2, progress=False)
    with pytest.raises(ValueError, match="action_source must be one of"):
        build_pool(dyn, FakeLatents(), [0], windows=2, action_source="keys", progress=False)


def _bright_pool(n: int, seed: int) -> RolloutPool:
    """Reward +1 (and termination) exactly where the generated next frame is bright; the real
    clips show nothing of it (as when the model renders an event the data hides)."""
    g = torch.Generator().manual_seed(seed)
    bright = torch.rand(n, 2, generator=g) < 0.3
    gen = torch.randn(n, 3, 4, 8, 8, generator=g) * 0.1
    gen[:, 1:, 0] += torch.where(bright, 1.5, -1.5)[..., None, None]
    real = torch.randn(n, 3, 4, 8, 8, generator=g) * 0.1
    return RolloutPool(real, gen, torch.randint(0, 4, (n, 2), generator=g), bright.float(), bright)


def test_fit_heads_learns_what_the_generated_frames_show():
    torch.manual_seed(0)
    heads = build_heads("tiny")
    train, held_out = _bright_pool(512, 0), _bright_pool(256, 1)
    before = event_scores(heads, held_out, "generated")
    assert before["coin"]["recall"] == 0.0  # fresh heads predict reward 0
    history = fit_heads(heads, train, steps=150, batch=32, lr=3e-3, real_weight=0.0, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    after = event_scores(heads, held_out, "generated")
    assert after["coin"]["recall"] > 0.9 and after["coin"]["precision"] > 0.9
    assert after["termination"]["recall"] > 0.9
    assert after["predicted_reward_per_step"] == pytest.approx(after["reward_per_step"], abs=0.05)


class _Oracle(nn.Module):
    """Predicts reward = first channel of the next latent, termination prob = its second."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def predict(self, z_prev, z_next, action):
        return {"reward": z_next[:, 0, 0, 0], "termination_prob": z_next[:, 1, 0, 0]}


def test_event_scores_count_precision_and_recall():
    gen = torch.zeros(1, 5, 2, 1, 1)
    gen[0, 1:, 0, 0, 0] = torch.tensor([1.0, 1.0, -1.0, 0.0])  # predicted rewards of 4 transitions
    gen[0, 1:, 1, 0, 0] = torch.tensor([0.0, 0.0, 0.9, 0.9])  # predicted termination probs
    pool = RolloutPool(torch.zeros_like(gen), gen, torch.zeros(1, 4, dtype=torch.long),
                       torch.tensor([[1.0, 0.0, -1.0, 1.0]]), torch.tensor([[False, False, True, False]]))
    s = event_scores(_Oracle(), pool, "generated")
    assert s["coin"] == {"true": 2, "predicted": 2, "precision": 0.5, "recall": 0.5}
    assert s["loss"] == {"true": 1, "predicted": 1, "precision": 1.0, "recall": 1.0}
    assert s["termination"] == {"true": 1, "predicted": 2, "precision": 0.5, "recall": 1.0}
    assert s["reward_per_step"] == pytest.approx(0.25) and s["predicted_reward_per_step"] == pytest.approx(0.25)
    real = event_scores(_Oracle(), pool, "real")
    assert real["coin"]["predicted"] == 0
    with pytest.raises(ValueError, match="which must be"):
        event_scores(_Oracle(), pool, "imagined")


def test_end_windows_are_oversampled_with_weights_that_undo_it():
    store = FakeLatents(lengths=(20, 14, 30))
    dyn = build_dynamics("tiny")
    uniform = build_pool(dyn, store, [0, 1, 2], windows=40, context=2, horizon=3, progress=False)
    assert uniform.weights is None
    pool = build_pool(dyn, store, [0, 1, 2], windows=40, context=2, horizon=3, end_fraction=0.5,
                      progress=False)
    ends = pool.terminated[:, -1]  # every episode ends in a termination: end windows end with it
    assert int(ends.sum()) >= 20 and int(uniform.terminated.sum()) < 20
    assert pool.weights.shape == (40,) and torch.isclose(pool.weights.mean(), torch.tensor(1.0))
    assert pool.weights[ends].max() < pool.weights[~ends].min()
    # Weighted, the pool's termination rate is that of uniform windows: one terminal transition
    # per episode, among the 4 transitions of each of an episode's windows of 5 latents.
    windows = [n - 5 + 1 for n in (20, 14, 30)]
    true_rate = 3 / (sum(windows) * 4)
    weighted = float((pool.weights[:, None] * pool.terminated.float()).mean())
    assert abs(weighted - true_rate) < 0.5 * true_rate
    with pytest.raises(ValueError, match=r"end_fraction must lie in \[0, 1\)"):
        build_pool(dyn, store, [0], windows=4, context=2, horizon=3, end_fraction=1.0, progress=False)
    heads = build_heads("tiny")
    history = fit_heads(heads, pool, steps=3, batch=8, progress=False)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


def test_heads_loss_weights():
    heads = build_heads("tiny")
    z = torch.randn(3, 3, 4, 8, 8)
    a = torch.randint(0, 4, (3, 2))
    r, te = torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.bool)
    plain = heads.loss(z, a, r, te)["loss"]
    torch.testing.assert_close(heads.loss(z, a, r, te, weights=torch.ones(3))["loss"], plain)
    only_first = heads.loss(z, a, r, te, weights=torch.tensor([3.0, 0.0, 0.0]))["loss"]
    torch.testing.assert_close(only_first, heads.loss(z[:1], a[:1], r[:1], te[:1])["loss"])
    with pytest.raises(ValueError, match=r"weights must be \[3\]"):
        heads.loss(z, a, r, te, weights=torch.ones(2))


def test_readout_scores_of_real_clips_read_them_teacher_forced():
    from worldsim.heads_on_rollouts import readout_scores

    torch.manual_seed(0)
    store = FakeLatents()
    dyn = build_dynamics("tiny", readout=True).eval()
    pool = build_pool(dyn, store, [0, 2], windows=6, context=2, horizon=3, progress=False)
    generated = readout_scores(pool)
    real = readout_scores(pool, dyn)
    assert generated["transitions"] == real["transitions"] == 18
    # the teacher-forced reading is the network's forward pass over the real clip
    level = torch.full(pool.real.shape[:2], 0.1)
    with torch.no_grad():
        _, events = dyn(pool.real, level, pool.actions, readout=True)
    expect = dyn.readout.predict({k: e[:, 1:] for k, e in events.items()})["reward"].mean()
    assert real["predicted_reward_per_step"] == pytest.approx(float(expect), abs=1e-6)
    # a readout that calls every transition a coin finds them all, at the coins' rate
    with torch.no_grad():
        dyn.readout.reward_out.bias.copy_(torch.linspace(-9, 9, dyn.readout.reward_out.bias.numel()) * 3)
    every = readout_scores(pool, dyn)["coin"]
    assert every["recall"] == 1.0 and every["predicted"] == 18
    with pytest.raises(ValueError, match="no readout"):
        readout_scores(pool, build_dynamics("tiny"))
