"""The training entry: checkpoints, logs, pictures, exact resume, guards, clear errors, DDP (slow)."""

from __future__ import annotations

import csv
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
from worldsim.training.callbacks import DivergenceGuard
from worldsim.training.train import run


def tiny_cfg(store: Path, run_dir: Path, *extra: str):
    return compose(
        "train", ["experiment=tiny", f"data.store={store}", f"run_dir={run_dir}", *extra]
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
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
    assert torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    first_seconds = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["StepTimer"]["elapsed"]
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
    with pytest.raises(TrainingDiverged, match=r"step 13 .*the last good checkpoint \(step 10\) is kept"):
        run(tiny_cfg(tiny_store, run_dir))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_nan_before_any_checkpoint_says_none_was_written(tiny_store, tmp_path):
    """lr=1e3 turns the tiny autoencoder's loss into NaN at step 3, before the first checkpoint."""
    run_dir = tmp_path / "early"
    with pytest.raises(TrainingDiverged, match="step 3 .*no checkpoint was written") as err:
        run(tiny_cfg(tiny_store, run_dir, "trainer.lr=1e3", "trainer.schedule=constant"))
    assert "is kept" not in str(err.value)
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_csv_keeps_its_rows_across_a_resume(tiny_store, tmp_path, monkeypatch):
    """A run stopped at step 17 without a checkpoint of its own (as by kill -9: last.ckpt is
    the one of step 10) and resumed: the rows before step 10 stay, the rows of steps 10-16
    are those of the resumed run, each step once."""
    from worldsim.training.autoencoder_module import AutoencoderModule

    original = AutoencoderModule.compute_loss

    def killed(self, batch):
        if self.global_step == 17:  # ExitCheckpoint writes nothing for TrainingDiverged
            raise TrainingDiverged("simulated kill", since=17)
        return original(self, batch)

    run_dir = tmp_path / "csv"
    monkeypatch.setattr(AutoencoderModule, "compute_loss", killed)
    with pytest.raises(TrainingDiverged):
        run(tiny_cfg(tiny_store, run_dir, "trainer.log_every=1"))
    before = [r for r in metric_rows(run_dir) if r["train/loss"]]
    assert [int(r["step"]) for r in before] == list(range(17))
    monkeypatch.setattr(AutoencoderModule, "compute_loss", original)
    run(tiny_cfg(tiny_store, run_dir, "trainer.log_every=1", "resume=true"))
    rows = metric_rows(run_dir)
    train = [r for r in rows if r["train/loss"]]
    assert [int(r["step"]) for r in train] == list(range(20))
    assert [r["train/loss"] for r in train[:10]] == [r["train/loss"] for r in before[:10]]
    assert any(r.get("val/recon_psnr") for r in rows)
    # The divergence guard's state came from step 10's checkpoint: 10 losses then 10 more.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["callbacks"]["DivergenceGuard"]["seen"] == 20


def test_divergence_guard_rule():
    guard = DivergenceGuard(factor=10, patience=3, warmup=4, window=5)
    healthy = [1.0, 0.9, 1.2, 0.8, 0.85, 0.7, 0.75]
    for step, loss in enumerate(healthy):
        guard.check(step, loss)
    for step, loss in enumerate([50.0, 60.0, 0.7, 80.0, 0.6], start=7):  # spikes, not a run of 3
        guard.check(step, loss)
    assert max(guard.losses) < 2  # high losses stay out of the median
    guard.check(12, 30.0)
    guard.check(13, 40.0)
    with pytest.raises(TrainingDiverged, match=r"at step 14: 3 steps in a row above 10 x .*since step 12"):
        guard.check(14, 1e4)
    early = DivergenceGuard(factor=10, patience=1, warmup=4, window=5)
    for step, loss in enumerate([1.0, 100.0, 1e4, 1e5]):  # warm-up: not compared yet
        early.check(step, loss)
    with pytest.raises(ValueError, match="factor > 1"):
        DivergenceGuard(factor=1, patience=3, warmup=0, window=5)


GUARD = "trainer.divergence={factor: 5, patience: 3, warmup: 1, window: 10}"


def test_finite_blow_up_stops_the_run_naming_the_step(tiny_store, tmp_path):
    """lr=10 (warm-up over 20 steps) takes the tiny autoencoder's loss from 1 to 60-600 and it
    stays finite; the guard stops the run like the NaN guard."""
    run_dir = tmp_path / "blow"
    with pytest.raises(TrainingDiverged, match=r"loss diverged at step 3: 3 steps in a row .*since step 1") as err:
        run(tiny_cfg(tiny_store, run_dir, "trainer.lr=10", "trainer.warmup_steps=20", GUARD))
    assert "no checkpoint was written" in str(err.value)
    assert not (run_dir / "model").exists()


def test_divergence_guard_leaves_a_healthy_run_alone(tiny_store, tmp_path):
    assert run(tiny_cfg(tiny_store, tmp_path / "ok", GUARD))["steps"] == 20
    with pytest.raises(ConfigError, match="trainer.divergence needs factor > 1"):
        run(tiny_cfg(tiny_store, tmp_path / "bad", "trainer.divergence.factor=0.5"))
    with pytest.raises(ConfigError, match="trainer.divergence needs the keys factor, patience"):
        run(tiny_cfg(tiny_store, tmp_path / "bad", "~trainer.divergence.window"))


def test_bf16_mixed_trains_the_dynamics(tiny_store, tmp_path):
    """trainer=gpu's precision, bf16-mixed, on the CPU: the dynamics stage (shortcut targets,
    teacher forcing and local mixing included) trains to the end and exports its model."""
    ae = run(tiny_cfg(tiny_store, tmp_path / "ae"))
    assert ae["steps"] == 20
    lam_dir, dyn_dir, latents = tmp_path / "lam", tmp_path / "dyn", tmp_path / "ae" / "latents"
    run(tiny_cfg(tiny_store, lam_dir, "stage=lam", f"data.latents={latents}"))
    summary = run(tiny_cfg(tiny_store, dyn_dir, "stage=dynamics", f"data.latents={latents}",
                           f"data.lam_model={lam_dir / 'model'}", "trainer.precision=bf16-mixed",
                           "teacher_forcing=true", "+dynamics.local_kernel=3"))
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
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10
    assert (run_dir / "model" / "autoencoder.safetensors").is_file()
