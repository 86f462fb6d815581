"""The training loop shared by imagination training and real-game training.

``ActorCriticTrainer`` collects rollouts of ``horizon`` steps from a :class:`RolloutSource` (a
batch of worlds: the world model's vector env, or a vector of real games), computes
lambda-returns with the critic, and takes one gradient step per rollout. It owns everything
around that: a rich progress bar, a CSV of the return curve (``curve.csv``) and its plot
(``curve.png``), atomic checkpoints (``checkpoint.pt``, written to a temporary name and
renamed) and resuming from them. A checkpoint holds only tensors and plain data (dicts, lists,
numbers, strings) and is read with ``weights_only=True``: a file holding anything else is
refused before it can run code.

Both sources follow Gymnasium's ``NEXT_STEP`` auto-reset: the step after a world's episode ended
ignores the action and returns the new episode's first observation, so that step is masked out
of the loss.

einops legend: t time (rollout step), b worlds.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from agents.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    ReturnScale,
    actor_critic_loss,
    lambda_returns,
)
from worldsim.data.atomic import atomic_path
from worldsim.weights import WeightsError, load_plain

CURVE_FIELDS = (
    "update",
    "env_steps",
    "rollout_return",
    "episode_return",
    "episodes",
    "policy_loss",
    "value_loss",
    "entropy",
    "value_mean",
    "seconds",
)


class RolloutSource(Protocol):
    """A batch of ``num_envs`` worlds with NEXT_STEP auto-reset, speaking torch tensors."""

    num_envs: int

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every world; observations ``[b, ...]``."""

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions ``[b]`` -> observations ``[b, ...]``, reward ``[b]``, terminated, truncated."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (one home for their defaults: configs/agent/)."""

    updates: int = 1000  # gradient updates
    horizon: int = 15  # steps per rollout (imagination horizon / n of n-step returns)
    gamma: float = 0.985
    lam: float = 0.95
    lr: float = 3e-4
    entropy: float = 1e-2
    value_coef: float = 1.0
    grad_clip: float = 100.0
    reset_each_update: bool = True  # imagination: every rollout starts from real contexts
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("updates", "horizon", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(
                f"TrainConfig: gamma and lam must lie in [0, 1], got {self.gamma}, {self.lam}"
            )


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`worldsim.data.atomic.atomic_path`: a reader (or a resumed
    run) sees the old checkpoint or the complete new one, never half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: Path, keys: tuple[str, ...] = ("model", "model_config")) -> dict[str, Any]:
    """The dict of an agent checkpoint file (tensors and plain data only, see the module
    docstring); a one-line ``ValueError`` naming the file when it is refused, unreadable or
    lacks one of ``keys``."""
    try:
        ckpt = load_plain(path)
    except WeightsError as err:
        raise ValueError(f"agent checkpoint: {err}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not an agent checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    for key in keys:
        if key not in ckpt:
            raise ValueError(f"{path} is not an agent checkpoint: key {key!r} missing")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> tuple[ActorCritic, dict[str, Any]]:
    """An agent checkpoint -> (model in eval mode on the CPU, the checkpoint dict)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no agent checkpoint at {path}")
    ckpt = read_checkpoint(path)
    model = ActorCritic(ActorCriticConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def write_curve(rows: list[dict[str, float]], path: Path) -> None:
    """Rewrite the curve CSV atomically (rows are few: one per ``log_every`` updates)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_curve(path: str | os.PathLike) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curves(
    curves: dict[str, list[dict[str, float]]], path: Path, key: str = "rollout_return"
) -> Path:
    """Plot ``key`` against ``update`` for each named curve into a PNG (matplotlib, Agg)."""
    import matplotlib  # lazy: 0.4 s to import, and use("Agg") at the top would set every importer's backend

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): the backend pyplot loads

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, rows in curves.items():
        xs = [r["update"] for r in rows if not math.isnan(r[key])]
        ys = [r[key] for r in rows if not math.isnan(r[key])]
        ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
    ax.set_xlabel("gradient update")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class ActorCriticTrainer:
    """Train ``model`` on rollouts of ``source``; files go to ``out_dir`` (see module docstring).

    ``meta`` is stored in the checkpoint (the bundle path, the observation type, the game): what
    evaluation needs to rebuild the agent's view of the world.
    """

    def __init__(
        self,
        model: ActorCritic,
        source: RolloutSource,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        meta: dict[str, Any] | None = None,
        resume: bool = True,
    ) -> None:
        self.model, self.source, self.cfg = model, source, cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
        self.scale = ReturnScale()
        device = next(model.parameters()).device
        self.generator = torch.Generator(device).manual_seed(cfg.seed)
        self.update, self.env_steps, self.rows = 0, 0, []
        self.ckpt_path = self.out / "checkpoint.pt"
        if resume and self.ckpt_path.is_file():
            self._load()

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "update": self.update,
            "env_steps": self.env_steps,
            "rows": self.rows,
            "scale": self.scale.value,
            "generator": self.generator.get_state(),
            "train_config": asdict(self.cfg),
            "meta": self.meta,
        }

    def save(self) -> Path:
        atomic_save(self._state(), self.ckpt_path)
        return self.ckpt_path

    def _load(self) -> None:
        ckpt = read_checkpoint(self.ckpt_path, tuple(self._state()))
        saved = ActorCriticConfig.from_dict(ckpt["model_config"])
        if saved != self.model.cfg:
            raise ValueError(
                f"{self.ckpt_path}: checkpoint model config {saved} differs from this run's "
                f"{self.model.cfg}; use another out dir or resume=false"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.update, self.env_steps, self.rows = ckpt["update"], ckpt["env_steps"], ckpt["rows"]
        self.scale.value = ckpt["scale"]
        self.generator.set_state(ckpt["generator"])

    # ------------------------------------------------------------------ one update
    def _rollout(self, obs: torch.Tensor, pending: torch.Tensor, stats: dict[str, list]):
        """``horizon`` steps from ``obs``; returns the tensors of the rollout and the state after."""
        obs_l, act_l, rew_l, term_l, trunc_l, valid_l = [], [], [], [], [], []
        for _ in range(self.cfg.horizon):
            action = self.model.act(obs, generator=self.generator)
            next_obs, reward, terminated, truncated = self.source.step(action)
            obs_l.append(obs)
            act_l.append(action)
            rew_l.append(reward.float())
            term_l.append(terminated.bool())
            trunc_l.append(truncated.bool())
            valid_l.append(~pending)
            self._episode_return = torch.where(
                pending, torch.zeros_like(reward.float()), self._episode_return + reward.float()
            )
            done = (terminated | truncated).bool() & ~pending
            stats["episodes"] += self._episode_return[done].tolist()
            pending = (terminated | truncated).bool()
            obs = next_obs
        stack = torch.stack
        return (
            (
                stack(obs_l),
                stack(act_l),
                stack(rew_l),
                stack(term_l),
                stack(trunc_l),
                stack(valid_l),
            ),
            obs,
            pending,
        )

    def _train_step(self, batch, last_obs: torch.Tensor, stats: dict[str, list]) -> None:
        obs, actions, rewards, term, trunc, valid = batch  # each [t, b, ...]
        with torch.no_grad():
            flat = torch.cat([obs.flatten(0, 1), last_obs])
            values = self.model(flat)[1].reshape(self.cfg.horizon + 1, -1)
            # Steps whose successor is an auto-reset observation end an episode: terminated
            # steps stop there; truncated ones bootstrap from the value of the final observation.
            returns = lambda_returns(
                rewards * valid,
                values,
                gamma=self.cfg.gamma,
                lam=self.cfg.lam,
                terminated=term & valid,
                truncated=(trunc | ~valid) & ~term,
            )
        scale = self.scale.update(returns[valid]) if valid.any() else 1.0
        loss, logs = actor_critic_loss(
            self.model,
            obs,
            actions,
            returns,
            entropy_coef=self.cfg.entropy,
            value_coef=self.cfg.value_coef,
            scale=scale,
            mask=valid,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        stats["rollout_return"].append(float((rewards * valid).sum(0).mean()))
        for k, v in logs.items():
            stats.setdefault(k, []).append(v)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until ``cfg.updates``; returns the last curve row and the file paths."""
        cfg = self.cfg
        self.model.train()
        obs = self.source.reset(seed=cfg.seed + self.update)
        b = obs.shape[0]
        pending = torch.zeros(b, dtype=torch.bool, device=obs.device)
        self._episode_return = torch.zeros(b, device=obs.device)
        stats: dict[str, list] = {"episodes": [], "rollout_return": []}
        # Seconds continue across resumes: the curve's last row holds the time trained so far.
        t0 = time.perf_counter() - (self.rows[-1]["seconds"] if self.rows else 0.0)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not cfg.progress, transient=True) as bar:
            task = bar.add_task(
                self.meta.get("name", "agent"), total=cfg.updates, completed=self.update, info=""
            )
            while self.update < cfg.updates:
                if cfg.reset_each_update and stats["rollout_return"]:
                    obs = self.source.reset()
                    pending.zero_()
                    self._episode_return.zero_()
                batch, obs, pending = self._rollout(obs, pending, stats)
                self._train_step(batch, obs, stats)
                self.update += 1
                self.env_steps += cfg.horizon * b
                if self.update % cfg.log_every == 0 or self.update == cfg.updates:
                    row = self._log_row(stats, time.perf_counter() - t0)
                    stats = {"episodes": [], "rollout_return": []}
                    bar.update(task, info=f"return {row['rollout_return']:.3f}")
                if self.update % cfg.ckpt_every == 0 or self.update == cfg.updates:
                    self.save()
                bar.update(task, completed=self.update)
        self.model.eval()
        return {
            "checkpoint": str(self.ckpt_path),
            "curve": str(self.out / "curve.csv"),
            "plot": str(self.out / "curve.png"),
            "last": self.rows[-1] if self.rows else {},
        }

    def _log_row(self, stats: dict[str, list], seconds: float) -> dict[str, float]:
        def mean(key: str) -> float:
            vals = stats.get(key) or []
            return float(np.mean(vals)) if vals else float("nan")

        row = {
            "update": float(self.update),
            "env_steps": float(self.env_steps),
            "rollout_return": mean("rollout_return"),
            "episode_return": mean("episodes"),
            "episodes": float(len(stats["episodes"])),
            "policy_loss": mean("policy_loss"),
            "value_loss": mean("value_loss"),
            "entropy": mean("entropy"),
            "value_mean": mean("value_mean"),
            "seconds": float(seconds),
        }
        self.rows.append(row)
        write_curve(self.rows, self.out / "curve.csv")
        plot_curves({self.meta.get("name", "agent"): self.rows}, self.out / "curve.png")
        return row


__all__ = [
    "CURVE_FIELDS",
    "ActorCriticTrainer",
    "RolloutSource",
    "TrainConfig",
    "atomic_save",
    "load_checkpoint",
    "read_checkpoint",
    "plot_curves",
    "read_curve",
    "write_curve",
]
