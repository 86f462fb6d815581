"""benchmarks/bench_agents.py: the agents results book, per game, over training seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_agents", ROOT / "benchmarks" / "bench_agents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(path: Path) -> Path:
    psnr = {"1": 25.0, "2": 22.0, "4": 20.0, "8": 18.5, "16": 17.0}
    copy = {"1": 24.0, "2": 21.5, "4": 20.5, "8": 18.0, "16": 16.5}
    path.write_text(json.dumps({
        "rollout_psnr": psnr, "copy_last_psnr": copy, "delta_psnr_4": 2.5, "total_seconds": 600.0,
        "heads_on_rollouts": {"readout": {"coin": {"precision": 0.9, "recall": 0.7}},
                              "after": {"generated": {}}},
    }))
    return path


def test_results_book_holds_the_contract_over_training_seeds(tmp_path):
    bench = _bench()
    out = tmp_path / "agents.json"
    argv = ["--updates", "2", "--horizon", "3", "--num-envs", "2", "--episodes", "1", "--seeds", "0",
            "--max-steps", "4", "--planner", "none", "--train-seeds", "0", "1", "--world-frames", "5",
            "--world-metrics", str(_metrics(tmp_path / "metrics.json")), "--work", str(tmp_path / "w"),
            "--out", str(out)]
    results = bench.main(argv)
    book = json.loads(out.read_text())
    assert list(book) == [results["game"]] == ["worldsim/Scroller-v0"]
    entry = book["worldsim/Scroller-v0"]
    for key in ("imagination_return", "real_return", "random_return", "sample_matched_return"):
        assert entry[key]["n"] == 2, key  # one figure per training seed
        values = [seed[key]["mean"] for seed in entry["per_seed"]]
        assert entry[key]["mean"] == pytest.approx(sum(values) / 2)
    assert entry["sample_matched_return"]["updates"] == 1  # ceil(5 / (2 worlds x 3 steps))
    assert entry["world"]["rollout_psnr"]["4"] == 20.0 and entry["world"]["copy_last_psnr"]["8"] == 18.0
    assert (entry["world"]["reward_recall"], entry["world"]["reward_precision"]) == (0.7, 0.9)
    assert entry["world"]["reward_source"] == "readout"
    assert entry["world_seconds"] == 600.0 and entry["agent_seconds_per_seed"] > 0
    assert entry["command"].startswith("python benchmarks/bench_agents.py --updates 2")
    assert out.with_suffix(".png").stat().st_size > 0
    # a second game's results join the book; the first game's stay
    book["worldsim/Paddle-v0"] = dict(entry, game="worldsim/Paddle-v0")
    out.write_text(json.dumps(book))
    assert set(bench.read_results(out)) == {"worldsim/Scroller-v0", "worldsim/Paddle-v0"}


def test_results_book_refuses_a_foreign_file(tmp_path):
    bench = _bench()
    foreign = tmp_path / "other.json"
    foreign.write_text(json.dumps({"rows": [1, 2]}))
    with pytest.raises(SystemExit, match="not an agents results file"):
        bench.read_results(foreign)
    assert json.loads(foreign.read_text()) == {"rows": [1, 2]}
    old = tmp_path / "old.json"  # the one-game layout becomes that game's entry
    old.write_text(json.dumps({"game": "worldsim/Scroller-v0", "imagination_return": {"mean": 1.0}}))
    assert list(bench.read_results(old)) == ["worldsim/Scroller-v0"]
