"""The ``worldsim`` command on bad input: one ``error:`` line, exit 2, nothing of the user's
touched; real bugs keep their traceback. Commands run in-process through ``cli.main``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from worldsim.cli import main
from worldsim.data import Episode, EpisodeStore, ShardError, VideoImportError


def _snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_info_on_a_folder_that_is_not_a_store_changes_nothing(tmp_path, capsys):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8 a photo")
    code, _, err = run(capsys, "info", f"store={folder}")
    assert code == 2
    assert "holiday is not an episode store" in one_error_line(err)
    assert _snapshot(folder) == {"beach.jpg": b"\xff\xd8 a photo"}  # no index.json written


def _three_episode_store(root) -> None:
    store = EpisodeStore(root)
    for seed in range(3):
        frames = np.random.default_rng(seed).integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
        store.append(Episode(frames, metadata={"source": f"test/{seed}"}))


@pytest.mark.parametrize("drop_index", [False, True])
def test_info_names_a_truncated_shard_and_keeps_the_rest_reachable(tmp_path, capsys, drop_index):
    _three_episode_store(tmp_path / "s")
    shard = tmp_path / "s" / "shard_000001.npz"
    shard.write_bytes(shard.read_bytes()[:200])
    if drop_index:
        (tmp_path / "s" / "index.json").unlink()
    before = _snapshot(tmp_path / "s")
    code, out, err = run(capsys, "info", f"store={tmp_path / 's'}")
    assert code == 0 and _snapshot(tmp_path / "s") == before  # read-only
    warning = [line for line in err.splitlines() if "shard_000001.npz" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "corrupt shard" in warning[0] and "other 2 shard(s) are reachable" in warning[0]
    assert re.search(r"\bepisodes\s+\S\s+2\s", out)  # the table: 2 episodes reachable


def test_info_names_a_damaged_shard_that_kept_its_size(tmp_path, capsys):
    _three_episode_store(tmp_path / "s")
    shard = tmp_path / "s" / "shard_000002.npz"
    data = bytearray(shard.read_bytes())
    data[-60:-40] = bytes(20)  # the zip's central directory
    shard.write_bytes(bytes(data))
    code, _, err = run(capsys, "info", f"store={tmp_path / 's'}")
    assert code == 0 and "shard_000002.npz: corrupt shard" in err
    assert err.startswith("warning: ")


def test_collect_type_errors_name_the_key(tmp_path, capsys):
    code, _, err = run(capsys, "collect", "episodes=abc", f"out={tmp_path / 'o'}")
    assert code == 2
    assert one_error_line(err) == "error: episodes='abc': expected an integer >= 0"
    code, _, err = run(capsys, "collect", "sticky_prob=2", f"out={tmp_path / 'o'}")
    assert code == 2 and "sticky_prob=2: expected a number in [0.0, 1.0]" in one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_misspelt_key_suggests_the_closest_key_not_a_plus(capsys):
    for argv in (["episodez=3"], ["+episodez=3"]):
        code, _, err = run(capsys, "collect", *argv)
        line = one_error_line(err)
        assert code == 2 and "+episodez" not in line
        assert "unknown key 'episodez'; did you mean 'episodes'?" in line
        assert "Unknown keys are refused" in line
    code, _, err = run(capsys, "train", "data.batch_szie=3")
    assert code == 2 and "did you mean 'data.batch_size'?" in one_error_line(err)


def test_plus_still_adds_fields_that_are_checked_later(capsys):
    code, out, _ = run(capsys, "collect", "+env.kwargs.difficulty=2", "--cfg")
    assert code == 0 and "difficulty: 2" in out
    code, out, _ = run(capsys, "train", "+autoencoder.latent_channels=2", "--cfg")
    assert code == 0 and "latent_channels: 2" in out


def test_collect_unknown_game_is_one_line_and_leaves_no_store(tmp_path, capsys):
    code, _, err = run(capsys, "collect", "env=Nope/NotAGame-v0", f"out={tmp_path / 'o'}")
    line = one_error_line(err)
    assert code == 2 and "'Nope/NotAGame-v0'" in line and "pprint_registry" in line
    assert not (tmp_path / "o").exists()


def test_collect_videos_from_an_empty_folder(tmp_path, capsys):
    (tmp_path / "clips").mkdir()
    code, _, err = run(capsys, "collect", f"videos={tmp_path / 'clips'}", f"out={tmp_path / 'o'}")
    line = one_error_line(err)
    assert code == 2 and "clips: no video files" in line and ".mp4" in line and ".gif" in line
    assert not (tmp_path / "o").exists()


def test_collect_prints_a_summary(tmp_path, capsys):
    out_dir = tmp_path / "o"
    code, out, _ = run(capsys, "collect", "episodes=2", "env.size=16", "max_steps=5",
                       "num_envs=1", "progress=false", f"out={out_dir}")
    assert code == 0
    assert f"collect: 2 episodes, 12 frames written to {out_dir}; it holds 2 episodes" in out


@pytest.mark.parametrize(
    "error",
    [
        ShardError("data/s/shard_000004.npz", "corrupt shard (BadZipFile: File is not a zip)"),
        VideoImportError("videos/a.mp4", "truncated or damaged"),
    ],
)
def test_user_errors_print_one_line(monkeypatch, capsys, error):
    def command(cfg):
        raise error

    monkeypatch.setattr("worldsim.cli.resolve", lambda name: command)
    code, _, err = run(capsys, "info", "store=x")
    assert code == 2 and one_error_line(err) == f"error: {error}"


def test_training_diverged_prints_one_line(monkeypatch, capsys):
    from worldsim.training.base import TrainingDiverged

    def command(cfg):
        raise TrainingDiverged("loss is nan at step 3", since=3)

    monkeypatch.setattr("worldsim.cli.resolve", lambda name: command)
    code, _, err = run(capsys, "info", "store=x")
    assert code == 2 and "loss is nan at step 3" in one_error_line(err)


def test_bugs_keep_their_traceback(monkeypatch):
    def command(cfg):
        raise ValueError("operands could not be broadcast together")  # not an input check

    monkeypatch.setattr("worldsim.cli.resolve", lambda name: command)
    with pytest.raises(ValueError, match="broadcast"):
        main(["info", "store=x"])
