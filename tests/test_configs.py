"""Every config group composes and instantiates; misspelt keys fail loudly."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from worldsim.cli import commands
from worldsim.config import ConfigError, compose, group_options

COMMANDS = ["collect", "train", "quickstart"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_composes(command):
    cfg = compose(command)
    assert "env" in cfg and "trainer" in cfg and "autoencoder" in cfg


def _leaves(node: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a YAML file's mapping, ``defaults`` left out."""
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("group", ["env", "data", "autoencoder", "trainer", "experiment"])
def test_every_group_option_composes(group):
    """Each option of a group composes into every command, and every value its file sets is the
    one the composed config holds (``???``: a value the user must give, still missing)."""
    from omegaconf import OmegaConf

    from worldsim.config import config_dir

    options = group_options(group)
    assert options, f"configs/{group}/ is empty"
    for option in options:
        values = dict(_leaves(OmegaConf.to_container(OmegaConf.load(config_dir() / group / f"{option}.yaml"))))
        for command in COMMANDS:
            cfg = compose(command, [f"{group}={option}"])
            node = cfg if group == "experiment" else cfg[group]  # experiments are @package _global_
            for key, value in values.items():
                if value == "???":
                    assert OmegaConf.is_missing(OmegaConf.select(node, key.rpartition(".")[0]) if "." in key
                                                else node, key.rpartition(".")[2]), (command, option, key)
                    continue
                got = OmegaConf.select(node, key)
                got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
                assert got == value, (command, f"{group}={option}", key, got, value)


@pytest.mark.parametrize("preset", group_options("autoencoder"))
def test_autoencoder_presets_instantiate(preset):
    from worldsim.autoencoder import AutoencoderConfig

    cfg = compose("train", [f"autoencoder={preset}"])
    assert isinstance(instantiate(cfg.autoencoder), AutoencoderConfig)


def test_misspelt_key_fails_naming_it():
    with pytest.raises(ConfigError, match="epsiodes"):
        compose("collect", ["epsiodes=3"])
    with pytest.raises(ConfigError, match="batch_szie"):
        compose("train", ["data.batch_szie=3"])


def test_unknown_group_option_fails():
    with pytest.raises(ConfigError, match="nonexistent"):
        compose("train", ["trainer=nonexistent"])


def test_unknown_preset_field_fails():
    cfg = compose("train", ["+autoencoder.widht=3"])
    with pytest.raises(Exception, match="widht"):
        instantiate(cfg.autoencoder)


def test_env_shortcut_takes_any_gymnasium_id():
    cfg = compose("collect", ["env=ALE/Pong-v5"])
    assert cfg.env.id == "ALE/Pong-v5"
    assert compose("collect", ["env=breakout"]).env.id == "ALE/Breakout-v5"


def test_experiment_tiny_applies_to_every_command():
    for command in COMMANDS:
        cfg = compose(command, ["experiment=tiny"])
        assert cfg.autoencoder.name == "tiny"
        assert cfg.trainer.max_steps <= 100


def test_commands_registered():
    table = commands()
    for name in ["collect", "train", "quickstart", "info"]:
        assert name in table


def test_bare_word_after_the_command_is_its_mode(capsys):
    from worldsim.cli import main

    assert main(["agent", "eval", "bundle=x", "--cfg"]) == 0
    assert "mode: eval" in capsys.readouterr().out
    assert main(["train", "oops"]) == 2  # train has no mode key: a clear error, exit 2
    assert "mode" in capsys.readouterr().err
