"""Video export: mp4/gif round trips, odd sizes, scaling, compositions, atomic writes."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from worldsim.data import Episode
from worldsim.video import grid, save_episode, save_image_grid, save_video, side_by_side, upscale


def moving_square(t: int = 12, h: int = 16, w: int = 24) -> np.ndarray:
    """A white 4x4 square moving right over a dark background, distinct in every frame."""
    frames = np.full((t, h, w, 3), 30, dtype=np.uint8)
    for i in range(t):
        x = i % (w - 4)
        frames[i, 6:10, x : x + 4] = 255
    return frames


def read_mp4(path) -> tuple[np.ndarray, dict]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = np.stack([np.frombuffer(raw, np.uint8).reshape(h, w, 3) for raw in gen])
    return frames, meta


def read_gif(path) -> np.ndarray:
    from PIL import ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def test_mp4_round_trip_keeps_frame_count_shape_and_content(tmp_path) -> None:
    frames = moving_square()
    path = save_video(torch.from_numpy(frames), tmp_path / "out" / "a.mp4", fps=10)
    back, meta = read_mp4(path)
    assert back.shape == frames.shape and meta["fps"] == 10
    assert np.abs(back.astype(int) - frames).mean() < 6  # lossy, but close
    assert [p.name for p in path.parent.iterdir()] == ["a.mp4"]  # no temp file left


def test_mp4_pads_odd_sizes_and_scales_with_nearest(tmp_path) -> None:
    frames = moving_square(6, 15, 21)
    back, _ = read_mp4(save_video(frames, tmp_path / "odd.mp4"))
    assert back.shape == (6, 16, 22, 3)
    back, _ = read_mp4(save_video(frames, tmp_path / "big.mp4", scale=3))
    assert back.shape == (6, 46, 64, 3)  # 45x63 padded to even


def test_gif_round_trip_is_exact_for_few_colours(tmp_path) -> None:
    frames = moving_square()
    back = read_gif(save_video(frames, tmp_path / "a.gif", fps=10, scale=2))
    assert back.shape == (12, 32, 48, 3)
    np.testing.assert_array_equal(back, upscale(frames, 2))
    with Image.open(tmp_path / "a.gif") as im:
        assert im.info["duration"] == 100


def test_bad_inputs_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unsupported extension '.avi'"):
        save_video(moving_square(), tmp_path / "a.avi")
    with pytest.raises(TypeError, match="uint8"):
        save_video(np.zeros((2, 4, 4, 3), np.float32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        save_video(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="positive integer"):
        upscale(moving_square(), 0)


def test_upscale_is_nearest() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    y = upscale(x, 2)
    assert y.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(y[0, ::2, ::2], x[0])
    np.testing.assert_array_equal(y[0, 1::2, 1::2], x[0])


def test_side_by_side_and_grid_layouts() -> None:
    a, b = moving_square(12), moving_square(8)
    sbs = side_by_side(a, b, sep=2)
    assert sbs.shape == (12, 16, 50, 3)
    np.testing.assert_array_equal(sbs[:, :, :24], a)
    assert (sbs[:, :, 24:26] == 255).all()
    np.testing.assert_array_equal(sbs[11, :, 26:], b[-1])  # the shorter one holds its last frame
    labelled = side_by_side(a, b, labels=["real", "model"], label_height=12)
    assert labelled.shape == (12, 28, 50, 3) and labelled[:, :12].max() == 255
    g = grid([a, a, b], ncols=2, sep=1)
    assert g.shape == (12, 33, 49, 3)
    np.testing.assert_array_equal(g[:, 17:, :24][:8], b)
    assert (g[:, 17:, 25:] == 255).all()  # the empty cell
    with pytest.raises(ValueError, match="differ in height"):
        side_by_side(a, moving_square(4, 10, 24))


def test_save_episode_and_image_grid(tmp_path) -> None:
    ep = Episode(moving_square(5), metadata={"fps": 7})
    _, meta = read_mp4(save_episode(ep, tmp_path / "ep.mp4"))
    assert meta["fps"] == 7
    png = save_image_grid(moving_square(5), tmp_path / "grid.png", ncols=3, sep=2, scale=2)
    with Image.open(png) as im:
        assert im.size == ((3 * 24 + 2 * 2) * 2, (2 * 16 + 2) * 2)


def test_mp4_without_an_ffmpeg_names_both_remedies(tmp_path, monkeypatch) -> None:
    """Where moviepy cannot find ffmpeg (no imageio-ffmpeg, no FFMPEG_BINARY), the error says
    how to get one, and no file is left behind."""
    import sys

    monkeypatch.setitem(sys.modules, "moviepy.video.io.ffmpeg_writer", None)  # import fails
    out = tmp_path / "clip.mp4"
    with pytest.raises(ImportError, match="imageio-ffmpeg.*FFMPEG_BINARY"):
        save_video(np.zeros((3, 8, 8, 3), np.uint8), out)
    assert list(tmp_path.iterdir()) == []
