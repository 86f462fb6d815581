"""make_env: built-in games, ALE, render-based gymnasium envs, resizing, frame skip, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from envs import BUILTIN_GAMES, make_env
from envs.adapters import FrameSkip, resize_area


@pytest.mark.parametrize("size", [64, 84])
def test_ale_breakout_rgb_size_and_frame_skip(size):
    env = make_env("ALE/Breakout-v5", size=size, frame_skip=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (size, size, 3) and obs.dtype == np.uint8
    assert env.observation_space.shape == (size, size, 3)
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # default kept
    for k in range(1, 4):
        obs, *_ = env.step(1)
        assert ale.getEpisodeFrameNumber() == 4 * k  # ALE's own frame skip from the argument
    assert obs.shape == (size, size, 3) and obs.std() > 0  # a real picture, not blank
    env.close()
    env = make_env("ALE/Breakout-v5", frame_skip=1)
    env.reset(seed=0)
    env.step(0)
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 1
    env.close()


def test_ale_rejects_overridden_obs_type():
    with pytest.raises(ValueError, match="obs_type"):
        make_env("ALE/Breakout-v5", obs_type="grayscale")


@pytest.mark.parametrize("env_id", BUILTIN_GAMES)
def test_builtin_games_are_built_at_size(env_id):
    env = make_env(env_id, size=48)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8


def test_frame_skip_repeats_action_and_sums_rewards():
    skip = make_env("worldsim/Paddle-v0", frame_skip=3)
    single = make_env("worldsim/Paddle-v0")
    skip.reset(seed=5)
    single.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = int(rng.integers(3))
        obs, reward, term, trunc, _ = skip.step(a)
        total = 0.0
        for _ in range(3):
            obs1, r1, term1, trunc1, _ = single.step(a)
            total += r1
            if term1 or trunc1:
                break
        np.testing.assert_array_equal(obs, obs1)
        assert reward == total and term == term1
        if term or trunc:
            break
    assert term, "the skipped episode should end within 600 frames of random play"


def test_frame_skip_rejects_bad_values():
    with pytest.raises(ValueError, match="frame_skip"):
        make_env("worldsim/Paddle-v0", frame_skip=0)
    with pytest.raises(ValueError, match="frame_skip"):
        FrameSkip(make_env("worldsim/Paddle-v0"), 0)


def test_non_image_gym_env_is_rendered():
    env = make_env("CartPole-v1", size=32, frame_skip=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    obs2, reward, *_ = env.step(0)
    assert reward == 2.0  # CartPole gives +1 per frame: two frames
    assert env.observation_space.contains(obs2)
    for _ in range(3):
        obs2, _, term, _, _ = env.step(0)
        assert not term
    assert (obs2 != obs).any()  # the pole falls and the cart moves in the rendered frames


def test_unknown_id_is_a_clear_error():
    with pytest.raises(ValueError, match="NoSuchGame-v0"):
        make_env("NoSuchGame-v0")
    with pytest.raises(ValueError, match="crafter variants"):
        make_env("crafter:hard")
    with pytest.raises(ValueError, match="size"):
        make_env("worldsim/Paddle-v0", size=2)


@pytest.mark.parametrize(
    ("env_id", "module", "extra"),
    [("procgen:procgen-coinrun-v0", "procgen", "procgen"), ("crafter", "crafter", "crafter")],
)
def test_optional_games_hint_or_work(env_id, module, extra):
    if importlib.util.find_spec(module) is None:
        with pytest.raises(ModuleNotFoundError, match=rf"worldsim\[{extra}\]"):
            make_env(env_id)
    else:
        env = make_env(env_id, size=64)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        obs, *_ = env.step(0)
        assert obs.shape == (64, 64, 3)


def test_resize_area_block_means_and_box_filter():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:2, :2] = 200
    frame[0, 0] = 0  # block mean of [0, 200, 200, 200] = 150
    out = resize_area(frame, 2)
    assert out.shape == (2, 2, 3) and out[0, 0, 0] == 150 and out[1, 1, 0] == 0
    flat = np.full((210, 160, 3), 77, np.uint8)
    assert (resize_area(flat, 64) == 77).all()  # area averaging keeps flat colours
    assert resize_area(flat, 84).shape == (84, 84, 3)
    same = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert resize_area(same, 64) is same
