"""Actor-critic, lambda-returns, imagination training (checkpoint, curve, resume) and real-game
evaluation through the action binding, on tiny untrained bundles."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from agents.actor_critic import ActorCritic, ActorCriticConfig, actor_critic_loss, lambda_returns
from agents.evaluate import AgentPolicy, RandomPolicy, compare_in_real_game, evaluate_policy
from agents.imagination import train_in_imagination
from agents.real_game import RealGameSource
from agents.trainer import TrainConfig, load_checkpoint
from worldsim.bundle import load_bundle
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions, preset

SCROLLER = {"type": "discrete", "n": 5}
FAST = preset("imagination", sampler_steps=1)  # the agents' worlds, one Euler step per frame


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return untrained_bundle(
        tmp_path_factory.mktemp("agents") / "bundle", "tiny", action_space=SCROLLER, seed=0
    )


def _hand_lambda(r, v, term, trunc, gamma, lam):
    """Backward recursion written out with Python floats, for one world."""
    g = v[-1]
    out = [0.0] * len(r)
    for t in reversed(range(len(r))):
        disc = gamma * (0.0 if term[t] else 1.0)
        la = 0.0 if trunc[t] else lam
        g = r[t] + disc * ((1 - la) * v[t + 1] + la * g)
        out[t] = g
    return out


def test_lambda_returns_match_hand_computation():
    r = [1.0, 0.0, 2.0, -1.0]
    v = [0.5, 0.2, -0.3, 0.8, 1.5]
    gamma, lam = 0.9, 0.8
    # Plain case, written out: G3 = r3 + g V4; G2 = r2 + g((1-l)V3 + l G3); ...
    g3 = -1.0 + 0.9 * 1.5
    g2 = 2.0 + 0.9 * (0.2 * 0.8 + 0.8 * g3)
    g1 = 0.0 + 0.9 * (0.2 * -0.3 + 0.8 * g2)
    g0 = 1.0 + 0.9 * (0.2 * 0.2 + 0.8 * g1)
    got = lambda_returns(torch.tensor(r)[:, None], torch.tensor(v)[:, None], gamma=gamma, lam=lam)
    assert torch.allclose(got[:, 0], torch.tensor([g0, g1, g2, g3]), atol=1e-6)
    # Terminated at step 1 and truncated at step 2, in a second world.
    term, trunc = [False, True, False, False], [False, False, True, False]
    got = lambda_returns(
        torch.tensor([r, r]).T,
        torch.tensor([v, v]).T,
        gamma=gamma,
        lam=lam,
        terminated=torch.tensor([[False] * 4, term]).T,
        truncated=torch.tensor([[False] * 4, trunc]).T,
    )
    want = _hand_lambda(r, v, term, trunc, gamma, lam)
    assert torch.allclose(got[:, 1], torch.tensor(want), atol=1e-6)
    assert got[1, 1] == pytest.approx(0.0)  # terminal step: reward only
    assert got[2, 1] == pytest.approx(2.0 + 0.9 * 0.8)  # truncated: bootstrap from V(s3)
    # lambda = 1 and no value past the end: discounted Monte-Carlo return.
    mc = lambda_returns(torch.tensor(r)[:, None], torch.zeros(5, 1), gamma=1.0, lam=1.0)
    assert mc[0, 0] == pytest.approx(sum(r))
    with pytest.raises(ValueError, match="values"):
        lambda_returns(torch.zeros(4, 2), torch.zeros(4, 2), gamma=0.9, lam=0.9)


def test_actor_critic_shapes_and_loss_gradient():
    for obs_type, shape in (("pixels", (16, 16, 3)), ("latents", (4, 4, 4))):
        cfg = ActorCriticConfig(
            obs_type=obs_type, obs_shape=shape, num_actions=5, channels=(8,), hidden=16
        )
        model = ActorCritic(cfg)
        obs = (
            torch.randint(0, 256, (3, 2, *shape), dtype=torch.uint8)
            if obs_type == "pixels"
            else torch.randn(3, 2, *shape)
        )
        logits, value = model(obs[0])
        assert logits.shape == (2, 5) and value.shape == (2,)
        # Fresh heads: uniform policy, so the entropy is log(5).
        actions = torch.randint(0, 5, (3, 2))
        loss, logs = actor_critic_loss(model, obs, actions, torch.ones(3, 2), entropy_coef=0.01)
        assert logs["entropy"] == pytest.approx(np.log(5), rel=1e-5)
        loss.backward()
        assert model.policy.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expects observations"):
        model(torch.zeros(2, 3, 3, 3))


def test_imagination_training_writes_checkpoint_curve_and_resumes(bundle, tmp_path):
    train = TrainConfig(updates=3, horizon=4, log_every=1, ckpt_every=2, progress=False, seed=1)
    net = {"channels": (8,), "hidden": 16}
    out = tmp_path / "agent"
    summary = train_in_imagination(
        bundle,
        out,
        options=preset("imagination", sampler_steps=1, termination_scale=1.5, precision="bfloat16"),
        num_envs=3,
        train=train,
        network=net,
    )
    assert (out / "checkpoint.pt").is_file() and (out / "curve.png").is_file()
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [int(float(r["update"])) for r in rows] == [1, 2, 3]
    assert float(rows[0]["env_steps"]) == 3 * 4
    model, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["update"] == 3 and ckpt["meta"]["obs_type"] == "latents"
    assert ckpt["meta"]["termination_scale"] == 1.5 and ckpt["meta"]["precision"] == "bfloat16"
    assert next(model.parameters()).dtype == torch.float32  # only the world model runs in bf16
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Resume to 5 updates: continues from 3, keeps the earlier rows.
    train5 = TrainConfig(updates=5, horizon=4, log_every=1, ckpt_every=2, progress=False, seed=1)
    train_in_imagination(bundle, out, options=FAST, num_envs=3, train=train5, network=net)
    model5, ckpt5 = load_checkpoint(out / "checkpoint.pt")
    assert ckpt5["update"] == 5 and len(ckpt5["rows"]) == 5
    seconds = [row["seconds"] for row in ckpt5["rows"]]
    assert all(a < b for a, b in zip(seconds, seconds[1:])), seconds  # time continues across the resume
    assert any(not torch.equal(before[k], v) for k, v in model5.state_dict().items())
    assert summary["last"]["update"] == 3.0
    # A different network cannot resume from this checkpoint.
    with pytest.raises(ValueError, match="differs"):
        train_in_imagination(
            bundle,
            out,
            num_envs=3,
            train=train5,
            network={"channels": (4,), "hidden": 16},
            options=FAST,
        )


def test_evaluation_through_the_binding_on_the_real_game(bundle):
    source = RealGameSource(bundle, 2, obs_type="pixels", max_episode_steps=6)
    obs = source.reset(seed=0)
    assert obs.shape == (2, 32, 32, 3) and obs.dtype == torch.uint8
    assert source.env_id == "worldsim/Scroller-v0"
    # Every latent code plays the real action the binding gives it.
    codes = torch.tensor([0, 3])
    source.step(codes)
    assert source.codes[codes].tolist() == [
        int(source.bundle.binding.to_real(c, default=0)) for c in (0, 3)
    ]
    cfg = ActorCriticConfig(
        obs_type="pixels",
        obs_shape=(32, 32, 3),
        num_actions=source.num_actions,
        channels=(8,),
        hidden=16,
    )
    agent = AgentPolicy(ActorCritic(cfg), seed=0)
    res = evaluate_policy(agent, source, [0, 1, 2], max_steps=6)
    assert res["n"] == 3 and len(res["values"]) == 3 and res["episode_length"] <= 6
    rand = evaluate_policy(RandomPolicy(source.num_real_actions), source, [0, 1, 2], max_steps=6)
    assert np.isfinite(rand["mean"]) and rand["std"] >= 0
    source.close()
    latent = RealGameSource(bundle, 1, obs_type="latents")
    assert latent.reset(seed=0).shape == (1, 4, 8, 8)
    latent.close()
    # action_type="real": the agent's actions are the game's own, checked against its space.
    real = RealGameSource(bundle, 2, obs_type="pixels", action_type="real", max_episode_steps=6)
    assert real.num_actions == real.num_real_actions == 5 and real.codes is None
    real.reset(seed=0)
    real.step(torch.tensor([4, 1]))
    with pytest.raises(ValueError, match=r"real actions must lie in \[0, 5\)"):
        real.step(torch.tensor([5, 0]))
    real.close()
    with pytest.raises(ValueError, match="action_type must be one of"):
        RealGameSource(bundle, 1, action_type="codes")


@pytest.mark.parametrize("action_type", ["latent", "real"])
def test_compare_in_real_game_trains_the_real_baseline(bundle, tmp_path, action_type):
    train = TrainConfig(updates=2, horizon=3, log_every=1, ckpt_every=1, progress=False)
    train_in_imagination(
        bundle,
        tmp_path / "agent",
        num_envs=2,
        options=FAST.replace(action_type=action_type),
        train=train,
        network={"channels": (8,), "hidden": 16},
    )
    model, ckpt = load_checkpoint(tmp_path / "agent" / "checkpoint.pt")
    assert ckpt["meta"]["action_type"] == action_type
    # Latent agents pick among the bundle's codes; real agents among the game's 5 actions.
    bound = load_bundle(bundle)
    assert model.cfg.num_actions == (5 if action_type == "real" else bound.num_latent_actions)
    res = compare_in_real_game(
        tmp_path / "agent",
        tmp_path / "eval",
        seeds=(0, 1, 2),
        episodes=2,
        max_steps=4,
        real_num_envs=2,
        matched_updates=1,
    )
    for key in ("imagination_return", "random_return", "real_return", "sample_matched_return"):
        assert res[key]["n"] == 3
    real_model, real_ckpt = load_checkpoint(res["real_checkpoint"])
    assert real_ckpt["update"] == 2  # the same number of gradient updates
    # The sample-efficiency baseline: as many real frames as the world saw, here one update.
    assert load_checkpoint(res["real_matched_checkpoint"])[1]["update"] == 1
    assert real_ckpt["meta"]["action_type"] == res["action_type"] == action_type
    assert real_model.cfg.num_actions == model.cfg.num_actions
    assert (tmp_path / "eval" / "eval.json").is_file() and (
        tmp_path / "eval" / "curves.png"
    ).is_file()


def test_rank_counts_imagined_rewards_up_to_the_first_ending(bundle, tmp_path):
    from agents.rank import imagined_returns, write_rank

    net = {"channels": (8,), "hidden": 16}
    train = TrainConfig(updates=1, horizon=2, log_every=1, ckpt_every=1, progress=False)
    train_in_imagination(bundle, tmp_path / "a", options=FAST, num_envs=2, train=train, network=net)
    loaded = load_bundle(bundle)
    heads = loaded.heads
    k = heads.cfg.reward_bins // 2 + 4  # a bin above 0: every transition pays symexp(bins[k])
    with torch.no_grad():
        heads.reward_out.weight.zero_()
        heads.reward_out.bias.fill_(-30.0)
        heads.reward_out.bias[k] = 30.0
        z = torch.zeros(1, heads.cfg.latent_channels, heads.cfg.latent_height, heads.cfg.latent_width)
        paid = float(heads.predict(z, z, torch.zeros(1, dtype=torch.long))["reward"][0])
    assert paid > 0.1
    runs = {"a": tmp_path / "a", "a_again": tmp_path / "a" / "checkpoint.pt"}
    common = dict(options=FAST.replace(action_type="latent"), num_envs=4, rollouts=2, horizon=3)
    for bias, steps, endings in ((-30.0, 3, 0.0), (30.0, 1, 1.0)):  # never / always ends
        with torch.no_grad():
            heads.termination_out.weight.zero_()
            heads.termination_out.bias.fill_(bias)
        res = imagined_returns(loaded, runs, **common)
        for label in ("random", "a", "a_again"):
            got = res["policies"][label]
            assert got["return"]["mean"] == pytest.approx(steps * paid, rel=1e-4), (label, bias)
            assert got["positive"] == pytest.approx(steps * paid, rel=1e-4) and got["negative"] == 0
            assert got["endings"] == endings
    # same checkpoint, same seeds: the same actions in the same worlds
    assert res["policies"]["a"] == {**res["policies"]["a_again"], "checkpoint": str(runs["a"])}
    assert res["policies"]["a"]["name"] == "imagination" and res["policies"]["a"]["update"] == 1
    write_rank(res, tmp_path / "rank")
    assert (tmp_path / "rank" / "rank.json").is_file() and (tmp_path / "rank" / "rank.png").is_file()
    pix = TrainConfig(updates=1, horizon=2, log_every=1, ckpt_every=1, progress=False)
    train_in_imagination(bundle, tmp_path / "p", options=FAST.replace(obs_type="pixels"), num_envs=2, train=pix,
                         network=net)
    with pytest.raises(ValueError, match="the agent sees pixels"):
        imagined_returns(loaded, {"p": tmp_path / "p"}, **common)
    with pytest.raises(ValueError, match="reserved"):
        imagined_returns(loaded, {"random": tmp_path / "a"}, **common)


def test_agent_rank_command_writes_json_and_plot(bundle, tmp_path):
    from agents.commands import agent
    from worldsim.config import ConfigError, compose

    net = {"channels": (8,), "hidden": 16}
    train = TrainConfig(updates=1, horizon=2, log_every=1, ckpt_every=1, progress=False)
    train_in_imagination(bundle, tmp_path / "a", options=FAST, num_envs=2, train=train, network=net)
    base = [
        "mode=rank",
        f"bundle={bundle}",
        f"out={tmp_path / 'rank'}",
        "world.action_type=latent",
        "world.sampler_steps=1",
        "rank.num_envs=2",
        "rank.rollouts=2",
        "rank.horizon=2",
    ]
    mine = str(tmp_path / "a")
    res = agent(compose("agent", [*base, f"rank.policies=['{mine}']"]))
    assert set(res["policies"]) == {"random", mine} and res["policies"][mine]["update"] == 1
    assert res["policies"][mine]["return"]["n"] == 2
    saved = json.loads((tmp_path / "rank" / "rank.json").read_text())
    assert saved["policies"][mine]["return"] == res["policies"][mine]["return"]
    assert (tmp_path / "rank" / "rank.png").is_file()
    with pytest.raises(ConfigError, match="nothing: no such checkpoint"):
        agent(compose("agent", [*base, f"rank.policies=['{tmp_path / 'nothing'}']"]))


def test_agent_presets_compose_into_train_configs():
    """Every agent preset composes into a TrainConfig and world options; `medium` is the
    configuration of the best measured imagination agent (docs/agents.md)."""
    from agents.commands import _train_config
    from worldsim.config import compose, group_options, world_options

    assert {"latents", "pixels", "medium"} <= set(group_options("agent"))
    for name in group_options("agent"):
        cfg = compose("agent", [f"agent={name}", "bundle=x"])
        assert _train_config(cfg.agent.train).updates > 0
        assert set(cfg.agent) == {"num_envs", "max_episode_steps", "network", "train"}
        assert not {"network", "train", "num_envs"} & set(cfg)  # nothing spilt to the top level
        assert world_options(cfg).obs_type == ("pixels" if name == "pixels" else "latents")
        assert world_options(cfg).termination == "sample"
    cfg = compose("agent", ["agent=medium", "bundle=x"])
    assert _train_config(cfg.agent.train).lr == 1e-3 and cfg.agent.num_envs == 16
    assert world_options(cfg) == WorldOptions(
        obs_type="latents", action_type="real", sampler_steps=2, context_noise=0.1,
        termination="sample", termination_scale=3.0, precision="bfloat16",
    )
