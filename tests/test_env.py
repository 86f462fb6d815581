"""Gymnasium env and vector env over a tiny untrained world model."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import worldsim.env  # noqa: F401  (registers worldsim/WorldModel-v0)
from worldsim.bundle import load_bundle
from worldsim.env import ENV_ID, WorldModelEnv, WorldModelVectorEnv
from worldsim.testing import untrained_bundle

DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("env") / "w", action_space=DISCRETE3)


@pytest.fixture(scope="module")
def lively(bundle_dir):
    """The bundle with the dynamics' zero-initialised output randomised (samples depend on
    noise and actions). Tests that rely on termination set the head's bias themselves."""
    b = load_bundle(bundle_dir)
    torch.manual_seed(2)
    for p in b.dynamics.final.parameters():
        p.data.normal_(0, 0.2)
    return b


def _vec(bundle, n, **kw):
    return gym.make_vec(
        ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", bundle=bundle, **kw
    )


@pytest.mark.parametrize("obs_type", ["pixels", "latents"])
def test_check_env_passes(bundle_dir, obs_type):
    env = gym.make(ENV_ID, bundle=bundle_dir, obs_type=obs_type, render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.render().shape == (32, 32, 3)


def test_spaces_follow_the_action_type(bundle_dir):
    env = WorldModelEnv(bundle_dir, action_type="real", obs_type="latents")
    assert env.action_space == gym.spaces.Discrete(3)
    assert env.observation_space.shape == (4, 8, 8) and env.observation_space.dtype == np.float32
    env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step(2)
    assert isinstance(reward, float) and isinstance(terminated, bool) and "uncertainty" in info
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(3)
    with pytest.raises(ValueError, match="obs_type must be one of"):
        WorldModelEnv(bundle_dir, obs_type="rgb")
    with pytest.raises(ValueError, match="needs bundle=PATH"):
        WorldModelEnv()
    with pytest.raises(ValueError, match=r"reset options \['ctx'\]"):
        env.reset(options={"ctx": 0})


def _run(env, seed, actions):
    obs = [env.reset(seed=seed)[0]]
    for a in actions:
        obs.append(env.step(a)[0])
    return np.stack(obs)


def test_same_seed_same_actions_repeat_exactly(lively):
    env = WorldModelEnv(lively)
    actions = [0, 3, 1, 1, 2]
    a, b, c = _run(env, 7, actions), _run(env, 7, actions), _run(env, 8, actions)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    first = env.reset(seed=3, options={"context": 1})[0]
    assert np.array_equal(first, env.reset(seed=4, options={"context": 1})[0])


def test_vector_env_same_seed_repeats(lively):
    venv = WorldModelVectorEnv(3, lively, max_episode_steps=3)
    actions = [np.array([i % 4, 1, 2]) for i in range(6)]
    a, b = _run(venv, 11, actions), _run(venv, 11, actions)
    assert a.shape == (7, 3, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, _run(venv, 12, actions))


def test_vector_env_autoresets_on_the_next_step(lively):
    saved = {k: v.clone() for k, v in lively.heads.termination_out.state_dict().items()}
    try:
        # A termination head that never fires: episodes end by truncation alone.
        lively.heads.termination_out.weight.data.zero_()
        lively.heads.termination_out.bias.data.fill_(-10.0)
        venv = WorldModelVectorEnv(2, lively, max_episode_steps=2, obs_type="latents")
        assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        venv.reset(seed=0)
        flags = [venv.step(np.array([0, 1]))[3].tolist() for _ in range(3)]
        assert flags == [[False, False], [True, True], [False, False]]
        assert venv.sim.steps_taken.tolist() == [0, 0]  # the third step was the reset
        # A termination head that always fires: terminated now, reward 0 and a fresh start next.
        lively.heads.termination_out.bias.data.fill_(10.0)
        venv = WorldModelVectorEnv(2, lively, return_torch=True)
        venv.reset(seed=0, options={"context": [0, 1]})
        obs, reward, term, trunc, info = venv.step(torch.tensor([0, 1]))
        assert term.tolist() == [True, True] and isinstance(obs, torch.Tensor)
        obs, reward, term, trunc, info = venv.step(torch.tensor([2, 3]))
        assert term.tolist() == [False, False] and torch.equal(reward, torch.zeros(2))
        assert info["uncertainty"].shape == (2,) and info["_uncertainty"].all()
    finally:
        lively.heads.termination_out.load_state_dict(saved)


def test_partial_reset_and_render(lively):
    venv = WorldModelVectorEnv(2, lively, render_mode="rgb_array")
    venv.reset(seed=0)
    venv.step(np.array([1, 1]))
    venv.reset(options={"reset_mask": np.array([False, True]), "context": 0})
    assert venv.sim.steps_taken.tolist() == [1, 0]
    frames = venv.render()
    assert len(frames) == 2 and frames[0].shape == (32, 32, 3)


def test_standard_wrappers_train_loop(bundle_dir):
    env = gym.wrappers.RecordEpisodeStatistics(
        gym.make(
            ENV_ID, bundle=bundle_dir, obs_type="latents", max_episode_steps=25, sampler_steps=1
        )
    )
    env.action_space.seed(0)
    env.reset(seed=0)
    episodes, length = 0, 0
    for _ in range(300):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        length += 1
        if term or trunc:
            episodes += 1
            assert info["episode"]["l"] == length  # the wrapper counts what the env did
            assert length == 25 if trunc and not term else length <= 25
            env.reset()
            length = 0
    assert episodes >= 12
    venv = gym.wrappers.vector.RecordEpisodeStatistics(
        _vec(bundle_dir, 4, obs_type="latents", max_episode_steps=20, sampler_steps=1)
    )
    venv.action_space.seed(0)
    venv.reset(seed=0)
    finished = 0
    for _ in range(80):
        _, _, _, _, info = venv.step(venv.action_space.sample())
        if "episode" in info:
            finished += int(info["_episode"].sum())
            assert (info["episode"]["l"][info["_episode"]] == 20).all()
    assert finished == 12  # episodes end at steps 20, 41, 62 (one step lost to each reset)


def test_make_from_a_fresh_process(bundle_dir):
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('worldsim.env:{ENV_ID}', bundle=r'{bundle_dir}')\n"
        "obs, _ = env.reset(seed=0)\n"
        "import worldsim.env\n"
        f"v = gym.make_vec('{ENV_ID}', num_envs=2, vectorization_mode='vector_entry_point', "
        f"bundle=r'{bundle_dir}')\n"
        "print(obs.shape, v.reset(seed=0)[0].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(32, 32, 3) (2, 32, 32, 3)" in out.stdout


def test_envs_run_the_world_model_in_the_requested_precision(lively):
    ref = WorldModelVectorEnv(4, lively, obs_type="latents", return_torch=True)
    half = WorldModelVectorEnv(4, lively, obs_type="latents", precision="bfloat16", return_torch=True)
    assert next(half.sim.dynamics.parameters()).dtype == torch.bfloat16
    assert next(ref.sim.dynamics.parameters()).dtype == torch.float32
    obs_ref, obs_half = ref.reset(seed=3)[0], half.reset(seed=3)[0]
    # the agent still sees float32 observations; the same start context encodes to nearly the
    # same latents (bf16 keeps ~3 significant digits)
    assert obs_half.dtype == torch.float32 and obs_half.shape == obs_ref.shape
    assert torch.allclose(obs_half, obs_ref, atol=0.1 * obs_ref.abs().max().item())
    obs, reward, term, trunc, _ = half.step(np.zeros(4, dtype=np.int64))
    assert obs.dtype == torch.float32 and torch.isfinite(obs).all() and reward.shape == (4,)
    with pytest.raises(ValueError, match="precision must be one of"):
        WorldModelEnv(lively, precision="fp8")


def test_envs_pass_the_termination_mode_to_the_simulator(lively):
    saved = {k: v.clone() for k, v in lively.heads.termination_out.state_dict().items()}
    try:  # p = sigmoid(0) = 0.5 everywhere: a threshold (p > 0.5) never ends, a draw often does
        lively.heads.termination_out.weight.data.zero_()
        lively.heads.termination_out.bias.data.zero_()
        ended = {}
        for mode in ("threshold", "sample"):
            venv = WorldModelVectorEnv(64, lively, obs_type="latents", termination=mode)
            assert venv.sim.options.termination == mode
            venv.reset(seed=0)
            ended[mode] = venv.step(np.zeros(64, dtype=np.int64))[2].mean()
        assert ended["threshold"] == 0 and 0.3 < ended["sample"] < 0.7
        assert WorldModelEnv(lively, termination="sample").sim.options.termination == "sample"
        # termination_scale multiplies p first (capped at 1): 0.75 passes the threshold, 1.0
        # ends every sampled world, 0.1 ends few.
        for mode, scale, low, high in (("threshold", 1.5, 1, 1), ("sample", 2.0, 1, 1), ("sample", 0.2, 0, 0.3)):
            venv = WorldModelVectorEnv(64, lively, obs_type="latents", termination=mode, termination_scale=scale)
            venv.reset(seed=0)
            assert low <= venv.step(np.zeros(64, dtype=np.int64))[2].mean() <= high, (mode, scale)
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="termination_scale"):
                WorldModelEnv(lively, termination_scale=bad)
    finally:
        lively.heads.termination_out.load_state_dict(saved)


def test_actions_outside_the_space_are_refused_not_cast(bundle_dir):
    env = WorldModelEnv(bundle_dir, action_type="real", obs_type="latents")
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        env.step(1)
    env.reset(seed=0)
    for bad, error in [(1.7, ValueError), (1.0, ValueError), (-1, ValueError), ([1], ValueError),
                       ("a", TypeError), (None, TypeError)]:
        with pytest.raises(error, match=r"not in the action space Discrete\(3\)"):
            env.step(bad)
    for good in (1, np.int64(2), np.array(0), torch.tensor(1)):
        env.step(good)


def test_vector_env_refuses_step_before_reset_and_bad_action_batches(bundle_dir):
    envs = WorldModelVectorEnv(2, bundle_dir, action_type="real", obs_type="latents")
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        envs.step(np.array([0, 1]))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"dtype torch.float64 .* expected integers of shape \[2\]"):
        envs.step(np.array([0.5, 1.7]))
    with pytest.raises(ValueError, match=r"shape \[3\] .* expected integers of shape \[2\]"):
        envs.step(np.array([0, 1, 2]))
    envs.step(np.array([0, 2]))
