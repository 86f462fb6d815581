"""Latent cache: encode a tiny store, stats, windows, labels, resume, fingerprint checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.autoencoder import Autoencoder, config_from_preset
from worldsim.data.episode import Episode, frames_to_tensor
from worldsim.data.latent_clips import LatentClipDataset
from worldsim.data.latent_store import (
    LatentStore,
    LatentStoreError,
    aggregate_steps,
    encode_store,
)
from worldsim.data.store import EpisodeStore


def make_episode(length: int, seed: int, size: int = 32) -> Episode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
    return Episode(
        frames=frames,
        actions=rng.integers(0, 4, length - 1),
        rewards=rng.normal(size=length - 1).astype(np.float32),
        terminated=np.arange(length - 1) == length - 2,
        truncated=np.zeros(length - 1, bool),
        metadata={"source": "test", "seed": seed},
    )


@pytest.fixture
def episodes(tmp_path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "episodes")
    for i, length in enumerate([9, 5, 12]):
        store.append(make_episode(length, seed=i))
    return store


@pytest.fixture
def ae() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(config_from_preset("tiny"))


def test_encode_matches_direct_encoding_and_stats(episodes, ae, tmp_path) -> None:
    cache = encode_store(ae, episodes, tmp_path / "latents", batch_size=4, progress=False)
    assert len(cache) == 3 and cache.latent_shape == (4, 8, 8)
    assert ae.training, "encode_store must restore the training mode"
    everything = []
    for i in range(3):
        item = cache[i]
        ep = episodes[i]
        with torch.no_grad():
            direct = ae.eval().encode(frames_to_tensor(ep.frames))
        ae.train()
        assert item["latents"].dtype == np.float16 and item["latents"].shape == (len(ep), 4, 8, 8)
        np.testing.assert_allclose(item["latents"], direct.half().numpy(), atol=2e-3)
        np.testing.assert_array_equal(item["actions"], ep.actions)
        np.testing.assert_array_equal(item["terminated"], ep.terminated)
        assert item["metadata"] == {"source": "test", "seed": i}
        everything.append(item["latents"].astype(np.float64))
    z = np.concatenate(everything).transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(cache.mean.numpy(), z.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache.std.numpy(), z.std(1), rtol=1e-5, atol=1e-6)
    stats = json.loads((tmp_path / "latents" / "stats.json").read_text())
    assert stats["fingerprint"] == ae.fingerprint() and stats["autoencoder"]["width"] == 8
    # normalize / denormalize are inverse and standardise the data
    zt = torch.from_numpy(np.concatenate(everything)).float()
    n = cache.normalize(zt)
    torch.testing.assert_close(n.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(cache.denormalize(n), zt, atol=1e-4, rtol=1e-4)
    with pytest.raises(LatentStoreError, match=r"latents must be \[..., 4, 8, 8\]"):
        cache.normalize(torch.zeros(2, 3, 8, 8))
    assert cache.bytes_per_frame() == 4 * 8 * 8 * 2
    assert "3 episodes, 26 latent frames" in cache.summary()


def test_read_windows_and_labels_round_trip(episodes, ae, tmp_path) -> None:
    cache = encode_store(ae, episodes, tmp_path / "latents", progress=False)
    full = cache.read_latents(2)
    np.testing.assert_array_equal(cache.read_latents(2, 3, 7), full[3:7])
    np.testing.assert_array_equal(cache.read_steps(2, 3, 6)["actions"], episodes[2].actions[3:6])
    labels = [np.arange(cache.episode_length(i) - 1) % 3 for i in range(len(cache))]
    cache.write_labels("latent_action", labels)
    assert cache.label_names() == ["latent_action"]
    reopened = LatentStore(tmp_path / "latents", fingerprint=ae.fingerprint())
    np.testing.assert_array_equal(reopened.read_labels("latent_action", 0), labels[0])
    np.testing.assert_array_equal(reopened.read_labels("latent_action", 2, 4, 8), labels[2][4:8])
    with pytest.raises(ValueError, match=r"episode 1 needs an integer array of shape \[4\]"):
        cache.write_labels("bad", [labels[0], np.zeros(9, int), labels[2]])
    with pytest.raises(ValueError, match="got 2 arrays, the cache has 3"):
        cache.write_labels("bad", labels[:2])
    with pytest.raises(ValueError, match="not allowed"):
        cache.write_labels("actions", labels)
    with pytest.raises(LatentStoreError, match="no labels named 'nope'"):
        cache.read_labels("nope", 0)

    ds = LatentClipDataset(cache, 4, seed=1, labels=["latent_action"])
    assert len(ds) == (9 - 3) + (5 - 3) + (12 - 3)
    item = ds[5]
    ep, start = item["episode"], item["start"]
    assert item["latents"].shape == (4, 4, 8, 8) and item["latents"].dtype == torch.float32
    raw = torch.from_numpy(cache.read_latents(ep, start, start + 4).astype(np.float32))
    torch.testing.assert_close(item["latents"], cache.normalize(raw))
    np.testing.assert_array_equal(item["actions"].numpy(), episodes[ep].actions[start : start + 3])
    np.testing.assert_array_equal(item["latent_action"].numpy(), labels[ep][start : start + 3])
    assert set(item) >= {"rewards", "terminated", "truncated"}
    again = LatentClipDataset(cache, 4, seed=1, normalize=False)[5]
    assert (again["episode"], again["start"]) == (ep, start)
    torch.testing.assert_close(again["latents"], raw)
    with pytest.raises(ValueError, match="no episode .* has 13 latent frames"):
        LatentClipDataset(cache, 13)
    with pytest.raises(LatentStoreError, match="no labels"):
        LatentClipDataset(cache, 2, labels=["missing"])


def test_resume_after_partial_encode(episodes, ae, tmp_path) -> None:
    out = tmp_path / "latents"

    class Crashing:
        """An episode source that dies on its third episode, like a killed process."""

        def __len__(self) -> int:
            return len(episodes)

        def __getitem__(self, i: int) -> Episode:
            if i == 2:
                raise KeyboardInterrupt
            return episodes[i]

    with pytest.raises(KeyboardInterrupt):
        encode_store(ae, Crashing(), out, progress=False)
    with pytest.raises(LatentStoreError, match="interrupted encode"):
        LatentStore(out)
    kept = (out / "episodes" / "shard_000000.npz").stat().st_mtime_ns
    cache = encode_store(ae, episodes, out, progress=False)
    assert len(cache) == 3
    assert (out / "episodes" / "shard_000000.npz").stat().st_mtime_ns == kept  # not redone
    fresh = encode_store(ae, episodes, tmp_path / "fresh", progress=False)
    for i in range(3):
        np.testing.assert_array_equal(cache.read_latents(i), fresh.read_latents(i))
    np.testing.assert_allclose(cache.mean, fresh.mean)


def test_fingerprint_mismatch_and_bad_input_raise(episodes, ae, tmp_path) -> None:
    out = tmp_path / "latents"
    encode_store(ae, episodes, out, progress=False)
    other = Autoencoder(config_from_preset("tiny"))
    with pytest.raises(LatentStoreError, match="different fingerprint|fingerprint"):
        encode_store(other, episodes, out, progress=False)
    with pytest.raises(LatentStoreError, match=f"expected '{other.fingerprint()}'"):
        LatentStore(out, fingerprint=other.fingerprint())
    with pytest.raises(LatentStoreError, match="is empty"):
        encode_store(ae, [], tmp_path / "empty", progress=False)
    with pytest.raises(LatentStoreError, match="not a latent cache"):
        LatentStore(tmp_path / "nothing")
    big = Autoencoder(config_from_preset("tiny", frame_height=64, frame_width=64))
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\], got \[5, 3, 32, 32\]"):
        encode_store(big, episodes, tmp_path / "big", batch_size=5, progress=False)


def test_temporal_compression_aggregates_steps(episodes, tmp_path) -> None:
    ae = Autoencoder(config_from_preset("tiny", temporal_compression=2))
    cache = encode_store(ae, episodes, tmp_path / "latents", progress=False)
    assert [cache.episode_length(i) for i in range(3)] == [4, 2, 6]
    ep = episodes[2]
    steps = cache.read_steps(2)
    np.testing.assert_array_equal(steps["actions"], ep.actions[0:10:2])
    np.testing.assert_allclose(steps["rewards"], ep.rewards[:10].reshape(5, 2).sum(1), rtol=1e-6)
    agg = aggregate_steps({"terminated": np.array([0, 0, 0, 1], bool)}, 2, 2)
    np.testing.assert_array_equal(agg["terminated"], [False, True])
