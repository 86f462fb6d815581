"""Planners executed in the real game: goal-task success rate or return, and seconds per action.

``evaluate_planner(bundle, ...)`` builds a :class:`~agents.planners.PlanningAgent` over a batched
Simulator of the bundle and plays, in the real game,

- ``objective="goal"``: the goal tasks of :mod:`agents.goal_tasks` (one task set per seed); the
  agent gets the start frame and the goal image, acts on the real frames, and a task succeeds
  when :func:`~agents.goal_tasks.reached` says so within the task's ``max_steps``;
- ``objective="reward"``: one episode per seed of the game, planning for predicted return.

The agent's latent codes reach the game through the bundle's binding (unbound codes play real
action 0). Only the evaluation reads the game's state. Reported: ``plan_success`` (or
``plan_return``) and ``plan_seconds_per_action`` as mean and std over seeds, and ``plan_budget``
(model calls per plan and per action).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from agents.evaluate import summarize
from agents.gaussian_planner import GaussianPlanner
from agents.goal_tasks import GoalTask, make_goal_tasks, reached
from agents.planners import (
    GoalObjective,
    PlanningAgent,
    RewardObjective,
    SequencePlanner,
    SimulatorModel,
)
from agents.real_game import code_table, resolve_game
from envs import make_env
from worldsim.bundle import Bundle, load_bundle
from worldsim.simulator import Simulator
from worldsim.world_options import WorldOptions, preset

OBJECTIVES = ("goal", "reward")


def make_planning_agent(
    sim: Simulator,
    *,
    method: str = "cem",
    horizon: int = 8,
    population: int = 64,
    iterations: int = 3,
    elites: int = 8,
    alpha: float = 0.7,
    temperature: float = 0.1,
    warm_start_mix: float = 0.3,
    init_std: float = 0.5,
    min_std: float = 0.05,
    noise_beta: float = 2.0,
    keep_elites: float = 0.3,
    replan_every: int = 1,
    context_frames: int | None = None,
    gamma: float = 0.99,
    seed: int = 0,
) -> PlanningAgent:
    """A model-predictive agent over ``sim`` (objective: reward until ``set_goal`` is called),
    planning over the actions of ``sim.options.action_type`` (see ``SimulatorModel``): a
    :class:`SequencePlanner` for discrete actions (``warm_start_mix``), a
    :class:`~agents.gaussian_planner.GaussianPlanner` for a Box (``init_std``, ``min_std``,
    ``noise_beta``, ``keep_elites``)."""
    model = SimulatorModel(sim)
    common = dict(method=method, horizon=horizon, population=population, iterations=iterations,
                  elites=elites, alpha=alpha, temperature=temperature, seed=seed)
    if model.num_actions is None:
        planner = GaussianPlanner(model, RewardObjective(gamma), init_std=init_std,
                                  min_std=min_std, noise_beta=noise_beta,
                                  keep_elites=keep_elites, **common)
    else:
        planner = SequencePlanner(model, RewardObjective(gamma), warm_start_mix=warm_start_mix,
                                  **common)
    k = context_frames if context_frames is not None else sim.context_frames
    return PlanningAgent(planner, context_frames=k, replan_every=replan_every)


def run_goal_task(
    task: GoalTask, agent: PlanningAgent, codes: np.ndarray, *, tolerance: int = 4
) -> dict[str, Any]:
    """Play one goal task; ``codes[c]`` is the real action of latent code ``c``."""
    env = task.make_env()
    try:
        frame, _ = env.reset(seed=task.level_seed)
        agent.reset()
        agent.set_goal(task.goal_frame)
        think, steps, success, actions = 0.0, 0, False, []
        for steps in range(1, task.max_steps + 1):  # noqa: B007  (steps is reported)
            t0 = time.perf_counter()
            code = agent.act(frame)
            think += time.perf_counter() - t0
            actions.append(int(codes[code]))
            frame, _, terminated, truncated, _ = env.step(actions[-1])
            if reached(env, task, tolerance):
                success = True
                break
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"success": success, "steps": steps, "seconds_per_action": think / max(steps, 1),
            "actions": actions}


def run_return_episode(
    env_id: str, agent: PlanningAgent, codes: np.ndarray, *, seed: int, size: int, max_steps: int
) -> dict[str, Any]:
    """Play one episode planning for predicted return; the real return and timing."""
    env = make_env(env_id, size=size)
    try:
        frame, _ = env.reset(seed=seed)
        agent.reset()
        total, think, steps = 0.0, 0.0, 0
        for steps in range(1, max_steps + 1):  # noqa: B007
            t0 = time.perf_counter()
            code = agent.act(frame)
            think += time.perf_counter() - t0
            frame, reward, terminated, truncated, _ = env.step(int(codes[code]))
            total += float(reward)
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"return": total, "steps": steps, "seconds_per_action": think / max(steps, 1)}


def evaluate_planner(
    bundle: str | os.PathLike | Bundle,
    *,
    options: WorldOptions | None = None,
    objective: str = "goal",
    planner: dict[str, Any] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    num_tasks: int = 4,
    task: dict[str, Any] | None = None,
    env_id: str | None = None,
    max_steps: int = 200,
) -> dict[str, Any]:
    """Success rate (or return) and seconds per action of a planner; see the module docstring.

    ``options``: the imagined worlds (default: the ``planning`` preset of
    ``worldsim.world_options``); the planner searches over their ``action_type``.
    ``planner``: keyword arguments of :func:`make_planning_agent`; ``task``: of
    :func:`~agents.goal_tasks.make_goal_tasks` (``min_tiles``, ``max_tiles``, ``step_factor``).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not seeds:
        raise ValueError("evaluate_planner: need at least one seed")
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    game = resolve_game(loaded, env_id)
    sim = Simulator(loaded, options if options is not None else preset("planning"))
    action_type = sim.options.action_type
    if action_type == "real":  # the planner's actions are the game's own
        codes = np.arange(sim.num_actions("real") or 0)
    else:  # latent codes reach the game through the binding
        codes = code_table(loaded)
    size = sim.frame_size[0]
    per_seed_score, per_seed_speed, episodes = [], [], []
    agent = None
    for seed in seeds:
        sim.generator.manual_seed(int(seed))  # the imagined frames' noise: a re-run repeats
        agent = make_planning_agent(sim, **{**(planner or {}), "seed": int(seed)})
        if objective == "goal":
            tasks = make_goal_tasks(game, num_tasks, int(seed), size=size, **(task or {}))
            runs = [run_goal_task(t, agent, codes) for t in tasks]
            per_seed_score.append(float(np.mean([r["success"] for r in runs])))
        else:
            runs = [
                run_return_episode(
                    game, agent, codes, seed=int(seed), size=size, max_steps=max_steps
                )
            ]
            per_seed_score.append(float(runs[0]["return"]))
        steps = sum(r["steps"] for r in runs)
        per_seed_speed.append(
            sum(r["seconds_per_action"] * r["steps"] for r in runs) / max(steps, 1)
        )
        episodes += runs
    assert agent is not None
    key = "plan_success" if objective == "goal" else "plan_return"
    p = agent.planner
    return {
        "game": game,
        "objective": objective,
        "method": p.method,
        "action_type": action_type,
        key: summarize(per_seed_score),
        "plan_seconds_per_action": summarize(per_seed_speed),
        "plan_budget": {
            "population": p.population,
            "iterations": p.iterations,
            "horizon": p.horizon,
            "replan_every": agent.replan_every,
            "calls_per_plan": p.calls_per_plan,
            "calls_per_action": agent.calls_per_action,
        },
        "episodes": episodes,
    }


__all__ = [
    "GoalObjective",
    "OBJECTIVES",
    "evaluate_planner",
    "make_planning_agent",
    "run_goal_task",
    "run_return_episode",
]
