"""The dynamics' reward/termination readout: alignment, sampling paths, learning, the Simulator."""

import math

import numpy as np
import pytest
import torch
from test_flow import MOVES, blob_world

from worldsim.bundle import load_bundle, save_bundle
from worldsim.dynamics import DynamicsModel, build_dynamics
from worldsim.flow import rollout, sample_next, training_loss
from worldsim.simulator import Simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions


def _events(batch: int, frames: int, seed: int):
    """Blob-world clips with a reward of 1 for each step that lands the blob on row 0 and an
    ending for each step that lands it on column 0 (events of the new frame's state)."""
    z, a = blob_world(batch, frames, seed=seed)
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, 8, (batch, 2), generator=g)  # blob_world's own first draw
    rows, cols = [], []
    for t in range(frames - 1):
        pos = (pos + MOVES[a[:, t]]) % 8
        rows.append(pos[:, 0] == 0)
        cols.append(pos[:, 1] == 0)
    return z, a, torch.stack(rows, 1).float(), torch.stack(cols, 1)


def test_fresh_readout_predicts_no_reward_and_rare_endings():
    net = build_dynamics("tiny", num_actions=5, readout=True)
    z, a = blob_world(2, 4)
    _, out = net(z, torch.zeros(2, 4), a, readout=True)
    p = net.readout.predict(out)
    assert out["reward_logits"].shape == (2, 4, net.cfg.reward_bins)
    torch.testing.assert_close(p["reward"], torch.zeros(2, 4))
    torch.testing.assert_close(p["termination_prob"], torch.full((2, 4), 0.01))


def test_readout_needs_the_config_switch():
    net = build_dynamics("tiny", num_actions=5)
    z, a = blob_world(1, 3)
    assert net.readout is None
    with pytest.raises(ValueError, match="readout"):
        net(z, torch.zeros(1, 3), a, readout=True)
    with pytest.raises(ValueError, match="no readout"):
        rollout(net, z[:, :2], a[:, :1], a[:, 1:], steps=1, readout=True)


def test_cached_and_uncached_sampling_read_the_same_events():
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5, readout=True).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    z, a = blob_world(3, 6)
    kw = dict(steps=2)
    zc, rc = rollout(net, z[:, :2], a[:, :1], a[:, 1:], generator=torch.Generator().manual_seed(1),
                     readout=True, **kw)
    zu, ru = rollout(net, z[:, :2], a[:, :1], a[:, 1:], generator=torch.Generator().manual_seed(1),
                     readout=True, use_cache=False, **kw)
    torch.testing.assert_close(zc, zu, atol=1e-5, rtol=1e-5)
    assert rc["reward_logits"].shape == (3, 4, net.cfg.reward_bins)
    for k in rc:
        torch.testing.assert_close(rc[k], ru[k], atol=1e-4, rtol=1e-4)
    # The readout depends on the action taken.
    other = (a[:, 1:] + 1) % 5
    _, ro = rollout(net, z[:, :2], a[:, :1], other, generator=torch.Generator().manual_seed(1),
                    readout=True, **kw)
    assert (ro["reward_logits"] - rc["reward_logits"]).abs().max() > 1e-4


def test_sampler_returns_its_first_estimate():
    net = build_dynamics("tiny", num_actions=5).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    z, a = blob_world(2, 3)
    one = sample_next(net, z[:, :2], a[:, :1], a[:, 1], steps=1,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.first, one.z)  # one Euler step: the first guess is the sample
    four = sample_next(net, z[:, :2], a[:, :1], a[:, 1], steps=4,
                       generator=torch.Generator().manual_seed(0))
    assert (four.first - four.z).abs().max() > 1e-5
    assert four.readout is None


def test_readout_learns_events_of_the_new_frame_jointly_with_the_flow():
    torch.manual_seed(0)
    net = build_dynamics("tiny", num_actions=5, readout=True)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for step in range(250):
        z, a, r, end = _events(16, 6, seed=step)
        out = training_loss(net, z, a, rewards=r, terminated=end,
                            generator=torch.Generator().manual_seed(step))
        assert {"readout_reward_loss", "readout_termination_loss", "flow_loss"} <= set(out)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    net.eval()
    z, a, r, end = _events(64, 4, seed=10_000)
    with torch.no_grad():  # read at the sampler's regime: clean context, frames labelled 0.1
        _, out = net(z, torch.full((64, 4), 0.1), a, readout=True)
    p = net.readout.predict(out)
    hit, miss = p["reward"][:, 1:][r > 0.5], p["reward"][:, 1:][r < 0.5]
    assert hit.mean() > 0.6 and miss.mean() < 0.2, (hit.mean(), miss.mean())
    ends, rest = p["termination_prob"][:, 1:][end], p["termination_prob"][:, 1:][~end]
    assert ends.mean() > 0.5 and rest.mean() < 0.2, (ends.mean(), rest.mean())


def test_simulator_reads_rewards_from_the_dynamics_readout(tmp_path):
    path = untrained_bundle(tmp_path / "b", "tiny", heads=True)
    b = load_bundle(path)
    cfg = b.dynamics.cfg
    dyn = DynamicsModel(type(cfg)(**{**cfg.__dict__, "readout": True}))
    dyn.load_state_dict(b.dynamics.state_dict(), strict=False)
    with torch.no_grad():  # a readout sure of the bin nearest reward 3 and of the end
        bins = dyn.readout.bins
        near = int((bins - math.log1p(3.0)).abs().argmin())
        dyn.readout.reward_out.bias.copy_(torch.where(torch.arange(len(bins)) == near, 50.0, -50.0))
        dyn.readout.termination_out.bias.fill_(20.0)
    want = math.expm1(float(bins[near]))
    out = save_bundle(tmp_path / "r", autoencoder=b.autoencoder, dynamics=dyn,
                      latent_mean=b.latent_mean, latent_std=b.latent_std,
                      contexts=b.contexts, context_actions=b.context_actions, heads=b.heads,
                      lam=b.lam, binding=b.binding, meta=b.meta, overwrite=True)
    sim = Simulator(load_bundle(out), WorldOptions(seed=0, sampler_steps=2), batch=3)
    sim.reset()
    res = sim.step(np.zeros(3, dtype=np.int64))
    torch.testing.assert_close(res.reward, torch.full((3,), want), atol=1e-3, rtol=1e-3)
    assert bool(res.terminated.all())
    # The same bundle without the readout falls back to the heads on latents.
    plain = Simulator(load_bundle(path), WorldOptions(seed=0, sampler_steps=2), batch=3)
    plain.reset()
    res = plain.step(np.zeros(3, dtype=np.int64))
    assert float(res.reward.abs().max()) < 0.5 and not bool(res.terminated.any())
