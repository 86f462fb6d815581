"""The training entry: checkpoints, logs, pictures, exact resume, clear errors, DDP (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from worldsim.config import ConfigError, compose
from worldsim.training.base import TrainingDiverged
from worldsim.training.train import run


def tiny_cfg(store: Path, run_dir: Path, *extra: str):
    return compose(
        "train", ["experiment=tiny", f"data.store={store}", f"run_dir={run_dir}", *extra]
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_autoencoder_stage_writes_everything(tiny_store, tmp_path):
    summary = run(tiny_cfg(tiny_store, tmp_path / "ae"))
    out = tmp_path / "ae"
    assert summary["steps"] == 20
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "logs" / "metrics.csv").is_file()
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert list((out / "samples").glob("recon_*.png"))
    assert (out / "model" / "autoencoder.safetensors").is_file()
    assert (out / "latents" / "stats.json").is_file()
    assert (out / "config.yaml").is_file()
    assert 5.0 < summary["recon_psnr"] < 60.0
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/recon_psnr" in header


def test_resume_ends_with_the_same_weights(tiny_store, tmp_path, monkeypatch):
    """Ctrl-C at step 10, then resume=true: the same weights as one uninterrupted run."""
    from worldsim.training.autoencoder_module import AutoencoderModule

    straight = tmp_path / "straight"
    run(tiny_cfg(tiny_store, straight))

    original = AutoencoderModule.compute_loss

    def interrupted(self, batch):
        if self.global_step == 10:
            raise KeyboardInterrupt
        return original(self, batch)

    split = tmp_path / "split"
    monkeypatch.setattr(AutoencoderModule, "compute_loss", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C
            run(tiny_cfg(tiny_store, split))
    finally:
        signal.signal(signal.SIGINT, handler)
    first_half = final_weights(split)
    assert torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 10
    first_seconds = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["StepTimer"]["elapsed"]
    assert first_seconds > 0
    monkeypatch.setattr(AutoencoderModule, "compute_loss", original)
    t0 = time.perf_counter()
    summary = run(tiny_cfg(tiny_store, split, "resume=true"))
    resumed_wall = time.perf_counter() - t0
    # train_seconds counts the interrupted part too (the timer's count is in the checkpoint).
    assert first_seconds < summary["train_seconds"] <= first_seconds + resumed_wall
    a, b = final_weights(straight), final_weights(split)
    assert a.keys() == b.keys()
    assert any(not torch.equal(first_half[k], b[k]) for k in a)  # the resumed run trained further
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(
    tiny_store, tmp_path, monkeypatch
):
    from worldsim.training.autoencoder_module import AutoencoderModule

    original = AutoencoderModule.compute_loss

    def poisoned(self, batch):
        out = original(self, batch)
        if self.global_step >= 13:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(AutoencoderModule, "compute_loss", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="step 13"):
        run(tiny_cfg(tiny_store, run_dir))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_bf16_mixed_trains_the_dynamics(tiny_store, tmp_path):
    """trainer=gpu's precision, bf16-mixed, on the CPU: the dynamics stage (shortcut targets
    included) trains to the end and exports its model."""
    ae = run(tiny_cfg(tiny_store, tmp_path / "ae"))
    assert ae["steps"] == 20
    lam_dir, dyn_dir, latents = tmp_path / "lam", tmp_path / "dyn", tmp_path / "ae" / "latents"
    run(tiny_cfg(tiny_store, lam_dir, "stage=lam", f"data.latents={latents}"))
    summary = run(tiny_cfg(tiny_store, dyn_dir, "stage=dynamics", f"data.latents={latents}",
                           f"data.lam_model={lam_dir / 'model'}", "trainer.precision=bf16-mixed"))
    assert summary["steps"] == 20
    assert (dyn_dir / "model" / "dynamics.safetensors").is_file()


def test_resume_without_checkpoint_is_a_clear_error(tiny_store, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        run(tiny_cfg(tiny_store, tmp_path / "none", "resume=true"))


def test_truncated_checkpoint_is_a_clear_error(tiny_store, tmp_path):
    run_dir = tmp_path / "trunc"
    run(tiny_cfg(tiny_store, run_dir, "trainer.max_steps=10"))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        run(tiny_cfg(tiny_store, run_dir, "resume=true"))


def test_empty_or_missing_store_is_a_clear_error(tmp_path):
    from worldsim.data import EpisodeStore

    EpisodeStore(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no episodes"):
        run(tiny_cfg(tmp_path / "empty", tmp_path / "r1"))
    with pytest.raises(ConfigError, match="not an episode store"):
        run(tiny_cfg(tmp_path / "missing", tmp_path / "r2"))


def test_unknown_stage_is_a_clear_error(tiny_store, tmp_path):
    with pytest.raises(ConfigError, match="allowed stages"):
        run(tiny_cfg(tiny_store, tmp_path / "x", "stage=nonsense"))


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tiny_store, tmp_path):
    run_dir = tmp_path / "ddp"
    exe = Path(sys.executable).with_name("worldsim")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            str(exe),
            "train",
            "experiment=tiny",
            f"data.store={tiny_store}",
            f"run_dir={run_dir}",
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.max_steps=10",
            "trainer.ckpt_every=5",
            "trainer.val_every=5",
            "trainer.sample_every=5",
            "trainer.warmup_steps=2",
            "trainer.log_every=5",
            "trainer.progress=false",
            "data.batch_size=4",
            "data.val_episodes=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    assert (run_dir / "model" / "autoencoder.safetensors").is_file()
