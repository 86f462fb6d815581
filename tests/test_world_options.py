"""WorldOptions: one frozen dataclass of how a world runs, checked on construction, handed whole
to the Simulator, the envs, the agents, the planners and the commands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from worldsim.bundle import load_bundle
from worldsim.config import ConfigError, compose, world_options
from worldsim.env import WorldModelEnv, WorldModelVectorEnv
from worldsim.simulator import Simulator, load_simulator
from worldsim.testing import untrained_bundle
from worldsim.world_options import FIELDS, PRESETS, WorldOptions, preset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = untrained_bundle(
        tmp_path_factory.mktemp("options") / "w", action_space={"type": "discrete", "n": 3}
    )
    return load_bundle(path)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("obs_type", "rgb", "one of ('pixels', 'latents')"),
        ("action_type", "codes", "one of ('latent', 'real')"),
        ("termination", "always", "one of ('threshold', 'sample')"),
        ("precision", "fp8", "one of ('float32', 'bfloat16', 'float16')"),
        ("sampler_steps", 0, "an integer >= 1"),
        ("sampler_steps", 2.0, "an integer >= 1"),
        ("context_noise", 1.5, "a number in [0, 1]"),
        ("cfg_scale", float("inf"), "a finite number (1 = no guidance)"),
        ("termination_scale", 0.0, "a finite number > 0"),
        ("termination_scale", float("nan"), "a finite number > 0"),
        ("autocast", "yes", "true or false"),
        ("device", "gpu", "cpu, cuda, cuda:N, mps or xpu"),
        ("chunk", 0, "an integer >= 1, or None"),
        ("window", -3, "an integer >= 1, or None"),
        ("seed", 1.5, "an integer, or None"),
    ],
)
def test_a_bad_field_is_refused_on_one_line_naming_it(field, value, allowed):
    with pytest.raises(ValueError) as err:
        WorldOptions(**{field: value})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"WorldOptions.{field} must be {allowed}, got {value!r}")


def test_options_are_frozen_and_replace_checks_names():
    opts = WorldOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.sampler_steps = 2  # type: ignore[misc]
    assert opts.replace(sampler_steps=2) == WorldOptions(sampler_steps=2)
    with pytest.raises(TypeError, match=r"unknown world option\(s\) \['sampler_stpes'\]"):
        opts.replace(sampler_stpes=2)
    with pytest.raises(ValueError, match="sampler_steps must be"):
        opts.replace(sampler_steps=0)
    assert WorldOptions(precision="bfloat16").dtype.__repr__() == "torch.bfloat16"
    assert preset("imagination", sampler_steps=2) == WorldOptions(
        obs_type="latents", termination="sample", sampler_steps=2
    )
    with pytest.raises(ValueError, match="unknown world preset"):
        preset("fast")


def test_each_default_has_one_home():
    """``sampler_steps: int = 4`` and its kind are written once, in worldsim/world_options.py."""
    defaults = {f.name: f.default for f in dataclasses.fields(WorldOptions)}
    patterns = [
        rf"\bsampler_steps: int = {defaults['sampler_steps']}\b",
        r"\btermination: str = \"(threshold|sample)\"",
        rf"\btermination_scale: float = {defaults['termination_scale']}\b",
        r"\bprecision: str = \"float32\"",
    ]
    for pattern in patterns:
        homes = [
            str(p.relative_to(ROOT))
            for folder in ("worldsim", "agents", "envs")
            for p in (ROOT / folder).rglob("*.py")
            if re.search(pattern, p.read_text())
        ]
        assert homes == ["worldsim/world_options.py"], (pattern, homes)


def test_the_simulator_takes_one_options_object_and_uses_its_defaults(bundle):
    sim = Simulator(bundle)
    assert sim.options == WorldOptions()
    assert (sim.device.type, sim.dtype, sim.window) == ("cpu", WorldOptions().dtype,
                                                        bundle.dynamics.cfg.context_window)
    opts = WorldOptions(sampler_steps=2, window=3, chunk=5, seed=7, precision="bfloat16")
    sim = load_simulator(bundle, opts, batch=2)
    assert sim.options is opts and (sim.window, sim.chunk, sim.batch) == (3, 5, 2)
    assert next(sim.dynamics.parameters()).dtype == opts.dtype
    with pytest.raises(TypeError, match="options must be a WorldOptions"):
        Simulator(bundle, {"sampler_steps": 2})


def test_envs_take_options_whole_or_as_gymnasium_keyword_arguments(bundle):
    env = WorldModelEnv(bundle)
    assert env.sim.options == WorldOptions() and env.obs_type == "pixels"
    opts = WorldOptions(obs_type="latents", action_type="real", sampler_steps=2)
    env = WorldModelEnv(bundle, options=opts)
    assert env.sim.options == opts and env.observation_space.shape == (4, 8, 8)
    assert env.action_space.n == 3  # the game's actions
    venv = WorldModelVectorEnv(2, bundle, options=opts, termination="sample")
    assert venv.sim.options == opts.replace(termination="sample")
    with pytest.raises(TypeError, match="unknown world option"):
        WorldModelEnv(bundle, sampler_stpes=2)


def test_agents_and_planners_run_their_presets_unless_given_options(bundle, monkeypatch):
    from agents import plan_eval
    from agents.imagination import ImaginationSource

    source = ImaginationSource(bundle, 2)
    assert source.options == PRESETS["imagination"] == source.env.sim.options
    assert source.options.termination == "sample" and source.options.obs_type == "latents"
    mine = WorldOptions(obs_type="latents", sampler_steps=1)
    assert ImaginationSource(bundle, 2, mine).env.sim.options == mine

    seen = []

    class Stop(Exception):
        pass

    def spy(loaded, options):
        seen.append(options)
        raise Stop

    monkeypatch.setattr(plan_eval, "resolve_game", lambda loaded, env_id: "worldsim/Scroller-v0")
    monkeypatch.setattr(plan_eval, "Simulator", spy)
    for given in (None, mine):
        with pytest.raises(Stop):
            plan_eval.evaluate_planner(bundle, options=given)
    assert seen == [PRESETS["planning"], mine]


def test_commands_world_node_holds_the_dataclass_defaults():
    """Each command's ``world`` node is a preset of WorldOptions, every field present, the
    defaults coming from the dataclass; a misspelt field or a bad value fails naming it."""
    expected = {
        "play": WorldOptions(seed=0),
        "rollout": WorldOptions(seed=0),
        "plan": PRESETS["planning"],
        "agent": PRESETS["imagination"],
        "quickstart": WorldOptions(seed=0),
        "train": WorldOptions(),
    }
    for command, want in expected.items():
        cfg = compose(command, ["bundle=x"] if command in ("play", "rollout", "plan", "agent") else [])
        assert set(cfg.world) == set(FIELDS)
        assert world_options(cfg) == want, command
    cfg = compose("play", ["bundle=x", "world.sampler_steps=2", "world.device=cuda", "seed=3"])
    assert world_options(cfg) == WorldOptions(sampler_steps=2, device="cuda", seed=3)
    assert world_options(compose("train", ["experiment=tiny"])).sampler_steps == 2
    with pytest.raises(ConfigError, match="sampler_stpes"):
        compose("play", ["bundle=x", "world.sampler_stpes=2"])
    with pytest.raises(ConfigError, match="sampler_steps"):
        compose("play", ["bundle=x", "world.sampler_steps=two"])
    with pytest.raises(ConfigError, match=r"^world.termination must be one of"):
        world_options(compose("play", ["bundle=x", "world.termination=always"]))
