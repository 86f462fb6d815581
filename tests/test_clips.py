"""ClipDataset: determinism, frame skip, resizing, windows, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from worldsim.data import ClipDataset, Episode, EpisodeStore


def counting_episode(
    t: int, offset: int, *, h: int = 8, w: int = 8, rewards: bool = True
) -> Episode:
    """Frame ``i`` is filled with ``offset + i``; action ``i`` is ``offset + i``; reward ``i`` too."""
    values = (offset + np.arange(t)) % 256
    frames = np.broadcast_to(values[:, None, None, None], (t, h, w, 3)).astype(np.uint8)
    steps = offset + np.arange(t - 1)
    return Episode(
        frames,
        actions=steps,
        rewards=steps.astype(np.float32) if rewards else None,
        terminated=steps == offset + t - 2,
        metadata={"fps": 10},
    )


@pytest.fixture()
def store(tmp_path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "store", chunk_len=4)
    for t, offset in [(20, 0), (5, 100), (40, 150)]:
        store.append(counting_episode(t, offset))
    return store


def test_items_are_a_pure_function_of_seed_and_index(store) -> None:
    a, b = ClipDataset(store, 6, seed=3), ClipDataset(store, 6, seed=3)
    other = ClipDataset(store, 6, seed=4)
    assert len(a) == (20 - 5) + (5 - 5) + (40 - 5)  # valid windows: T - clip_len + 1
    for i in (0, 7, len(a) - 1):
        x, y = a[i], b[i]
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
    picks = [a.locate(i) for i in range(len(a))]
    assert picks != [other.locate(i) for i in range(len(a))]
    assert {e for e, _ in picks} <= {0, 1, 2}


def test_windows_are_drawn_in_proportion_to_their_number(store) -> None:
    ds = ClipDataset(store, 6, length=4000)
    episodes = np.array([ds.locate(i)[0] for i in range(len(ds))])
    assert 1 not in episodes  # the 5-frame episode holds no 6-frame window
    share = (episodes == 2).mean()  # 36 of 52 windows
    assert abs(share - 36 / 52) < 0.04


def test_clip_contents_follow_the_transition_convention(store) -> None:
    ds = ClipDataset(store, 5, frame_skip=3, seed=1)
    assert ds.window == 13
    for i in range(10):
        item = ds[i]
        first = int(item["frames"][0, 0, 0, 0])
        offset = {0: 0, 2: 150}[item["episode"]]
        assert first == offset + item["start"]
        # kept frames are every third frame
        np.testing.assert_array_equal(item["frames"][:, 0, 0, 0].numpy(), first + 3 * np.arange(5))
        # action of clip transition j is the first real action of its 3: frame index start+3j
        np.testing.assert_array_equal(item["actions"].numpy(), first + 3 * np.arange(4))
        # reward is the sum of the 3 real rewards
        expected = np.array([sum(first + 3 * j + r for r in range(3)) for j in range(4)])
        np.testing.assert_allclose(item["rewards"].numpy(), expected)
        assert item["frames"].shape == (5, 8, 8, 3) and item["frames"].dtype == torch.uint8
        assert item["actions"].dtype == torch.int64 and item["terminated"].dtype == torch.bool
        assert "truncated" not in item  # absent in the data -> absent in the item


def test_terminated_is_any_over_skipped_steps(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    store.append(counting_episode(7, 0))  # terminated only on the last real step (index 5)
    item = ClipDataset(store, 3, frame_skip=3)[0]
    assert item["start"] == 0
    assert item["terminated"].tolist() == [False, True]


def test_resize_shapes_and_area_downscale(store) -> None:
    down = ClipDataset(store, 4, frame_skip=2, resize=(4, 2))[0]
    assert down["frames"].shape == (4, 4, 2, 3)
    full = ClipDataset(store, 4, frame_skip=2)[0]
    # constant frames stay constant under area averaging
    assert torch.equal(down["frames"][:, 0, 0], full["frames"][:, 0, 0])
    up = ClipDataset(store, 4, resize=16)[0]
    assert up["frames"].shape == (4, 16, 16, 3)


def test_missing_arrays_are_absent_and_with_actions_false(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    store.append(counting_episode(10, 0, rewards=False))
    item = ClipDataset(store, 3)[0]
    assert set(item) == {"frames", "actions", "terminated", "episode", "start"}
    assert "actions" not in ClipDataset(store, 3, with_actions=False)[0]


def test_too_short_episodes_give_a_clear_error(store) -> None:
    with pytest.raises(ValueError, match="longest has 40 frames.*frame_skip 4 needs 45"):
        ClipDataset(store, 12, frame_skip=4)
    with pytest.raises(ValueError, match="clip_len must be >= 1"):
        ClipDataset(store, 0)
    with pytest.raises(IndexError, match=r"out of range \[0, 3\)"):
        ClipDataset(store, 2, length=3)[3]


def test_reads_only_the_window(store, monkeypatch) -> None:
    calls = []
    original = EpisodeStore.read_frames

    def spy(self, i, start=0, stop=None):
        calls.append((i, start, stop))
        return original(self, i, start, stop)

    monkeypatch.setattr(EpisodeStore, "read_frames", spy)
    item = ClipDataset(store, 4, frame_skip=2)[5]
    assert calls == [(item["episode"], item["start"], item["start"] + 7)]


def test_dataloader_workers_match_single_process(store) -> None:
    ds = ClipDataset(store, 4, frame_skip=2, resize=(6, 6), seed=11, length=24)
    single = list(DataLoader(ds, batch_size=4, num_workers=0))
    multi = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(single) == len(multi) == 6
    for x, y in zip(single, multi):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert single[0]["frames"].shape == (4, 4, 6, 6, 3)
    assert single[0]["actions"].shape == (4, 3)


def test_episode_selection_restricts_sampling(store) -> None:
    val = ClipDataset(store, 4, episodes=[0, 1])
    assert len(val) == 20 - 3 + 5 - 3
    assert {val.locate(i)[0] for i in range(len(val))} == {0, 1}
    train = ClipDataset(store, 4, episodes=[-1])
    assert {train[i]["episode"] for i in range(10)} == {2}
    with pytest.raises(IndexError, match=r"episodes \[3\] out of range .* with 3 episodes"):
        ClipDataset(store, 4, episodes=[0, 3])
