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


@pytest.mark.parametrize("group", ["env", "data", "autoencoder", "trainer", "experiment"])
def test_every_group_option_composes(group):
    options = group_options(group)
    assert options, f"configs/{group}/ is empty"
    for option in options:
        for command in COMMANDS:
            cfg = compose(command, [f"{group}={option}"])
            assert cfg is not None


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
