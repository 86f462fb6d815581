"""Continuous planners: coloured noise has unit variance and is smoother as beta grows; CEM and
MPPI find a known optimum in a Box within an exact budget; a Box world plans through the
Simulator and the agent returns actions inside the Box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.gaussian_planner import GaussianPlanner, coloured_noise
from agents.plan_eval import make_planning_agent
from agents.planners import PlanningAgent, RewardObjective, SequencePlanner
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions

TARGET = torch.tensor([[0.5, -2.0], [1.5, -1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 1.5]])  # [t, a]


class FakeBoxModel:
    """Actions in Box([0, -2], [2, 2]); the reward of step t is -|a_t - TARGET[t]|^2 and the
    latent is the action itself. Counts its calls."""

    action_space = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([2.0, 2.0], np.float32))
    num_actions = None

    def __init__(self) -> None:
        self.calls, self.seen = 0, []

    def set_context(self, frames, population):
        self.population = population

    def rollout(self, actions):
        assert actions.shape[0] == self.population and actions.dtype == torch.float32
        self.calls += actions.shape[0] * actions.shape[1]
        self.seen.append(actions)
        return actions, -(actions - TARGET[: actions.shape[1]]).pow(2).sum(-1)

    def encode(self, frame):
        return torch.zeros(2)


CONTEXT = np.zeros((1, 8, 8, 3), np.uint8)


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_coloured_noise_has_unit_variance_and_beta_makes_it_smooth(beta):
    n = coloured_noise(beta, (20000, 8, 2), torch.Generator().manual_seed(0))
    assert n.shape == (20000, 8, 2)
    torch.testing.assert_close(n.std(dim=(0, 2)), torch.ones(8), atol=0.02, rtol=0)
    lag1 = float((n[:, 1:] * n[:, :-1]).mean())
    if beta == 0:
        assert abs(lag1) < 0.03
    else:
        assert lag1 > 0.4  # neighbouring steps move together


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_gaussian_planner_finds_the_known_optimum_within_budget(method):
    model = FakeBoxModel()
    planner = GaussianPlanner(model, RewardObjective(), method=method, horizon=5, population=128,
                              iterations=8, elites=12, alpha=0.8, temperature=0.5, seed=0)
    result = planner.plan(CONTEXT)
    assert result.actions.shape == (5, 2) and result.actions.dtype == torch.float32
    torch.testing.assert_close(result.actions, TARGET, atol=0.3, rtol=0)
    assert result.model_calls == model.calls == 128 * 8 * 5 == planner.calls_per_plan
    # every action the model saw lies in the Box
    seen = torch.cat(model.seen)
    assert (seen >= torch.tensor([0.0, -2.0])).all() and (seen <= torch.tensor([2.0, 2.0])).all()
    # a far worse plan from white noise and a single iteration: the search is what finds it
    blind = GaussianPlanner(FakeBoxModel(), RewardObjective(), method=method, horizon=5,
                            population=128, iterations=1, elites=12, seed=0)
    assert blind.plan(CONTEXT).score < result.score - 0.5


def test_gaussian_planner_warm_starts_from_the_shifted_plan():
    model = FakeBoxModel()
    planner = GaussianPlanner(model, RewardObjective(), horizon=5, population=64, iterations=4,
                              elites=8, seed=0)
    agent = PlanningAgent(planner, context_frames=1, replan_every=2)
    first = agent.act(np.zeros((8, 8, 3), np.uint8))
    assert isinstance(first, np.ndarray) and first.dtype == np.float32 and first.shape == (2,)
    assert planner.warm and model.calls == planner.calls_per_plan
    agent.act(np.zeros((8, 8, 3), np.uint8))  # the second action of the same plan
    assert model.calls == planner.calls_per_plan
    mean_before = planner._mean.clone()
    agent.act(np.zeros((8, 8, 3), np.uint8))  # replans, starting from the mean shifted by 2
    assert model.calls == 2 * planner.calls_per_plan
    assert planner._mean.shape == mean_before.shape
    agent.reset()
    assert not planner.warm


def test_gaussian_planner_arguments_are_checked():
    with pytest.raises(ValueError, match="Box"):
        GaussianPlanner(type("M", (), {"action_space": spaces.Discrete(3)})(), RewardObjective())
    unbounded = type("M", (), {"action_space": spaces.Box(-np.inf, np.inf, (2,), np.float32)})()
    with pytest.raises(ValueError, match="bounded"):
        GaussianPlanner(unbounded, RewardObjective())
    with pytest.raises(ValueError, match="min_std"):
        GaussianPlanner(FakeBoxModel(), RewardObjective(), init_std=0.1, min_std=0.2)


def test_a_box_world_plans_through_the_simulator(tmp_path):
    box = {"type": "box", "shape": [2], "low": [-1, -1], "high": [1, 1]}
    path = untrained_bundle(tmp_path / "b", "tiny", action_source="real", action_space=box,
                            heads=False)
    sim = load_simulator(path, WorldOptions(sampler_steps=1, action_type="real"))
    agent = make_planning_agent(sim, horizon=3, population=6, iterations=2, elites=2,
                                replan_every=1, seed=0)
    assert isinstance(agent.planner, GaussianPlanner) and sim.batch == 1
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    agent.set_goal(frame)
    action = agent.act(frame)
    assert sim.batch == 6 and agent.planner.model_calls == 36
    assert action.shape == (2,) and (np.abs(action) <= 1).all()
    # a discrete world still gets the categorical planner
    discrete = untrained_bundle(tmp_path / "d", "tiny", action_space={"type": "discrete", "n": 5})
    other = make_planning_agent(load_simulator(discrete, WorldOptions(sampler_steps=1)),
                                population=4, elites=2)
    assert isinstance(other.planner, SequencePlanner)
