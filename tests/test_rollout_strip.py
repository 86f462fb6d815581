"""The real-vs-model frame strip: a held-out window replayed teacher-forced, written as a PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from worldsim.bundle import load_bundle
from worldsim.rollout import real_vs_model
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.video import save_frame_strip
from worldsim.world_options import WorldOptions

DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    bundle = load_bundle(untrained_bundle(tmp_path_factory.mktemp("strip") / "w", action_space=DISCRETE3))
    torch.manual_seed(1)
    for p in bundle.dynamics.parameters():  # a fresh net is the identity: make actions matter
        if p.abs().sum() == 0 and p.dim() > 0:
            p.data.normal_(0, 0.2)
    return load_simulator(bundle, WorldOptions(sampler_steps=1, seed=0))


def test_real_vs_model_replays_the_window_with_its_actions(sim):
    k = sim.context_frames
    frames = np.random.default_rng(0).integers(0, 256, (k + 5, 32, 32, 3), dtype=np.uint8)
    real, model = real_vs_model(sim, frames, np.array([0, 1, 2, 1, 0, 2, 1][: k + 4]), action_type="real")
    assert real.shape == model.shape == (6, 32, 32, 3) and model.dtype == np.uint8
    np.testing.assert_array_equal(real, frames[k - 1 :])
    _, other = real_vs_model(sim, frames, np.full(k + 4, 2), action_type="real")
    assert not np.array_equal(model[1:], other[1:])  # the actions drive the replay
    with pytest.raises(ValueError, match="more than"):
        real_vs_model(sim, frames[:k], np.zeros(k), action_type="real")


def test_frame_strip_png_has_one_labelled_row_per_entry(tmp_path):
    rows = {"real": np.zeros((4, 8, 10, 3), np.uint8), "model": np.full((4, 8, 10, 3), 200, np.uint8)}
    path = save_frame_strip(rows, tmp_path / "strip.png", scale=2, sep=1, label_width=30)
    image = np.asarray(Image.open(path))
    assert image.shape == (2 * (2 * 8 + 2) - 2, 30 + 2 + 4 * 20 + 3 * 2, 3)
    assert (image[:16, 32:52] == 0).all() and (image[18:, 32:52] == 200).all()
    with pytest.raises(ValueError, match="differ in shape"):
        save_frame_strip({"a": rows["real"], "b": rows["real"][:2]}, tmp_path / "bad.png")
