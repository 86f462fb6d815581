"""The keyboard viewer: the controller logic, and the pygame loop driven headless by events."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from worldsim.data import Episode, EpisodeStore
from worldsim.simulator import load_simulator
from worldsim.testing import untrained_bundle
from worldsim.viewer import PlayController, Viewer, load_episode, meaning_tokens
from worldsim.world_options import WorldOptions

ATARI = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "RIGHTFIRE"]
DISCRETE3 = {"type": "discrete", "n": 3, "meanings": ["NOOP", "LEFT", "RIGHT"]}


def test_meanings_map_to_held_keys():
    assert meaning_tokens("UPRIGHT") == {"UP", "RIGHT"} and meaning_tokens("NOOP") == set()
    ctl = PlayController(num_latent=4, meanings=ATARI)
    assert ctl.action() == ("real", 0)  # nothing held: NOOP
    ctl.key_down("up")
    ctl.key_down("d")
    assert ctl.action() == ("real", 6)  # UPRIGHT
    ctl.key_up("up")
    ctl.key_down("space")
    assert ctl.action() == ("real", 8)  # RIGHTFIRE
    ctl.key_up("d")
    ctl.key_up("space")
    assert ctl.key_down("3") == "latent" and ctl.action() == ("latent", 2)
    assert ctl.key_down("9") is None  # code 8 does not exist with 4 codes
    ctl.key_down("left")
    assert ctl.action() == ("real", 4) and "LEFT" in ctl.hud()


def test_pause_single_step_and_flags():
    ctl = PlayController(num_latent=8)
    assert ctl.should_step()
    ctl.key_down("p")
    assert not ctl.should_step()
    ctl.key_down("n")
    ctl.key_down("n")
    assert [ctl.should_step() for _ in range(3)] == [True, True, False]
    assert ctl.key_down("v") == "record" and "REC" in ctl.hud() and "PAUSED" in ctl.hud()
    assert ctl.key_down("x") is None and "episode=" in ctl.hud()
    ctl.on_step(1.5, 0.004)
    ctl.on_step(-0.5, 0.002)
    assert ctl.episode_return == 1.0 and "R +1.00" in ctl.hud() and "2.0 ms" in ctl.hud()
    ctl.key_down("escape")
    assert ctl.quit


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return untrained_bundle(tmp_path_factory.mktemp("viewer") / "w", action_space=DISCRETE3)


def _post(*keys, up=False):
    import pygame

    pygame.init()  # the viewer closes its display when a run ends
    for key in keys:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
        if up:
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))


def test_headless_loop_with_scripted_keys(bundle, tmp_path):
    import pygame

    assert os.environ.get("SDL_VIDEODRIVER") == "dummy"
    sim = load_simulator(bundle, WorldOptions(seed=0), history=8)
    viewer = Viewer(sim, scale=2, fps=1000, record_dir=tmp_path)
    _post(pygame.K_2, pygame.K_v)  # latent action 1, start recording
    summary = viewer.run(max_frames=6)
    assert summary["frames"] == 6 and summary["steps"] == 6
    assert len(summary["recordings"]) == 1 and os.path.getsize(summary["recordings"][0]) > 0
    assert viewer.ctl.action() == ("latent", 1)

    _post(pygame.K_p, pygame.K_n, pygame.K_RIGHT)  # pause, one step, a game key
    summary = viewer.run(max_frames=4)
    assert summary["steps"] == 1 and viewer.ctl.paused and viewer.ctl.t == 7
    assert viewer.ctl.action() == ("real", 2)
    before = sim.render().clone()
    _post(pygame.K_b)  # rewind the step taken while paused
    viewer.run(max_frames=1)
    assert viewer.ctl.t == 6 and not torch.equal(before, sim.render())
    _post(pygame.K_r)
    viewer.run(max_frames=1)
    assert viewer.ctl.t == 0 and sim.steps_taken.tolist() == [0]


def test_side_by_side_replays_a_real_episode(bundle, tmp_path):
    rng = np.random.default_rng(0)
    ep = Episode(
        frames=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
        actions=np.array([0, 1, 2, 1, 0]),
        metadata={"action_space": DISCRETE3},
    )
    store = EpisodeStore(tmp_path / "store")
    store.append(ep)
    loaded = load_episode(f"{tmp_path / 'store'}:0")
    with pytest.raises(ValueError, match="STORE:INDEX"):
        load_episode("nocolon")
    sim = load_simulator(bundle, WorldOptions(seed=0))
    viewer = Viewer(sim, scale=1, fps=1000, episode=loaded)
    viewer.ctl.side_by_side = True
    summary = viewer.run(max_frames=8)
    # k=2 context frames, then the 4 remaining transitions are replayed; then it pauses.
    assert summary["steps"] == 5 and viewer.ctl.t == 4 and viewer.ctl.paused
    assert viewer.ctl.psnr_db is not None and "PSNR" in viewer.ctl.hud()
    assert viewer.picture().shape == (32, 65, 3)
    assert torch.equal(torch.from_numpy(viewer.real_frame), torch.from_numpy(ep.frames[-1]))
    assert "end of the real episode" in viewer.ctl.message
    # leaving side-by-side (X) resets into the model's own world, running again
    viewer.handle(viewer.ctl.key_down("x"))
    assert not viewer.ctl.side_by_side and not viewer.ctl.paused and viewer.ctl.message == ""
    # back to side-by-side, to the end of the replay, then R: the replay restarts, running
    viewer.handle(viewer.ctl.key_down("x"))
    viewer.run(max_frames=8)
    assert viewer.ctl.paused and viewer.ctl.replay_over
    viewer.handle(viewer.ctl.key_down("r"))
    assert viewer.ctl.side_by_side and not viewer.ctl.paused and viewer.ctl.t == 0
    # a pause the player chose survives a reset
    viewer.handle(viewer.ctl.key_down("p"))
    viewer.handle(viewer.ctl.key_down("r"))
    assert viewer.ctl.paused


def test_play_command_runs_headless(bundle, tmp_path):
    from worldsim.cli import run_command

    summary = run_command(
        "play",
        [f"bundle={bundle}", "max_frames=3", "fps=1000", "scale=1", f"record_dir={tmp_path}"],
    )
    assert summary["frames"] == 3 and summary["steps"] == 3


def test_a_box_game_is_played_with_the_pointer():
    ctl = PlayController(box_dim=2)
    assert ctl.action() == ("box", [0.0, 0.0])
    ctl.point(0.75, 0.0)  # three quarters across, at the top
    assert ctl.action() == ("box", [0.5, -1.0]) and ctl.action_label() == "+0.50 -1.00"
    assert ctl.key_down("right") == "game" and ctl.key_down("down") == "game"
    assert ctl.action()[1] == pytest.approx([0.6, -0.9])
    for _ in range(10):
        ctl.key_down("right")
    assert ctl.action()[1][0] == 1.0  # the pointer stays in the box
    assert PlayController(num_latent=4).action() == ("latent", 0)  # no box: unchanged


def test_headless_loop_moves_a_box_world_with_the_mouse(tmp_path):
    import pygame

    box = {"type": "box", "shape": [2], "low": [0.0, 0.0], "high": [512.0, 512.0]}
    path = untrained_bundle(tmp_path / "b", "tiny", action_source="real", action_space=box,
                            heads=False)
    sim = load_simulator(path, WorldOptions(seed=0, action_type="real"))
    viewer = Viewer(sim, scale=2, fps=1000, record_dir=tmp_path)
    assert viewer.ctl.box_dim == 2
    pygame.init()  # the 32 x 32 world at scale 2: a 64 x 64 picture
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(16, 48), rel=(0, 0), buttons=(0, 0, 0)))
    summary = viewer.run(max_frames=2)
    assert summary["steps"] == 2 and viewer.ctl.action() == ("box", [-0.5, 0.5])
