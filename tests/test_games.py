"""The built-in games: gymnasium conformance, determinism, visible actions, rewards, sizes."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.canvas import NearestResize, paste, render_tilemap
from envs.paddle import PaddleEnv
from envs.scroller import COIN, FLOOR, GOAL, HAZARD, TILE, WALL

GAMES = envs.BUILTIN_GAMES


def rollout(env_id: str, seed: int, steps: int = 120, **kwargs):
    """Frames and rewards of a fixed action sequence (resetting with seed+k on episode end)."""
    env = gym.make(env_id, **kwargs)
    actions = np.random.default_rng(123).integers(env.action_space.n, size=steps)
    obs, _ = env.reset(seed=seed)
    frames, rewards, k = [obs], [], 0
    for a in actions:
        obs, r, term, trunc, _ = env.step(int(a))
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            k += 1
            obs, _ = env.reset(seed=seed + 1000 * k)
            frames.append(obs)
    env.close()
    return np.stack(frames), np.array(rewards)


def test_builtin_games_registered_and_default_first():
    assert GAMES[0] == "worldsim/Scroller-v0"
    assert len(GAMES) >= 2
    for env_id in GAMES:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is not None and spec.max_episode_steps > 0


@pytest.mark.parametrize("env_id", GAMES)
def test_check_env_clean(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        check_env(env)  # through the registered wrappers too (time limit, order enforcing)
    assert env.metadata["render_modes"] == ["rgb_array"]
    assert env.metadata["render_fps"] > 0


@pytest.mark.parametrize("env_id", GAMES)
def test_same_seed_same_rollout_different_seed_different_level(env_id):
    frames_a, rewards_a = rollout(env_id, seed=7)
    frames_b, rewards_b = rollout(env_id, seed=7)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    firsts = {gym.make(env_id).reset(seed=s)[0].tobytes() for s in range(5)}
    assert len(firsts) == 5, "different seeds must give different levels"


@pytest.mark.parametrize("env_id", GAMES)
@pytest.mark.parametrize("size", [32, 64, 96, 128])
def test_observation_size_dtype_and_nearest_resize(env_id, size):
    env = gym.make(env_id, size=size)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (size, size, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    base = gym.make(env_id).reset(seed=3)[0]
    if size == 128:  # integer upscale: exact 2x2 blocks of the base frame
        np.testing.assert_array_equal(obs, base.repeat(2, 0).repeat(2, 1))
    # Nearest neighbour never invents colours.
    colours = {tuple(c) for c in base.reshape(-1, 3)}
    assert {tuple(c) for c in obs.reshape(-1, 3)} <= colours


@pytest.mark.parametrize("env_id", GAMES)
def test_every_action_visibly_changes_the_next_frame(env_id):
    env = gym.make(env_id)
    n = env.action_space.n
    nexts = []
    for a in range(n):
        first, _ = env.reset(seed=11)
        obs, *_ = env.step(a)
        nexts.append(obs)
        if a != 0:
            assert (obs != first).any(axis=-1).sum() >= 8, f"action {a} barely changes the frame"
    for a in range(n):
        for b in range(a + 1, n):
            assert (nexts[a] != nexts[b]).any(), f"actions {a} and {b} give the same next frame"


@pytest.mark.parametrize("env_id", GAMES)
def test_random_policy_sees_rewards_and_termination(env_id):
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    rewards, ends, positive = 0, 0, 0
    env.reset(seed=0)
    for _ in range(3000):
        _, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        rewards += r != 0
        positive += r > 0
        if term:
            ends += 1
        if term or trunc:
            env.reset()
    assert positive >= 5 and rewards >= 5
    assert ends >= 2


def test_scroller_camera_follows_and_walls_block():
    env = gym.make("worldsim/Scroller-v0").unwrapped
    env.reset(seed=4)
    x0, y0 = env.agent_pos
    env.step(4)  # RIGHT, the 3x3 tiles around the start are always free
    assert env.agent_pos == (x0 + 4, y0)
    env.step(1)
    assert env.agent_pos == (x0 + 4, y0 - 4)
    # Walk left until a wall stops the agent; the position then stays put.
    for _ in range(200):
        before = env.agent_pos
        _, _, term, _, _ = env.step(3)
        if term or env.agent_pos == before:
            break
    if not term:
        x, y = env.agent_pos
        r0, r1, c = y // TILE, (y + TILE - 1) // TILE, (x - 1) // TILE
        assert WALL in (env.grid[r0, c], env.grid[r1, c])


def test_scroller_levels_are_solvable_and_state_is_exposed():
    env = gym.make("worldsim/Scroller-v0").unwrapped
    for seed in range(30):
        env.reset(seed=seed)
        dist = env._reachable(env.grid, env.start_tile)
        assert dist[env.goal_tile] > 0
        assert env.grid[env.goal_tile] == GOAL
        assert env.grid[env.start_tile] == FLOOR
        assert (env.grid == COIN).sum() == env.coins_left > 0
        assert (env.grid == HAZARD).sum() > 0
        assert env.goal_pos == (env.goal_tile[1] * TILE, env.goal_tile[0] * TILE)


def test_scroller_coin_pickup_updates_level_image():
    env = gym.make("worldsim/Scroller-v0").unwrapped
    env.reset(seed=0)
    # Put a coin right of the start and step onto it.
    r, c = env.start_tile
    env.grid[r, c + 1] = COIN
    env._level[r * TILE : (r + 1) * TILE, (c + 1) * TILE : (c + 2) * TILE] = env._tiles[2 * COIN]
    coins = env.coins_left
    rewards = [env.step(4)[1] for _ in range(2)]
    assert sum(rewards) == 1.0 and env.coins_left == coins - 1
    assert env.grid[r, c + 1] == FLOOR


def test_paddle_state_and_ball_loss_terminates():
    env = gym.make("worldsim/Paddle-v0").unwrapped
    env.reset(seed=1)
    px = env.paddle_x
    env.step(1)
    assert env.paddle_x == px - 4
    env.step(2)
    env.step(2)
    assert env.paddle_x == px + 4
    # Park the paddle in a corner; the ball is eventually lost and the episode terminates.
    for _ in range(500):
        _, r, term, _, _ = env.step(1)
        if term:
            break
    assert term and r <= -1.0 + env.values.max() * 2
    assert env.bricks.sum() < env.bricks.size


def test_paddle_lives_reserve_the_ball():
    env = gym.make("worldsim/Paddle-v0", lives=3).unwrapped
    env.reset(seed=2)
    losses = 0
    for _ in range(2000):
        _, r, term, _, _ = env.step(1)
        losses += r < 0
        if term:
            break
    assert term and losses == 3 and env.lives == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="level_tiles"):
        gym.make("worldsim/Scroller-v0", level_tiles=4)
    with pytest.raises(ValueError, match="render_mode"):
        PaddleEnv(render_mode="human")
    with pytest.raises(ValueError, match="size"):
        gym.make("worldsim/Paddle-v0", size=3)
    env = gym.make("worldsim/Scroller-v0").unwrapped
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)


def test_canvas_helpers():
    tiles = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 100, 200)])
    img = render_tilemap(np.array([[0, 1], [2, 0]]), tiles)
    assert img.shape == (4, 4, 3) and img[0, 2, 0] == 100 and img[2, 0, 0] == 200
    canvas = np.zeros((4, 4, 3), np.uint8)
    paste(canvas, np.full((2, 2, 3), 9, np.uint8), np.array([[0, 1], [1, 1]], bool), 3, -1)
    assert canvas[3, 0, 0] == 9 and canvas.sum() == 9 * 3  # clipped to one pixel
    small = NearestResize(64, 32)(np.arange(64 * 64 * 3, dtype=np.int64).reshape(64, 64, 3))
    assert small.shape == (32, 32, 3)


def test_scroller_every_action_shows_in_the_next_frame():
    """A move always changes the frame (the legs stride; a push into a wall shakes the camera, on
    one push and back on the next, so it changes the frame as a whole), and the eyes look the
    way the agent pushed."""
    env = gym.make("worldsim/Scroller-v0", num_enemies=0).unwrapped
    obs, _ = env.reset(seed=4)
    for _ in range(200):  # walk left into the wall
        before = env.agent_pos
        obs, _, term, _, _ = env.step(3)
        assert not term
        if env.agent_pos == before:
            break
    assert env.agent_pos == before, "the agent never reached a wall"
    for action in (3, 3, 3):  # repeated blocked pushes still change much of the frame
        nxt, *_ = env.step(action)
        assert env.agent_pos == before
        assert (nxt != obs).any(-1).mean() > 0.15
        obs = nxt
    still, *_ = env.step(0)
    again, *_ = env.step(0)
    assert (still != obs).any() and (again == still).all()  # NOOP rests: nothing moves
    # Each action gives a different agent sprite in the same place.
    looks = set()
    for action in range(5):
        env._facing, env._stride = action, 1 if action else 0
        looks.add(env._observe().tobytes())
    assert len(looks) == 5
