"""Episodes, atomic writes, the shard format and the episode store (incl. crash recovery)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from worldsim.data import (
    ArrayStore,
    Episode,
    EpisodeStore,
    ShardError,
    ShardReader,
    atomic_path,
    atomic_write_json,
    frames_to_tensor,
    tensor_to_frames,
    write_shard,
)
from worldsim.data.atomic import is_temp_file


def make_episode(
    t: int = 40, h: int = 6, w: int = 5, *, kind: str = "discrete", seed: int = 0
) -> Episode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    if kind == "none":
        return Episode(frames, metadata={"source": "video.mp4", "fps": 30})
    actions = rng.integers(0, 5, t - 1) if kind == "discrete" else rng.normal(size=(t - 1, 2))
    space = {"type": "discrete", "n": 5} if kind == "discrete" else {"type": "box", "shape": [2]}
    return Episode(
        frames,
        actions=actions,
        rewards=rng.normal(size=t - 1),
        terminated=np.arange(t - 1) == t - 2,
        truncated=np.zeros(t - 1, dtype=bool),
        metadata={"source": f"test/{seed}", "fps": 15, "action_space": space},
    )


def assert_same(a: Episode, b: Episode) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    for name in ("actions", "rewards", "terminated", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y)
    assert a.metadata == b.metadata


# ---------------------------------------------------------------------------- Episode
def test_episode_converts_dtypes_and_reports_length() -> None:
    ep = make_episode(10, kind="continuous")
    assert len(ep) == 10 and ep.num_steps == 9 and ep.frame_shape == (6, 5, 3)
    assert ep.actions.dtype == np.float32 and ep.rewards.dtype == np.float32
    assert make_episode(10).actions.dtype == np.int64
    flags = Episode(ep.frames, terminated=np.array([0, 1] * 4 + [0])).terminated
    assert flags.dtype == np.bool_ and flags.sum() == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": np.zeros((4, 6, 5, 3), np.float32)}, "frames must be uint8"),
        (
            {"frames": np.zeros((4, 6, 5), np.uint8)},
            r"frames must have shape \[T, H, W, 3\], got \(4, 6, 5\)",
        ),
        ({"frames": np.zeros((4, 6, 5, 4), np.uint8)}, r"got \(4, 6, 5, 4\)"),
        (
            {"actions": np.zeros(4, np.int64)},
            r"actions has length 4 but frames has 4 frames, so T-1 = 3",
        ),
        ({"actions": np.zeros(3, np.float32)}, "discrete and must be integers"),
        ({"actions": np.zeros((3, 1, 1))}, r"got shape \(3, 1, 1\)"),
        ({"rewards": np.zeros(2)}, "rewards has length 2"),
        ({"terminated": np.array([0, 2, 0])}, "terminated must be bool"),
        ({"truncated": np.zeros(5, bool)}, "truncated has length 5"),
        ({"metadata": {"x": object()}}, "JSON-serialisable"),
    ],
)
def test_episode_rejects_bad_fields_with_named_errors(kwargs: dict, message: str) -> None:
    args = {"frames": np.zeros((4, 6, 5, 3), np.uint8), **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        Episode(**args)


def test_frame_tensor_conversions_round_trip() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 3, 4, 5) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert float(frames_to_tensor(np.full((1, 1, 3), 255, np.uint8)).min()) == 1.0
    np.testing.assert_array_equal(tensor_to_frames(x), frames)
    np.testing.assert_array_equal(tensor_to_frames(x + 0.001), frames)  # rounding, not flooring
    clamped = tensor_to_frames(torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1).expand(3, 2, 2))
    assert clamped[0, 0].tolist() == [0, 128, 255]
    with pytest.raises(TypeError, match="uint8"):
        frames_to_tensor(np.zeros((2, 2, 3), np.float32))


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_path_replaces_on_success_and_cleans_on_failure(tmp_path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".json" and is_temp_file(tmp) and tmp.parent == target.parent
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}  # untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # temp removed


# ---------------------------------------------------------------------------- shards
def test_shard_reads_windows_across_chunk_borders_for_any_dtype(tmp_path) -> None:
    latents = np.random.default_rng(1).normal(size=(70, 4, 3, 3)).astype(np.float16)
    write_shard(
        tmp_path / "s.npz", {"latents": latents}, {"idx": np.arange(3)}, {"k": "v"}, chunk_len=8
    )
    with ShardReader(tmp_path / "s.npz") as reader:
        assert reader.user_meta == {"k": "v"} and reader.length("latents") == 70
        for start, stop in [(0, 70), (7, 9), (8, 16), (15, 41), (64, 70), (5, 5)]:
            window = reader.read("latents", start, stop)
            assert window.dtype == np.float16
            np.testing.assert_array_equal(window, latents[start:stop])
        np.testing.assert_array_equal(reader.array("idx"), np.arange(3))
        with pytest.raises(IndexError, match=r"window \[60, 71\) outside"):
            reader.read("latents", 60, 71)
        with pytest.raises(ShardError, match="no chunked array 'frames'"):
            reader.read("frames")


# ---------------------------------------------------------------------------- store
@pytest.mark.parametrize("kind", ["discrete", "continuous", "none"])
def test_store_round_trips_episodes(tmp_path, kind: str) -> None:
    store = EpisodeStore(tmp_path / "store")
    episodes = [make_episode(t, kind=kind, seed=t) for t in (40, 33, 2)]
    assert [store.append(ep) for ep in episodes] == [0, 1, 2]
    reopened = EpisodeStore(tmp_path / "store", create=False)
    assert len(reopened) == 3 and reopened.total_frames == 75
    for ep, back in zip(episodes, reopened):
        assert_same(ep, back)
    assert_same(episodes[-1], reopened[-1])
    assert reopened.episode_length(1) == 33
    with pytest.raises(IndexError, match=r"index 3 out of range .* with 3 items \(valid -3..2\)"):
        reopened[3]


def test_read_frames_and_steps_match_full_episode(tmp_path) -> None:
    store = EpisodeStore(tmp_path, chunk_len=8)
    ep = make_episode(50)
    store.append(ep)
    for start, stop in [(0, 50), (6, 10), (8, 16), (7, 33), (49, 50)]:
        np.testing.assert_array_equal(store.read_frames(0, start, stop), ep.frames[start:stop])
    steps = store.read_steps(0, 5, 20)
    assert set(steps) == {"actions", "rewards", "terminated", "truncated"}
    np.testing.assert_array_equal(steps["actions"], ep.actions[5:20])
    with pytest.raises(IndexError, match=r"outside episode frames \[0, 50\)"):
        store.read_frames(0, 45, 51)


def test_store_rejects_mismatched_frame_shape_and_action_layout(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    store.append(make_episode(10, h=6, w=5))
    with pytest.raises(ValueError, match=r"shape \(7, 5, 3\) .* holds \(6, 5, 3\)"):
        store.append(make_episode(10, h=7, w=5))
    with pytest.raises(ValueError, match="'actions' has per-step shape"):
        store.append(make_episode(10, kind="continuous"))
    store.append(make_episode(10, kind="none"))  # action-free episodes may join
    assert len(store) == 2


def test_missing_or_stale_index_is_rebuilt_with_a_warning(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    episodes = [make_episode(12, seed=s) for s in range(3)]
    for ep in episodes:
        store.append(ep)
    (tmp_path / "index.json").unlink()
    with pytest.warns(UserWarning, match="index.json is missing; rebuilding"):
        rebuilt = EpisodeStore(tmp_path)
    assert len(rebuilt) == 3 and rebuilt.metadata(2) == episodes[2].metadata
    (tmp_path / "index.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert len(EpisodeStore(tmp_path)) == 3
    assert_same(EpisodeStore(tmp_path)[1], episodes[1])  # the rebuilt index is valid


def test_simulated_kill_loses_nothing_finished_and_append_continues(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    episodes = [make_episode(12, seed=s) for s in range(3)]
    for ep in episodes[:2]:
        store.append(ep)
    index_before_third = (tmp_path / "index.json").read_text()
    store.append(episodes[2])
    # The kill: the index write after the third shard's rename never happened, and a fourth
    # shard was half written under its temporary name.
    (tmp_path / "index.json").write_text(index_before_third)
    (tmp_path / ".shard_000003.tmp-deadbeef.npz").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.warns(UserWarning) as record:
        store = EpisodeStore(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "temporary" in messages and "lists 2 shards but 3 are on disk" in messages
    assert not any(is_temp_file(p) for p in tmp_path.iterdir())
    assert len(store) == 3
    for ep, back in zip(episodes, store):
        assert_same(ep, back)
    extra = make_episode(9, seed=9)
    assert store.append(extra) == 3
    assert (tmp_path / "shard_000003.npz").exists()
    assert_same(EpisodeStore(tmp_path)[3], extra)


def test_append_numbers_after_the_highest_shard_on_disk(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    for s in range(3):
        store.append(make_episode(5, seed=s))
    (tmp_path / "shard_000001.npz").unlink()  # a gap: never reuse a number
    with pytest.warns(UserWarning, match="rebuilding"):
        store = EpisodeStore(tmp_path)
    store.append(make_episode(5, seed=7))
    assert sorted(p.name for p in tmp_path.glob("shard_*")) == [
        "shard_000000.npz",
        "shard_000002.npz",
        "shard_000003.npz",
    ]
    assert store.metadata(-1)["source"] == "test/7"


def test_corrupt_shard_error_names_the_file(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    store.append(make_episode(40))
    shard = tmp_path / "shard_000000.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)  # damage that keeps the file's size
    shard.write_bytes(bytes(data))
    reopened = EpisodeStore(tmp_path, create=False)
    with pytest.raises(ShardError, match="shard_000000.npz: corrupt shard"):
        reopened[0]
    assert reopened.verify() == {}  # the quick check reads headers only
    assert "CRC" in reopened.verify(full=True)["shard_000000.npz"]


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _store_with_truncated_shard(tmp_path, drop_index: bool):
    store = EpisodeStore(tmp_path)
    episodes = [make_episode(12, seed=s) for s in range(3)]
    for ep in episodes:
        store.append(ep)
    shard = tmp_path / "shard_000001.npz"
    shard.write_bytes(shard.read_bytes()[:300])
    if drop_index:
        (tmp_path / "index.json").unlink()
    return episodes


@pytest.mark.parametrize("drop_index", [True, False])
def test_truncated_shard_is_skipped_read_only_and_quarantined_for_writing(
    tmp_path, drop_index: bool
) -> None:
    episodes = _store_with_truncated_shard(tmp_path, drop_index)
    before = _snapshot(tmp_path)
    with pytest.warns(UserWarning, match=r"shard_000001.npz: corrupt shard .*skipped") as caught:
        reader = EpisodeStore(tmp_path, create=False)
    assert "the other 2 shard(s) are reachable" in " ".join(str(w.message) for w in caught)
    assert _snapshot(tmp_path) == before  # read-only: nothing written, renamed or deleted
    assert len(reader) == 2 and list(reader.bad_shards) == ["shard_000001.npz"]
    assert_same(reader[0], episodes[0]) and assert_same(reader[1], episodes[2])
    with pytest.warns(UserWarning, match=r"moved aside to shard_000001.npz.bad"):
        writer = EpisodeStore(tmp_path)
    assert (tmp_path / "shard_000001.npz.bad").read_bytes() == before["shard_000001.npz"]
    assert [e["file"] for e in json.loads((tmp_path / "index.json").read_text())["shards"]] == [
        "shard_000000.npz",
        "shard_000002.npz",
    ]
    assert writer.append(make_episode(12, seed=9)) == 2
    assert (tmp_path / "shard_000003.npz").exists()  # the quarantined number is not reused
    assert len(EpisodeStore(tmp_path, create=False)) == 3


def test_read_only_open_never_writes(tmp_path) -> None:
    from worldsim.data.store import StoreError

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not a store")
    with pytest.raises(StoreError, match=r"photos is not an episode store: .*no shard_\*\.npz"):
        EpisodeStore(folder, create=False)
    assert _snapshot(folder) == {"holiday.jpg": b"not a store"}

    store = EpisodeStore(tmp_path / "s")
    store.append(make_episode(10))
    (tmp_path / "s" / "index.json").unlink()
    leftover = tmp_path / "s" / ".shard_000001.tmp-0123456789ab.npz"
    leftover.write_bytes(b"a writer's file in progress")
    before = _snapshot(tmp_path / "s")
    with pytest.warns(UserWarning, match="in memory: the store is open read-only"):
        reader = EpisodeStore(tmp_path / "s", create=False)
    assert len(reader) == 1 and _snapshot(tmp_path / "s") == before
    assert reader.verify() == {}
    with pytest.raises(StoreError, match="open read-only"):
        reader.append(make_episode(10))


def test_opening_with_the_wrong_store_class_is_an_error(tmp_path) -> None:
    ArrayStore(tmp_path).append_arrays({"latents": np.zeros((4, 2, 2, 2), np.float16)})
    with pytest.raises(ValueError, match="kind 'arrays'.*EpisodeStore"):
        EpisodeStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EpisodeStore(tmp_path / "nope", create=False)


def test_summary_and_rich_table(tmp_path) -> None:
    from rich.console import Console

    store = EpisodeStore(tmp_path)
    for t in (10, 20):
        store.append(make_episode(t, seed=t))
    store.append(make_episode(30, kind="none"))
    s = store.summary()
    assert s["episodes"] == 3 and s["frames"] == 60 and s["frame_shape"] == [6, 5, 3]
    assert (s["min_length"], s["max_length"], s["mean_length"]) == (10, 30, 20.0)
    assert s["episodes_with_actions"] == 2 and s["action_space"] == {"type": "discrete", "n": 5}
    expected = np.mean([store[i].episode_return for i in range(2)])
    assert s["mean_return"] == pytest.approx(expected, rel=1e-5)
    assert s["bytes_on_disk"] == sum(p.stat().st_size for p in tmp_path.glob("shard_*.npz"))
    console = Console(record=True, width=100)
    store.print_summary(console)
    assert "episodes with actions" in console.export_text()


def test_store_pickles_without_open_files(tmp_path) -> None:
    store = EpisodeStore(tmp_path)
    store.append(make_episode(10))
    store.read_frames(0, 0, 2)  # opens a reader
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read_frames(0, 3, 5), store.read_frames(0, 3, 5))
    assert os.fspath(clone.root) == os.fspath(store.root)


def test_read_frames_decompresses_only_overlapping_chunks(tmp_path, monkeypatch) -> None:
    store = EpisodeStore(tmp_path, chunk_len=8)
    store.append(make_episode(50))
    seen: list[str] = []
    original = ShardReader._member

    def spy(self, key):
        seen.append(key)
        return original(self, key)

    monkeypatch.setattr(ShardReader, "_member", spy)
    store.read_frames(0, 14, 18)  # rows 14..17 lie in chunks 1 and 2
    assert [k for k in seen if k.startswith("frames")] == ["frames_00001", "frames_00002"]
