"""The whole pipeline end to end on the tiny preset, and its resume. The variants (videos without
actions, reused networks) are ``slow``: ``make test-slow``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.cli import main

DATA = Path(__file__).parent / "data"


def _figures(metrics: dict, prefix: str = "") -> dict:
    """A metrics.json flattened to ``{dotted key: value}``, without timings (they vary by run)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_figures(value, f"{prefix}{key}."))
        elif "seconds" not in key and not key.startswith("fps_"):
            out[prefix + key] = value
    return out


def test_tiny_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    # diffusion forcing, as the reference was trained (teacher forcing: the other tiny runs)
    assert main(["quickstart", "experiment=tiny", f"out={out}", "teacher_forcing=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The same figures as the implementation before the WorldOptions / ActionSetup redesign
    # (tests/data/tiny_quickstart_metrics.json: `worldsim quickstart experiment=tiny` at 160ebdf).
    reference = _figures(json.loads((DATA / "tiny_quickstart_metrics.json").read_text()))
    figures = _figures(metrics)
    assert set(reference) <= set(figures)
    for key, value in reference.items():
        if isinstance(value, float):
            assert figures[key] == pytest.approx(value, rel=1e-3, abs=1e-4, nan_ok=True), key
        else:
            assert figures[key] == value, key
    for key in ("recon_psnr", "nmi", "codebook_used", "codebook_size", "delta_psnr_4"):
        assert metrics[key] is not None, key
    for key in ("rollout_psnr", "copy_last_psnr", "copy_last_decoded_psnr"):
        assert set(metrics[key]) == {"1", "2", "4", "8", "16"}
        assert all(0 < v < 61 for v in metrics[key].values())
    assert set(metrics["train_seconds"]) >= {"autoencoder", "lam", "dynamics"}
    assert (out / "sample.mp4").stat().st_size > 0
    assert (out / "rollout.mp4").stat().st_size > 0
    from PIL import Image

    strip = np.asarray(Image.open(out / "rollout_strip.png"))  # rows real / model, frames scaled x4
    assert strip.shape[0] == 2 * 32 * 4 + 2 * 4 and strip.shape[2] == 3
    assert metrics["fps_single"] > 0 and metrics["fps_batched"] > 0

    from worldsim.simulator import load_simulator

    sim = load_simulator(out / "bundle")
    first = sim.reset(batch=2, decode=True)
    assert first.frames.shape == (2, 32, 32, 3)
    step = sim.step([0, 1], decode=True)
    assert step.frames.shape == (2, 32, 32, 3) and step.reward.shape == (2,)
    for stage in ("autoencoder", "lam", "dynamics", "heads"):
        assert (out / stage / "summary.json").is_file()
    # The bundle carries the heads refitted on the dynamics' rollouts, not the dynamics stage's.
    refit = metrics["heads_on_rollouts"]
    assert set(refit) == {"before", "after", "readout"} and refit["after"]["generated"]["transitions"] > 0
    # The dynamics reads rewards from its own state, scored on the same held-out rollouts.
    assert sim.dynamics.readout is not None
    assert refit["readout"]["transitions"] == refit["after"]["generated"]["transitions"]
    from worldsim.weights import load_state

    bundled = load_state(out / "bundle", "heads")
    for name, value in load_state(out / "heads" / "model", "heads").items():
        torch.testing.assert_close(bundled[name], value)
    assert any(not torch.equal(bundled[k], v) for k, v in load_state(out / "dynamics" / "model", "heads").items())
    assert len(sim.bundle.contexts) == 8  # bundle_contexts of the tiny experiment
    # The data has real actions: the LAM step fitted the action adapter and the bundle uses it.
    assert 0 <= metrics["action_adapter"]["val_accuracy"] <= 1
    assert sim.adapter is not None
    for name, value in load_state(out / "lam" / "adapter", "action_adapter").items():
        torch.testing.assert_close(load_state(out / "bundle", "action_adapter")[name], value)

    # A second run finds every step done and changes nothing it already wrote.
    before = (out / "dynamics" / "summary.json").read_text()
    built = (out / "bundle" / "bundle.json").stat().st_mtime_ns
    assert main(["quickstart", "experiment=tiny", f"out={out}"]) == 0
    assert (out / "dynamics" / "summary.json").read_text() == before
    assert (out / "bundle" / "bundle.json").stat().st_mtime_ns == built
    # A trained file newer than the bundle (e.g. an adapter fitted by a later version) rebuilds it.
    import os

    adapter_file = next((out / "lam" / "adapter").glob("*.safetensors"))
    later = built / 1e9 + 10
    os.utime(adapter_file, (later, later))
    assert main(["quickstart", "experiment=tiny", f"out={out}"]) == 0
    assert (out / "bundle" / "bundle.json").stat().st_mtime_ns > built

    # The default refit=auto only scores a dynamics that has a readout: its heads are not refitted.
    import shutil

    shutil.rmtree(out / "heads")
    assert main(["quickstart", "experiment=tiny", f"out={out}", "heads_rollouts.refit=auto"]) == 0
    scored = json.loads((out / "metrics.json").read_text())["heads_on_rollouts"]
    assert set(scored) == {"before", "readout"} and not (out / "heads" / "model").exists()
    with pytest.raises(ValueError, match="heads_rollouts.refit"):
        shutil.rmtree(out / "heads")
        main(["quickstart", "experiment=tiny", f"out={out}", "heads_rollouts.refit=sometimes"])


@pytest.mark.slow
def test_tiny_quickstart_on_videos_without_actions(tiny_store, tmp_path):
    """A folder of gameplay videos, no action labels: the label-free pipeline still runs."""
    from worldsim.data import EpisodeStore
    from worldsim.video import save_video

    store = EpisodeStore(tiny_store, create=False)
    videos = tmp_path / "videos"
    for i in range(len(store)):
        save_video(store.read_frames(i), videos / f"play_{i}.mp4", fps=15)
    out = tmp_path / "qs"
    assert main(["quickstart", "experiment=tiny", f"out={out}", f"videos={videos}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nmi"] is None and metrics["binding_accuracy_100"] is None  # no labels to score
    assert "action_adapter" not in metrics and not (out / "lam" / "adapter").exists()
    assert metrics["codebook_size"] == 8 and metrics["codebook_used"] >= 1
    assert "4" in metrics["rollout_psnr"]
    assert (out / "rollout.mp4").stat().st_size > 0


def test_quickstart_until_stops_after_the_named_step(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "experiment=tiny", f"out={out}", "until=collect"]) == 0
    assert (out / "data" / "index.json").is_file() and (out / "sample.mp4").is_file()
    assert not (out / "autoencoder").exists()
    assert "total_seconds" in json.loads((out / "metrics.json").read_text())
    assert main(["quickstart", "experiment=tiny", f"out={out}", "until=bundle"]) != 0
    err = capsys.readouterr().err
    assert "until='bundle'" in err and "lam" in err


def test_quickstart_asked_for_a_gpu_it_lacks_fails_before_collecting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "qs"
    assert main(["quickstart", "experiment=tiny", "trainer=gpu", f"out={out}"]) != 0
    assert "trainer.accelerator=gpu" in capsys.readouterr().err
    assert not (out / "data").exists()  # nothing recorded for a run that cannot train


def test_step_device_follows_the_trainer(monkeypatch):
    from worldsim.config import ConfigError, compose
    from worldsim.quickstart import step_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert step_device(compose("quickstart")) == "cpu"
    assert step_device(compose("quickstart", ["trainer.accelerator=auto"])) == "cpu"
    with pytest.raises(ConfigError, match="'tpu'"):
        step_device(compose("quickstart", ["trainer.accelerator=tpu"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert step_device(compose("quickstart", ["trainer=gpu"])) == "cuda"
    assert step_device(compose("quickstart", ["trainer.accelerator=auto"])) == "cuda"


def test_medium_experiment_is_the_recorded_gpu_recipe(tmp_path):
    """experiment=medium: 1,200 episodes, the medium DiT, and the dynamics budget of the recorded
    medium bundle reach the dynamics stage's train config."""
    from worldsim.config import compose
    from worldsim.quickstart import _stage_config

    cfg = compose("quickstart", ["experiment=medium"])
    assert cfg.episodes == 1200 and cfg.data.val_episodes == 24
    stage = _stage_config(cfg, "dynamics", tmp_path / "dynamics", {"store": "s", "latents": "l"})
    assert stage.dynamics.name == "medium"
    assert (stage.data.batch_size, stage.data.clip_len) == (64, 12)
    assert stage.trainer.accelerator == "gpu" and stage.trainer.precision == "32-true"
    assert (stage.trainer.max_steps, stage.trainer.lr) == (4500, 1e-3)
    ae = _stage_config(cfg, "autoencoder", tmp_path / "ae", {"store": "s"})
    assert ae.trainer.max_steps == 1500 and ae.dynamics.name == "medium"


def test_agents_experiment_is_the_cpu_world_recipe(tmp_path):
    """experiment=agents: ten times the quickstart's data, the game's actions where it has them,
    and the quickstart's DiT trained five times as long on the CPU, without an action adapter."""
    from worldsim.config import compose
    from worldsim.quickstart import _stage_config

    cfg = compose("quickstart", ["experiment=agents"])
    assert cfg.episodes == 1200 and cfg.data.val_episodes == 24 and cfg.action_source == "auto"
    assert cfg.action_adapter.steps == 0
    stage = _stage_config(cfg, "dynamics", tmp_path / "dynamics", {"store": "s", "latents": "l"})
    assert stage.dynamics.name == "quickstart" and stage.trainer.accelerator == "cpu"
    assert (stage.data.batch_size, stage.data.clip_len) == (8, 12) and stage.teacher_forcing
    assert (stage.trainer.max_steps, stage.trainer.max_minutes, stage.trainer.lr) == (5000, 50, 2e-3)
    from worldsim.dynamics import config_from_preset

    assert config_from_preset(stage.dynamics.name).local_kernel == 3


class _Latents:
    """A latent store's answer to "does episode i have real actions", for action_source=auto."""

    def __init__(self, with_actions: list[bool]):
        self.with_actions = with_actions

    def __len__(self):
        return len(self.with_actions)

    def has(self, i, key):
        assert key == "actions"
        return self.with_actions[i]


def test_auto_actions_takes_the_games_actions_where_every_episode_has_them():
    from worldsim.training.stages import _auto_actions

    discrete, box = {"type": "discrete", "n": 5}, {"type": "box", "shape": [2]}
    assert _auto_actions(_Latents([True, True]), discrete) == "real"
    assert _auto_actions(_Latents([True, True]), box) == "both"
    assert _auto_actions(_Latents([True, False]), discrete) == "latent"  # one video without labels
    assert _auto_actions(_Latents([False, False]), None) == "latent"


@pytest.mark.gpu
def test_tiny_quickstart_on_the_gpu(tmp_path):
    """trainer=gpu: every step, the adapter and the heads on rollouts included, runs on CUDA."""
    out = tmp_path / "qs"
    assert main(["quickstart", "experiment=tiny", "trainer=gpu", f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["action_adapter"]["val_accuracy"] <= 1
    assert metrics["heads_on_rollouts"]["after"]["generated"]["transitions"] > 0
    assert metrics["fps_batched"] > 0


@pytest.mark.slow
def test_quickstart_reuses_an_earlier_runs_autoencoder_and_lam(tmp_path):
    """autoencoder_from / lam_from: the earlier run's networks encode and label new data (more
    episodes, another seed) in place of training; the steps are skipped when resumed."""
    from worldsim.data.latent_store import LatentStore
    from worldsim.latent_action import label_transitions
    from worldsim.weights import load_network, load_state

    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["quickstart", "experiment=tiny", f"out={first}", "until=lam"]) == 0
    reuse = [f"autoencoder_from={first / 'autoencoder'}", f"lam_from={first / 'lam'}"]
    args = ["quickstart", "experiment=tiny", f"out={second}", "episodes=8", "seed=1", "until=lam", *reuse]
    assert main(args) == 0
    for stage, name in (("autoencoder", "autoencoder"), ("lam", "lam")):
        for key, value in load_state(first / stage / "model", name).items():
            assert torch.equal(load_state(second / stage / "model", name)[key], value), key
        summary = json.loads((second / stage / "summary.json").read_text())
        assert summary["reused_from"] == str(first / stage)
    ae = json.loads((second / "autoencoder" / "summary.json").read_text())
    assert 5.0 < ae["recon_psnr"] < 60.0 and 0.0 < ae["recon_ssim"] <= 1.0
    latents = LatentStore(second / "autoencoder" / "latents")
    assert len(latents) == 8  # this run's episodes, encoded by the first run's autoencoder
    lam = load_network(first / "lam" / "model", "lam")
    expected = label_transitions(lam, latents)
    for e in range(len(latents)):
        np.testing.assert_array_equal(latents.read_labels("lam", e, 0, latents.episode_length(e) - 1), expected[e])
    lam_summary = json.loads((second / "lam" / "summary.json").read_text())
    assert lam_summary["codebook_size"] == lam.cfg.num_codes and "binding" in lam_summary
    assert (second / "lam" / "adapter" / "summary.json").is_file()  # the adapter is fitted on the reused codes
    written = (second / "lam" / "summary.json").stat().st_mtime_ns
    assert main(args) == 0  # resumed: done already
    assert (second / "lam" / "summary.json").stat().st_mtime_ns == written


@pytest.mark.slow
def test_quickstart_reuse_errors_name_the_option(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["quickstart", "experiment=tiny", f"out={first}", "until=lam"]) == 0
    missing = tmp_path / "nowhere"
    assert main(["quickstart", "experiment=tiny", f"out={tmp_path / 'a'}", "until=lam",
                 f"autoencoder_from={missing}"]) != 0
    assert f"autoencoder_from={missing}" in capsys.readouterr().err
    # A LAM trained on other latents (here: 2 latent channels instead of the tiny preset's) does not fit.
    assert main(["quickstart", "experiment=tiny", f"out={tmp_path / 'b'}", "until=lam",
                 "+autoencoder.latent_channels=2", f"lam_from={first / 'lam'}"]) != 0
    err = capsys.readouterr().err
    assert f"lam_from={first / 'lam'}" in err and "does not fit" in err
