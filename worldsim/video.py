"""Video and image export: mp4 (H.264) and gif files, side-by-side and grid compositions,
labelled frame strips (PNG).

Frames are uint8 ``[t, h, w, 3]`` (numpy or torch); model outputs in ``[-1, 1]`` convert with
``worldsim.data.tensor_to_frames`` first. Upscaling is nearest-neighbour by an integer factor,
so pixel art stays crisp. Every file is written to a temporary name and renamed, so a viewer or
a crash never sees half a video.

mp4 goes through moviepy (and so ffmpeg, from ``imageio-ffmpeg``): libx264, yuv420p, constant
quality ``crf``. yuv420p needs even sizes, so an odd height or width
is padded by one row/column that repeats the edge (never rescaled). gif goes through Pillow,
one palette per frame; Pillow merges identical consecutive frames into one longer frame, which
players and ``worldsim.data.import_videos`` (timestamp-based) play back correctly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from worldsim.data.atomic import atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")


def as_frames(frames: Any, what: str = "frames") -> np.ndarray:
    """Check and convert uint8 ``[t, h, w, 3]`` frames (numpy or torch) to a numpy array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(
            f"{what} must be uint8 [T, H, W, 3], got dtype {frames.dtype}; convert model "
            "output in [-1, 1] with worldsim.data.tensor_to_frames"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{what} must have shape [T, H, W, 3] with T >= 1, got {frames.shape}")
    return frames


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling of ``[..., h, w, c]`` to ``[..., h*s, w*s, c]``."""
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _moviepy_writer() -> Any:
    try:  # lazy: moviepy (0.3 s) fails to import without an ffmpeg; the error says how to get one
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter
    except ImportError as exc:  # moviepy finds ffmpeg through imageio-ffmpeg unless FFMPEG_BINARY is set
        raise ImportError(
            f"writing mp4 needs moviepy and an ffmpeg executable ({exc}): pip install moviepy "
            "imageio-ffmpeg, or set FFMPEG_BINARY to the path of an ffmpeg on this machine"
        ) from exc
    return FFMPEG_VideoWriter


def save_video(
    frames: Any,
    path: str | os.PathLike,
    fps: float = 15,
    *,
    scale: int = 1,
    crf: int = 18,
) -> Path:
    """Write uint8 ``[t, h, w, 3]`` frames to ``path`` (.mp4 or .gif, chosen by extension).

    Args:
        frames: uint8 ``[t, h, w, 3]``, numpy or torch.
        path: output file; its parent is created.
        fps: frames per second (> 0).
        scale: integer nearest-neighbour upscaling factor.
        crf: H.264 constant rate factor for mp4 (0 lossless .. 51 worst; 18 is visually clean).

    Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(
            f"save_video: unsupported extension {suffix!r} for {path}; use {VIDEO_SUFFIXES}"
        )
    if not fps > 0:
        raise ValueError(f"save_video: fps must be > 0, got {fps}")
    frames = upscale(as_frames(frames), scale)
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            _write_gif(frames, tmp, fps)
        else:
            _write_mp4(frames, tmp, fps, crf)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: float, crf: int) -> None:
    # moviepy's frame writer (not ImageSequenceClip, whose duration rounding can drop a frame).
    frames = _pad_to_even(frames)
    h, w = frames.shape[1:3]
    writer = _moviepy_writer()(
        str(path),
        (w, h),
        fps,
        codec="libx264",
        preset="medium",
        ffmpeg_params=["-crf", str(int(crf)), "-movflags", "+faststart"],
        pixel_format="yuv420p",
    )
    try:
        for frame in frames:
            writer.write_frame(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    duration = max(10, int(round(1000.0 / fps / 10.0)) * 10)  # gif stores centiseconds
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        disposal=1,
    )


def save_episode(
    episode: Any, path: str | os.PathLike, *, fps: float | None = None, scale: int = 1
) -> Path:
    """Write an ``Episode``'s frames, at ``fps`` or the episode's ``metadata['fps']`` (else 15)."""
    fps = fps or episode.metadata.get("fps") or 15
    return save_video(episode.frames, path, fps=fps, scale=scale)


def _pad_time(videos: list[np.ndarray]) -> list[np.ndarray]:
    """Repeat each video's last frame so all have the longest length."""
    t = max(v.shape[0] for v in videos)
    return [
        v if v.shape[0] == t else np.concatenate([v, np.repeat(v[-1:], t - v.shape[0], 0)])
        for v in videos
    ]


def _label_strip(text: str, width: int, height: int) -> np.ndarray:
    img = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(img).text((2, max(0, (height - 11) // 2)), text, fill=(255, 255, 255))
    return np.asarray(img)


def side_by_side(
    *videos: Any,
    labels: Sequence[str] | None = None,
    sep: int = 2,
    sep_value: int = 255,
    label_height: int = 12,
) -> np.ndarray:
    """Place videos ``[t, h, w, 3]`` left to right with ``sep``-pixel separators.

    Heights must match; shorter videos hold their last frame. With ``labels``, a black strip of
    ``label_height`` rows carrying each label in white is added on top. Returns uint8
    ``[t, (label_height +) h, sum(w) + sep * (n - 1), 3]``.
    """
    if not videos:
        raise ValueError("side_by_side: give at least one video")
    vids = [as_frames(v, f"side_by_side video {i}") for i, v in enumerate(videos)]
    heights = {v.shape[1] for v in vids}
    if len(heights) != 1:
        raise ValueError(f"side_by_side: videos differ in height {[v.shape[1] for v in vids]}")
    if labels is not None:
        if len(labels) != len(vids):
            raise ValueError(f"side_by_side: {len(labels)} labels for {len(vids)} videos")
        vids = [
            np.concatenate(
                [
                    np.broadcast_to(
                        _label_strip(str(lab), v.shape[2], label_height),
                        (v.shape[0], label_height, v.shape[2], 3),
                    ),
                    v,
                ],
                axis=1,
            )
            for v, lab in zip(vids, labels)
        ]
    vids = _pad_time(vids)
    t, h = vids[0].shape[:2]
    bar = np.full((t, h, sep, 3), sep_value, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, v in enumerate(vids):
        if i and sep:
            parts.append(bar)
        parts.append(v)
    return np.concatenate(parts, axis=2)


def grid(videos: Sequence[Any], ncols: int, *, sep: int = 2, sep_value: int = 255) -> np.ndarray:
    """Tile equally sized videos ``[t, h, w, 3]`` into rows of ``ncols`` with separators.

    Empty cells of the last row are filled with ``sep_value``; shorter videos hold their last
    frame. Returns uint8 ``[t, rows*h + (rows-1)*sep, ncols*w + (ncols-1)*sep, 3]``.
    """
    if not videos:
        raise ValueError("grid: give at least one video")
    if ncols < 1:
        raise ValueError(f"grid: ncols must be >= 1, got {ncols}")
    vids = _pad_time([as_frames(v, f"grid video {i}") for i, v in enumerate(videos)])
    shapes = {v.shape[1:] for v in vids}
    if len(shapes) != 1:
        raise ValueError(f"grid: videos differ in frame shape {sorted(shapes)}")
    t, h, w, _ = vids[0].shape
    ncols = min(ncols, len(vids))
    rows = math.ceil(len(vids) / ncols)
    out = np.full(
        (t, rows * h + (rows - 1) * sep, ncols * w + (ncols - 1) * sep, 3), sep_value, np.uint8
    )
    for i, v in enumerate(vids):
        r, c = divmod(i, ncols)
        out[:, r * (h + sep) : r * (h + sep) + h, c * (w + sep) : c * (w + sep) + w] = v
    return out


def save_image_grid(
    frames: Any,
    path: str | os.PathLike,
    *,
    ncols: int | None = None,
    scale: int = 1,
    sep: int = 2,
) -> Path:
    """Write frames ``[n, h, w, 3]`` as one PNG grid (``ncols`` default: ceil(sqrt(n)))."""
    frames = as_frames(frames)
    ncols = ncols or math.ceil(math.sqrt(frames.shape[0]))
    image = grid(list(frames[:, None]), ncols, sep=sep)[0]  # each frame a one-frame video
    image = upscale(image, scale)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def save_frame_strip(
    rows: dict[str, Any],
    path: str | os.PathLike,
    *,
    scale: int = 1,
    sep: int = 2,
    label_width: int = 48,
) -> Path:
    """Write labelled rows of frames (``{label: [t, h, w, 3]}``, equal shapes) as one PNG: each
    row left to right, its label in white on a black column at its left."""
    if not rows:
        raise ValueError("save_frame_strip: give at least one row")
    vids = [as_frames(v, f"strip row {name!r}") for name, v in rows.items()]
    if len({v.shape for v in vids}) != 1:
        raise ValueError(f"save_frame_strip: rows differ in shape {[v.shape for v in vids]}")
    t, h = vids[0].shape[:2]
    image = upscale(grid([f[None] for v in vids for f in v], t, sep=sep)[0], scale)
    labels = Image.new("RGB", (label_width, image.shape[0]), (0, 0, 0))
    draw = ImageDraw.Draw(labels)
    for i, name in enumerate(rows):
        draw.text((3, i * (h + sep) * scale + max(0, (h * scale - 11) // 2)), str(name), fill=(255, 255, 255))
    bar = np.full((image.shape[0], sep * scale, 3), 255, np.uint8)
    image = np.concatenate([np.asarray(labels), bar, image], axis=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
