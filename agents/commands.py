"""``worldsim agent`` and ``worldsim plan``: the agents' sub-commands.

Registered as ``worldsim.commands`` entry points (pyproject.toml), so the ``worldsim`` package
never imports ``agents``. Each takes the composed config of ``configs/<name>.yaml``, whose
``world`` node (``worldsim.config.world_options``) is handed whole to the worlds it runs:

- ``worldsim agent mode=train bundle=PATH``: imagination training (:mod:`agents.imagination`);
- ``worldsim agent mode=eval bundle=PATH checkpoint=FILE``: real-game evaluation against a
  random policy and a real-game-trained agent (:mod:`agents.evaluate`);
- ``worldsim agent mode=rank bundle=PATH rank.policies=[CHECKPOINT,...]``: the imagined
  return each policy (and random) earns in the bundle's worlds (:mod:`agents.rank`);
- ``worldsim plan bundle=PATH planner=cem|mppi objective=goal|reward``: planners in the real game
  (:mod:`agents.plan_eval`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from agents.evaluate import compare_in_real_game
from agents.imagination import train_in_imagination
from agents.plan_eval import evaluate_planner
from agents.rank import imagined_returns, write_rank
from agents.trainer import TrainConfig
from worldsim.config import ConfigError, require, world_options
from worldsim.data.atomic import atomic_write_json

AGENT_MODES = ("train", "eval", "rank")
PLAN_MODES = ("eval",)


def _container(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _bundle(cfg: DictConfig) -> Path:
    path = Path(require(cfg, "bundle"))
    if not (path / "bundle.json").is_file():
        raise ConfigError(f"bundle={path}: not a Simulator bundle (no bundle.json there)")
    return path


def _train_config(node: DictConfig) -> TrainConfig:
    try:
        return TrainConfig(**_container(node))
    except TypeError as err:
        raise ConfigError(f"agent.train: {err}") from err


def agent(cfg: DictConfig) -> dict[str, Any]:
    """Train (``mode=train``), evaluate (``mode=eval``) or rank by imagined return
    (``mode=rank``) actor-critics; returns the summary."""
    mode = cfg.mode
    if mode not in AGENT_MODES:
        raise ConfigError(f"mode={mode!r}: worldsim agent modes are {list(AGENT_MODES)}")
    bundle = _bundle(cfg)
    out = Path(cfg.out)
    a = cfg.agent
    if mode == "train":
        summary = train_in_imagination(
            bundle,
            out,
            options=world_options(cfg),
            num_envs=int(a.num_envs),
            train=_train_config(a.train),
            network=_container(a.network),
            max_episode_steps=a.max_episode_steps,
            resume=bool(cfg.resume),
        )
        print(json.dumps(summary, indent=2))
        return summary
    if mode == "rank":
        return _rank(cfg, bundle, out)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else out / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint={checkpoint}: no such file; train first (mode=train)")
    e = cfg.eval
    results = compare_in_real_game(
        checkpoint,
        out / "eval",
        bundle=bundle,
        env_id=cfg.env,
        seeds=tuple(int(s) for s in e.seeds),
        episodes=int(e.episodes),
        max_steps=int(e.max_steps),
        greedy=bool(e.greedy),
        real_num_envs=int(a.num_envs),
        train_real=bool(e.train_real),
        progress=bool(a.train.progress),
    )
    print(json.dumps({k: v for k, v in results.items() if k.endswith("_return")}, indent=2))
    return results


def _rank(cfg: DictConfig, bundle: Path, out: Path) -> dict[str, Any]:
    r = cfg.rank
    policies = _container(r.policies) or []
    if not isinstance(policies, list):
        raise ConfigError(f"rank.policies must be a list of agent checkpoints, got {policies!r}")
    for path in policies:
        if not Path(str(path)).exists():
            raise ConfigError(f"rank.policies: {path}: no such checkpoint file or run directory")
    results = imagined_returns(
        bundle,
        {str(p): str(p) for p in policies},  # labelled by their paths
        options=world_options(cfg),
        num_envs=int(r.num_envs),
        rollouts=int(r.rollouts),
        horizon=int(r.horizon),
        seed=int(r.seed),
        greedy=bool(r.greedy),
    )
    write_rank(results, out)
    brief = {k: (v["return"]["mean"], v["name"]) for k, v in results["policies"].items()}
    print(json.dumps(brief, indent=2))
    return results


def plan(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a planner in the real game; prints (and with ``out=FILE`` writes) the results."""
    if cfg.mode not in PLAN_MODES:
        raise ConfigError(f"mode={cfg.mode!r}: worldsim plan modes are {list(PLAN_MODES)}")
    try:
        results = evaluate_planner(
            _bundle(cfg),
            options=world_options(cfg),
            objective=cfg.objective,
            planner=_container(cfg.planner),
            seeds=tuple(int(s) for s in cfg.seeds),
            num_tasks=int(cfg.num_tasks),
            task=_container(cfg.task),
            env_id=cfg.env,
            max_steps=int(cfg.max_steps),
        )
    except TypeError as err:
        raise ConfigError(f"planner: {err}") from err
    brief = {k: v for k, v in results.items() if k != "episodes"}
    print(json.dumps(brief, indent=2))
    if cfg.out:
        atomic_write_json(Path(cfg.out), results, indent=2)
    return results


__all__ = ["AGENT_MODES", "PLAN_MODES", "agent", "plan"]
