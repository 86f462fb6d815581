"""The recorder: episodes written, per-episode reproducibility, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the games)
from envs.record import episode_seed, record
from worldsim.data import EpisodeStore


def by_index(store: EpisodeStore) -> dict[int, object]:
    return {store.metadata(i)["episode_index"]: store[i] for i in range(len(store))}


def assert_same_episodes(a: EpisodeStore, b: EpisodeStore) -> None:
    ea, eb = by_index(a), by_index(b)
    assert sorted(ea) == sorted(eb)
    for k in ea:
        np.testing.assert_array_equal(ea[k].frames, eb[k].frames)
        np.testing.assert_array_equal(ea[k].actions, eb[k].actions)
        np.testing.assert_array_equal(ea[k].rewards, eb[k].rewards)
        np.testing.assert_array_equal(ea[k].terminated, eb[k].terminated)
        np.testing.assert_array_equal(ea[k].truncated, eb[k].truncated)


def test_record_writes_n_episodes_with_metadata(tmp_path):
    summary = record(
        "worldsim/Paddle-v0", 5, tmp_path / "s", num_envs=2, max_steps=20, progress=False
    )
    store = EpisodeStore(tmp_path / "s")
    assert len(store) == 5 and summary["episodes_written"] == 5
    assert summary["frames_written"] == store.total_frames > 0
    assert summary["frames_per_second"] > 0
    assert sorted(store.metadata(i)["episode_index"] for i in range(5)) == [0, 1, 2, 3, 4]
    for i in range(5):
        ep = store[i]
        meta = ep.metadata
        assert meta["source"] == "worldsim/Paddle-v0" and meta["fps"] == 15.0
        assert meta["action_space"] == {
            "type": "discrete",
            "n": 3,
            "meanings": ["NOOP", "LEFT", "RIGHT"],
        }
        assert meta["policy"] == "random" and meta["size"] == 64 and meta["seed"] == 0
        assert ep.frames.shape[1:] == (64, 64, 3) and 2 <= len(ep) <= 21
        assert ep.actions.dtype == np.int64 and len(ep.actions) == len(ep) - 1
        assert ep.terminated[-1] or ep.truncated[-1]
        assert not (ep.terminated[:-1].any() or ep.truncated[:-1].any())
        # The first frame is the reset observation of the episode's derived seed.
        first, _ = gym.make("worldsim/Paddle-v0").reset(seed=episode_seed(0, meta["episode_index"]))
        np.testing.assert_array_equal(ep.frames[0], first)
    # Replaying the stored actions in the real game reproduces the stored frames and rewards.
    ep = store[0]
    env = gym.make("worldsim/Paddle-v0")
    env.reset(seed=ep.metadata["episode_seed"])
    for t, a in enumerate(ep.actions):
        obs, r, *_ = env.step(int(a))
        np.testing.assert_array_equal(obs, ep.frames[t + 1])
        assert r == ep.rewards[t]


def test_episodes_do_not_depend_on_num_envs(tmp_path):
    record(
        "worldsim/Scroller-v0",
        4,
        tmp_path / "a",
        policy="sticky",
        num_envs=1,
        max_steps=40,
        progress=False,
    )
    record(
        "worldsim/Scroller-v0",
        4,
        tmp_path / "b",
        policy="sticky",
        num_envs=3,
        max_steps=40,
        progress=False,
    )
    assert_same_episodes(EpisodeStore(tmp_path / "a"), EpisodeStore(tmp_path / "b"))
    ep = EpisodeStore(tmp_path / "a")[0]
    runs = np.count_nonzero(np.diff(ep.actions)) + 1
    assert runs < len(ep.actions) * 0.5, "sticky actions should come in runs"


def test_resume_rejects_other_arguments(tmp_path):
    record("worldsim/Paddle-v0", 1, tmp_path, max_steps=5, progress=False)
    with pytest.raises(ValueError, match="seed"):
        record("worldsim/Paddle-v0", 2, tmp_path, max_steps=5, seed=1, progress=False)
    with pytest.raises(ValueError, match="policy"):
        record("worldsim/Paddle-v0", 1, tmp_path, policy="greedy", progress=False)


def test_policy_error_keeps_finished_episodes(tmp_path):
    ticks = []

    def flaky(obs, rng):
        ticks.append(1)
        if len(ticks) > 60:
            raise KeyboardInterrupt("stop")
        return rng.integers(3, size=len(obs))

    with pytest.raises(KeyboardInterrupt):
        record(
            "worldsim/Paddle-v0",
            50,
            tmp_path,
            policy=flaky,
            num_envs=2,
            max_steps=10,
            progress=False,
        )
    store = EpisodeStore(tmp_path)
    assert 6 <= len(store) <= 12  # every finished episode of the 60 ticks is there
    assert all(len(ep) >= 2 for ep in store)


@pytest.mark.filterwarnings("ignore:.*(leftover temporary|rebuilding it):UserWarning")
def test_kill_minus_9_then_resume_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = dict(policy="sticky", num_envs=2, seed=3, max_steps=60)
    code = (
        "from envs.record import record\n"
        f"record('worldsim/Scroller-v0', 100000, {str(killed)!r}, progress=False, **{args!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if len(list(killed.glob("shard_*.npz"))) >= 3:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the recorder wrote no episodes within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = EpisodeStore(killed)  # opens cleanly after kill -9: index rebuilt if stale
    landed = sorted(store.metadata(i)["episode_index"] for i in range(len(store)))
    assert len(landed) >= 3
    target = max(landed) + 4
    summary = record("worldsim/Scroller-v0", target, killed, progress=False, **args)
    assert summary["episodes_written"] == target - len(landed)
    record("worldsim/Scroller-v0", target, clean, progress=False, **{**args, "num_envs": 3})
    resumed = EpisodeStore(killed)
    assert len(resumed) == target
    assert_same_episodes(resumed, EpisodeStore(clean))
    # A further run with the same target has nothing left to do.
    assert (
        record("worldsim/Scroller-v0", target, killed, progress=False, **args)["episodes_written"]
        == 0
    )


def test_a_truncated_shard_is_moved_aside_and_its_episode_recorded_again(tmp_path):
    args = dict(policy="sticky", num_envs=2, seed=1, size=16, max_steps=8, progress=False)
    record("worldsim/Scroller-v0", 4, tmp_path / "a", **args)
    record("worldsim/Scroller-v0", 4, tmp_path / "clean", **args)
    shard = tmp_path / "a" / "shard_000002.npz"
    lost = EpisodeStore(tmp_path / "a", create=False).metadata(2)["episode_index"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"shard_000002.npz: corrupt shard .*moved aside"):
        summary = record("worldsim/Scroller-v0", 4, tmp_path / "a", **args)
    assert summary["episodes_written"] == 1
    assert (tmp_path / "a" / "shard_000002.npz.bad").stat().st_size == 100
    resumed = EpisodeStore(tmp_path / "a", create=False)
    assert resumed.metadata(3)["episode_index"] == lost
    assert_same_episodes(resumed, EpisodeStore(tmp_path / "clean", create=False))


def test_unknown_game_leaves_no_folder_behind(tmp_path):
    from envs.adapters import GameError

    with pytest.raises(GameError, match="'Nope/NotAGame-v0'"):
        record("Nope/NotAGame-v0", 2, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
