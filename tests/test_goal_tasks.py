"""Goal tasks: deterministic per seed, solvable, judged from the game state; the planner side
receives frames only (no game state) and plans through a tiny untrained bundle."""

from __future__ import annotations

import numpy as np
import pytest

from agents.goal_tasks import make_goal_tasks, reached
from agents.plan_eval import evaluate_planner, run_goal_task


def test_task_set_is_deterministic_per_seed():
    a = make_goal_tasks(num_tasks=3, seed=7, size=32)
    b = make_goal_tasks(num_tasks=3, seed=7, size=32)
    c = make_goal_tasks(num_tasks=3, seed=8, size=32)
    assert a == b
    assert all(np.array_equal(x.goal_frame, y.goal_frame) for x, y in zip(a, b))
    assert [t.level_seed for t in a] != [t.level_seed for t in c]
    for t in a:
        assert t.goal_frame.shape == (32, 32, 3) and t.goal_frame.dtype == np.uint8
        assert 4 <= t.path_moves <= 6 and t.max_steps == 3 * t.path_moves
        assert t.start_tile != t.goal_tile
    with pytest.raises(ValueError, match="no goal tasks"):
        make_goal_tasks("worldsim/Paddle-v0")


class Spy:
    """A stand-in for PlanningAgent that records everything it is handed."""

    def __init__(self, actions):
        self.actions, self.seen = list(actions), []

    def reset(self):
        self.seen.append(("reset",))

    def set_goal(self, goal):
        self.seen.append(("goal", goal))

    def act(self, frame):
        self.seen.append(("act", frame))
        return self.actions.pop(0) if self.actions else 0


def test_success_is_judged_from_the_game_and_the_agent_sees_frames_only():
    task = make_goal_tasks(num_tasks=1, seed=3, size=32)[0]
    env = task.make_env()
    env.reset(seed=task.level_seed)
    path = env.unwrapped.path_to(task.goal_tile)
    assert len(path) == task.path_moves
    assert not reached(env, task)
    codes = np.arange(5)  # identity binding: code c plays real action c
    spy = Spy(path)
    out = run_goal_task(task, spy, codes, tolerance=0)
    assert out["success"] and out["steps"] == len(path)
    # The default tolerance (4 px, one move) counts the agent half a tile short as there.
    assert run_goal_task(task, Spy(path), codes)["steps"] == len(path) - 1
    kinds = [s[0] for s in spy.seen]
    assert kinds[:2] == ["reset", "goal"] and kinds[2:] == ["act"] * len(path)
    for entry in spy.seen[1:]:  # the goal image and the frames: uint8 images, nothing else
        assert len(entry) == 2 and isinstance(entry[1], np.ndarray)
        assert entry[1].dtype == np.uint8 and entry[1].shape == (32, 32, 3)
    idle = run_goal_task(task, Spy([]), codes)  # NOOP forever: never there
    assert not idle["success"] and idle["steps"] == task.max_steps


@pytest.mark.parametrize("action_type", ["latent", "real"])
def test_plan_eval_reports_success_budget_and_speed(tmp_path, action_type):
    from agents.planners import SimulatorModel
    from worldsim.bundle import load_bundle
    from worldsim.simulator import Simulator
    from worldsim.testing import untrained_bundle
    from worldsim.world_options import WorldOptions

    bundle = untrained_bundle(tmp_path / "b", "tiny", action_space={"type": "discrete", "n": 5})
    options = WorldOptions(sampler_steps=1, action_type=action_type)
    model = SimulatorModel(Simulator(load_bundle(bundle), options))
    assert model.num_actions == (5 if action_type == "real" else load_bundle(bundle).num_latent_actions)
    planner = {
        "method": "cem",
        "horizon": 2,
        "population": 4,
        "iterations": 1,
        "elites": 2,
        "replan_every": 2,
    }
    res = evaluate_planner(bundle, options=options, planner=planner, seeds=(0, 1, 2), num_tasks=1)
    assert res["game"] == "worldsim/Scroller-v0" and res["action_type"] == action_type
    assert res["plan_success"]["n"] == 3 and 0 <= res["plan_success"]["mean"] <= 1
    assert res["plan_budget"]["calls_per_plan"] == 8 and res["plan_budget"]["calls_per_action"] == 4
    assert res["plan_seconds_per_action"]["mean"] > 0
    # seeded: a re-run plays the same actions (the planner's and the imagined frames' noise)
    again = evaluate_planner(bundle, options=options, planner=planner, seeds=(0, 1, 2), num_tasks=1)
    assert [e["actions"] for e in again["episodes"]] == [e["actions"] for e in res["episodes"]]
    other = evaluate_planner(bundle, options=options, planner=planner, seeds=(3, 4, 5), num_tasks=1)
    assert [e["actions"] for e in other["episodes"]] != [e["actions"] for e in res["episodes"]]


def test_plan_and_agent_commands_compose_and_run(tmp_path):
    import json

    from worldsim.cli import run_command
    from worldsim.config import ConfigError
    from worldsim.testing import untrained_bundle

    bundle = untrained_bundle(tmp_path / "b", "tiny", action_space={"type": "discrete", "n": 5})
    out = tmp_path / "plan.json"
    overrides = [
        f"bundle={bundle}",
        "planner=mppi",
        "num_tasks=1",
        "seeds=[0]",
        "world.sampler_steps=1",
        "planner.population=4",
        "planner.elites=2",
        "planner.iterations=1",
        "planner.horizon=2",
        f"out={out}",
    ]
    res = run_command("plan", overrides)
    assert (
        res["method"] == "mppi"
        and json.loads(out.read_text())["plan_budget"]["calls_per_plan"] == 8
    )
    with pytest.raises(ConfigError, match="modes"):
        run_command("agent", [f"bundle={bundle}", "mode=fly"])
    with pytest.raises(ConfigError, match="bundle"):
        run_command("plan", [f"bundle={tmp_path}"])


def test_the_game_answers_the_goal_questions():
    """Scroller says which tiles lie n moves from its start, how to walk there and where that is."""
    from envs import make_env
    from envs.scroller import TILE, WALL

    env = make_env("worldsim/Scroller-v0", size=32, num_enemies=0)
    env.reset(seed=5)
    game = env.unwrapped
    tiles = game.tiles_within(2, 3)
    assert len(tiles) > 0
    for tile in map(tuple, tiles[:4]):
        path = game.path_to(tile)
        assert 2 * 2 <= len(path) <= 3 * 2  # two steps per tile move
        assert game.tile_position(tile) == (tile[1] * TILE, tile[0] * TILE)
    with pytest.raises(ValueError, match="cannot be walked"):
        game.path_to(tuple(int(v) for v in np.argwhere(game.grid == WALL)[0]))
