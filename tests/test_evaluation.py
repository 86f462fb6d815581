"""Held-out rollout figures (worldsim/evaluation.py): horizons, baselines, and their meaning."""

from __future__ import annotations

import numpy as np
import torch

from worldsim.autoencoder import Autoencoder, config_from_preset
from worldsim.data import EpisodeStore
from worldsim.data.latent_store import encode_store
from worldsim.dynamics import build_dynamics
from worldsim.evaluation import HORIZONS, rollout_metrics
from worldsim.metrics import psnr


def test_rollout_metrics_horizons_and_copy_last_baselines(tiny_store, tmp_path):
    torch.manual_seed(0)
    store = EpisodeStore(tiny_store, create=False)
    ae = Autoencoder(config_from_preset("tiny", frame_height=32, frame_width=32)).eval()
    latents = encode_store(ae, store, tmp_path / "latents", progress=False)
    c, h, w = latents.latent_shape
    net = build_dynamics("tiny", latent_channels=c, latent_height=h, latent_width=w,
                         num_actions=5).eval()
    episodes = list(range(len(latents)))
    out = rollout_metrics(ae, net, latents, store, episodes, action_source="real", horizons=(1, 2, 4),
                          context=2, num_windows=8, steps=1)
    for key in ("rollout_psnr", "random_psnr", "copy_last_psnr", "copy_last_decoded_psnr"):
        assert list(out[key]) == ["1", "2", "4"], key
        assert all(np.isfinite(v) for v in out[key].values()), key
    assert out["windows"] == 8 and out["delta_psnr_2"] == out["rollout_psnr"]["2"] - out["random_psnr"]["2"]
    # an untrained codec draws the last frame far worse than the frame itself
    assert out["copy_last_decoded_psnr"]["1"] < out["copy_last_psnr"]["1"]
    # copy-last is the same figure computed by hand on the same windows
    from worldsim.evaluation import sample_windows

    lengths = [latents.episode_length(i) for i in episodes]
    picks = sample_windows(lengths, episodes, 2 + 4, 8, 0)
    scores = []
    for e, s in picks:
        f = torch.from_numpy(store.read_frames(e, s, s + 6)).float().permute(0, 3, 1, 2) / 255
        scores.append(psnr(f[None, 1 + 2], f[None, 1]).clamp(max=60))
    assert abs(float(torch.cat(scores).mean()) - out["copy_last_psnr"]["2"]) < 1e-3
    assert HORIZONS == (1, 2, 4, 8, 16)
