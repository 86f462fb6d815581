"""CEM and MPPI: the model-call budget is exact, and on a hand-made objective whose optimum is
known they find it; the Simulator adapter plans on a tiny untrained bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.planners import (
    GoalObjective,
    PlanningAgent,
    RewardObjective,
    SequencePlanner,
    SimulatorModel,
)
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import WorldOptions

TARGET = torch.tensor([2, 0, 3, 1, 1])


class FakeModel:
    """A known world: the reward of step t is 1 when a_t == TARGET[t]; the latent is the
    position on a line (action 1 moves +1, action 2 moves -1, others stay). Counts its calls."""

    num_actions = 4

    def __init__(self) -> None:
        self.calls = 0
        self.contexts: list[np.ndarray] = []

    def set_context(self, frames, population):
        self.contexts.append(frames)
        self.population = population

    def rollout(self, actions):
        assert actions.shape[0] == self.population
        self.calls += actions.numel()
        rewards = (actions == TARGET[: actions.shape[1]]).float()
        delta = (actions == 1).long() - (actions == 2).long()
        pos = delta.cumsum(1).float()  # p t
        return pos[:, :, None], rewards

    def encode(self, frame):
        return torch.tensor([float(frame[0, 0, 0])])  # the goal position, written in a pixel


CONTEXT = np.zeros((1, 8, 8, 3), np.uint8)


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_planner_finds_the_known_optimum_within_budget(method):
    model = FakeModel()
    planner = SequencePlanner(
        model,
        RewardObjective(),
        method=method,
        horizon=5,
        population=64,
        iterations=6,
        elites=6,
        alpha=0.8,
        temperature=0.05,
        seed=0,
    )
    result = planner.plan(CONTEXT)
    assert result.actions.tolist() == TARGET.tolist()
    assert result.score == pytest.approx(5.0)
    # Exactly population x iterations x horizon model calls, counted by the model itself.
    assert result.model_calls == model.calls == 64 * 6 * 5 == planner.calls_per_plan
    assert torch.allclose(result.probs.sum(-1), torch.ones(5))


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_goal_objective_reaches_the_goal_latent(method):
    model = FakeModel()
    goal = np.full((8, 8, 3), 3, np.uint8)  # position 3 on the line
    planner = SequencePlanner(
        model, None, method=method, horizon=4, population=64, iterations=5, elites=6, seed=1
    )
    agent = PlanningAgent(planner, context_frames=2, replan_every=4)
    agent.set_goal(goal)
    assert isinstance(planner.objective, GoalObjective)
    actions = [agent.act(np.zeros((8, 8, 3), np.uint8)) for _ in range(4)]
    assert np.cumsum([(a == 1) - (a == 2) for a in actions]).max() >= 3
    # Replanning every 4 steps: one plan for 4 actions, so budget per action = plan / 4.
    assert (
        model.calls == planner.calls_per_plan
        and agent.calls_per_action == planner.calls_per_plan / 4
    )
    agent.act(np.zeros((8, 8, 3), np.uint8))
    assert model.calls == 2 * planner.calls_per_plan
    assert model.contexts[-1].shape == (2, 8, 8, 3)  # the last two frames form the context


def test_planner_arguments_are_checked():
    with pytest.raises(ValueError, match="method"):
        SequencePlanner(FakeModel(), RewardObjective(), method="random")
    with pytest.raises(ValueError, match="elites"):
        SequencePlanner(FakeModel(), RewardObjective(), population=4, elites=8)
    agent = PlanningAgent(
        SequencePlanner(FakeModel(), RewardObjective(), horizon=3, population=4, elites=2)
    )
    with pytest.raises(ValueError, match="uint8"):
        agent.act(np.zeros((8, 8, 3), np.float32))


def test_simulator_model_plans_with_a_batched_population(tmp_path):
    path = untrained_bundle(tmp_path / "b", "tiny", action_space={"type": "discrete", "n": 5})
    sim = load_simulator(path, WorldOptions(sampler_steps=1))
    model = SimulatorModel(sim)
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    planner = SequencePlanner(
        model, RewardObjective(0.9), horizon=3, population=6, iterations=2, elites=2
    )
    result = planner.plan(frames)  # 64x64 frames are resized to the bundle's 32x32
    assert sim.batch == 6 and result.model_calls == 36
    assert result.actions.shape == (3,) and 0 <= int(result.actions.max()) < model.num_actions
    # Every iteration starts from the same context: the same sequences score the same.
    seq = torch.zeros(6, 3, dtype=torch.long)
    sim.generator.manual_seed(0)
    a = model.rollout(seq)[0]
    sim.generator.manual_seed(0)
    b = model.rollout(seq)[0]
    assert torch.equal(a, b) and a.shape == (6, 3, *sim.latent_shape)
    goal = model.encode(frames[0])
    assert goal.shape == sim.latent_shape
    scores = GoalObjective(goal)(a, torch.zeros(6, 3))
    assert scores.shape == (6,) and (scores <= 0).all()
