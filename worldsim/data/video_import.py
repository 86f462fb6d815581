"""Import a folder of gameplay videos (no actions) into an ``EpisodeStore``.

Pipeline per file, streaming (a long video is never held in memory whole):

1. Decode: mp4/webm/mov/avi/mkv with ffmpeg (``imageio-ffmpeg``), gif with Pillow.
2. Resample to ``fps`` when given, by timestamp: each source frame covers an interval of time
   (a video frame the half-period around its timestamp, so the *nearest* frame is taken; a gif
   frame its display duration, so the frame *on screen* is taken). Target frame ``j`` at time
   ``j / fps`` is the source frame whose interval contains it. Without ``fps`` videos keep all
   their frames and gifs are sampled at their most common frame duration, which restores
   frames that encoders merged into one longer frame.
3. Resize to ``size = (H, W)`` keeping the aspect ratio: centre-crop the largest region of the
   target aspect ratio, then resize (box/area filter when shrinking, bilinear when enlarging).
4. Split into episodes of at most ``max_episode_len`` frames (``part`` 0, 1, ...; the final one
   has ``last_part: true``; a one-frame remainder is dropped, since it holds no transition).

Metadata of each episode: ``source`` (absolute path), ``source_relpath``, ``fps``,
``source_fps``, ``original_size`` ``[H, W]``, ``crop``, ``part``, ``last_part``, ``start_frame``.
A re-run skips files whose parts are all in the store and writes only the missing parts of a
file that was interrupted, so an import resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageSequence
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worldsim.data.episode import Episode
from worldsim.data.store import INDEX_NAME, EpisodeStore

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")
_DEFAULT_GIF_DELAY_MS = 100  # what browsers use for a missing or ~0 gif delay
#: decoded stream: ``(t_from, t_to, frame)`` with ``frame`` uint8 ``[h, w, 3]``, times in seconds
_Frames = Generator[tuple[float, float, np.ndarray], None, None]


class VideoImportError(RuntimeError):
    """A video could not be imported; names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# ------------------------------------------------------------------------------ decoding
def _decode_ffmpeg(
    path: Path,
) -> tuple[float, tuple[int, int], _Frames]:
    """Native fps, ``(H, W)`` and an iterator of ``(t_from, t_to, frame)`` for a video file."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)  # raises for a file ffmpeg cannot open
    w, h = (int(s) for s in meta["size"])
    fps = float(meta.get("fps") or 0.0)
    if not fps > 0:
        gen.close()
        raise ValueError(f"no usable frame rate in the stream (fps={meta.get('fps')!r})")
    expected = _expected_frames(meta, fps)
    if expected is not None:  # before decoding: count the packets present (no decoding)
        present = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
        if _too_few(present, expected):
            gen.close()
            raise VideoImportError(path, _truncated(present, expected, fps))

    def frames() -> _Frames:
        i = 0
        try:
            for i, raw in enumerate(gen, start=1):
                frame = np.frombuffer(raw, dtype=np.uint8)
                if frame.size != h * w * 3:
                    raise ValueError(f"frame {i - 1} has {frame.size} bytes, expected {h}x{w}x3")
                yield (i - 1.5) / fps, (i - 0.5) / fps, frame.reshape(h, w, 3)
            if expected is not None and _too_few(i, expected):
                raise VideoImportError(path, _truncated(i, expected, fps, "decoded"))
        finally:
            gen.close()  # stops the ffmpeg process when decoding ends early

    return fps, (h, w), frames()


def _expected_frames(meta: dict[str, Any], fps: float) -> int | None:
    """Frames the container says the video has (its duration times the frame rate)."""
    nframes = meta.get("nframes")
    if isinstance(nframes, (int, float)) and np.isfinite(nframes) and nframes > 0:
        return int(nframes)
    duration = meta.get("duration")
    if isinstance(duration, (int, float)) and np.isfinite(duration) and duration > 0:
        return int(round(duration * fps))
    return None


def _too_few(frames: int, expected: int) -> bool:
    """Fewer frames than the container reports, beyond rounding (2 frames or 2 %)."""
    return frames < expected - max(2, int(0.02 * expected))


def _truncated(frames: int, expected: int, fps: float, verb: str = "holds") -> str:
    return (
        f"truncated or damaged: the file {verb} {frames} frames, but its container reports "
        f"{expected} ({expected / fps:.2f} s at {fps:g} fps), so it is not marked imported "
        "(repair or re-encode it, or pass skip_bad=true to skip it)"
    )


def _decode_gif(
    path: Path,
) -> tuple[float, tuple[int, int], _Frames]:
    """Native fps (from the most common delay), ``(H, W)`` and ``(t_from, t_to, frame)``."""
    image = Image.open(path)
    delays = []
    for frame in ImageSequence.Iterator(image):
        delay = int(frame.info.get("duration") or 0)
        delays.append(delay if delay > 10 else _DEFAULT_GIF_DELAY_MS)
    if not delays:
        raise ValueError("gif has no frames")
    fps = 1000.0 / Counter(delays).most_common(1)[0][0]

    def frames() -> _Frames:
        t = 0.0
        try:
            for frame, delay in zip(ImageSequence.Iterator(image), delays):
                yield t, t + delay / 1000.0, np.asarray(frame.convert("RGB"))
                t += delay / 1000.0
        finally:
            image.close()

    return fps, (image.height, image.width), frames()


def _resample(frames: _Frames, fps: float | None) -> Generator[np.ndarray, None, None]:
    """Target frame ``j`` is the source frame whose interval contains ``j / fps``."""
    j = 0
    for _t_from, t_to, frame in frames:
        if fps is None:
            yield frame
            continue
        # intervals tile time from <= 0, so j / fps >= t_from here; the epsilon keeps float
        # round-off in summed gif delays from moving a target time into the previous frame
        while j / fps < t_to - 1e-9:
            yield frame
            j += 1


def center_crop_resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Centre-crop uint8 ``[h, w, 3]`` to the aspect of ``size = (H, W)``, then resize to it."""
    if size is None:
        return frame
    h, w = frame.shape[:2]
    th, tw = size
    if w * th > h * tw:  # too wide: crop columns
        cw = max(1, round(h * tw / th))
        left = (w - cw) // 2
        frame = frame[:, left : left + cw]
    elif w * th < h * tw:  # too tall: crop rows
        ch = max(1, round(w * th / tw))
        top = (h - ch) // 2
        frame = frame[top : top + ch]
    if frame.shape[:2] == (th, tw):
        return np.ascontiguousarray(frame)
    shrink = frame.shape[0] >= th and frame.shape[1] >= tw
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((tw, th), method))


def _short_reason(exc: BaseException) -> str:
    """First and last lines of an error (ffmpeg's errors carry its whole banner)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(exc).__name__}: {text[:300]}"


# ------------------------------------------------------------------------------ import
def _parts_in_store(store: EpisodeStore) -> dict[str, dict[str, Any]]:
    """``source -> {"parts": set, "last": int | None}`` for episodes already imported."""
    done: dict[str, dict[str, Any]] = {}
    for i in range(len(store)):
        meta = store.metadata(i)
        if "source" not in meta or "part" not in meta:
            continue
        info = done.setdefault(meta["source"], {"parts": set(), "last": None})
        info["parts"].add(int(meta["part"]))
        if meta.get("last_part"):
            info["last"] = int(meta["part"])
    return done


def _is_complete(info: dict[str, Any] | None) -> bool:
    return bool(info) and info["last"] is not None and info["parts"] >= set(range(info["last"] + 1))


def _import_file(
    path: Path,
    rel: str,
    store: EpisodeStore,
    *,
    size: tuple[int, int] | None,
    fps: float | None,
    max_episode_len: int,
    existing: set[int],
) -> tuple[int, int]:
    """Stream one file into the store; returns ``(episodes, frames)`` written."""
    decode = _decode_gif if path.suffix.lower() == ".gif" else _decode_ffmpeg
    source_fps, original, frames = decode(path)
    try:
        return _write_parts(
            path,
            rel,
            store,
            frames,
            decode is _decode_gif,
            source_fps,
            original,
            size=size,
            fps=fps,
            max_episode_len=max_episode_len,
            existing=existing,
        )
    finally:
        frames.close()


def _write_parts(
    path: Path,
    rel: str,
    store: EpisodeStore,
    frames: _Frames,
    is_gif: bool,
    source_fps: float,
    original: tuple[int, int],
    *,
    size: tuple[int, int] | None,
    fps: float | None,
    max_episode_len: int,
    existing: set[int],
) -> tuple[int, int]:
    """Resample, resize and split one decoded stream into episodes; ``(episodes, frames)``."""
    target_fps = fps if fps is not None else source_fps
    # videos at their own rate keep every frame; gifs are always sampled by time
    resample_fps = target_fps if (fps is not None or is_gif) else None
    base = {
        "source": str(path.resolve()),
        "source_relpath": rel,
        "fps": float(target_fps),
        "source_fps": float(source_fps),
        "original_size": list(original),
        "crop": "center",
    }
    written = [0, 0]

    def flush(part: int, chunk: list[np.ndarray], last: bool) -> None:
        if part in existing:
            return
        meta = {**base, "part": part, "last_part": last, "start_frame": part * max_episode_len}
        try:
            store.append(Episode(frames=np.stack(chunk), metadata=meta))
        except ValueError as exc:
            raise VideoImportError(path, str(exc)) from exc
        written[0] += 1
        written[1] += len(chunk)

    part, buffer, pending = 0, [], None
    for frame in _resample(frames, resample_fps):
        buffer.append(center_crop_resize(frame, size))
        if len(buffer) == max_episode_len:
            if pending is not None:
                flush(part - 1, pending, last=False)
            pending, buffer, part = buffer, [], part + 1
    if len(buffer) >= 2:
        if pending is not None:
            flush(part - 1, pending, last=False)
        flush(part, buffer, last=True)
    elif pending is not None:
        flush(part - 1, pending, last=True)
    else:
        raise VideoImportError(path, f"only {len(buffer)} frame(s) decoded; an episode needs >= 2")
    return written[0], written[1]


def import_videos(
    src_dir: str | os.PathLike,
    out: str | os.PathLike | EpisodeStore,
    *,
    size: tuple[int, int] | None = (64, 64),
    fps: float | None = None,
    max_episode_len: int = 1000,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Import every video under ``src_dir`` (recursively, sorted) into the store at ``out``.

    Args:
        src_dir: folder searched for .mp4 .webm .mov .avi .mkv .gif files.
        out: an ``EpisodeStore`` or its directory (created when missing).
        size: ``(H, W)`` of stored frames (centre-crop, then resize); ``None`` keeps the size.
        fps: resample to this frame rate (nearest frame by timestamp); ``None`` keeps the rate.
        max_episode_len: longer videos are split into episodes of at most this many frames.
        skip_bad: skip unreadable files with a warning instead of raising.
        progress: show a rich progress bar.

    Returns a summary: ``files``, ``imported``, ``skipped`` (already in the store), ``bad``
    (``[{"file", "reason"}]``), ``episodes_written``, ``frames_written``.

    Raises ``VideoImportError`` naming the file for an unreadable, corrupt or truncated video
    (fewer frames than its container reports), and naming the folder when it holds no video.
    The store folder is created only when there is a video to import, and removed again when
    nothing could be imported into it.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"import_videos: source folder {src} does not exist")
    if max_episode_len < 2:
        raise ValueError(f"import_videos: max_episode_len must be >= 2, got {max_episode_len}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    if fps is not None and not fps > 0:
        raise ValueError(f"import_videos: fps must be > 0, got {fps}")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise VideoImportError(
            src, f"no video files in this folder or below (accepted: {', '.join(VIDEO_SUFFIXES)})"
        )
    new_dir = not isinstance(out, EpisodeStore) and not Path(out).exists()
    store = out if isinstance(out, EpisodeStore) else EpisodeStore(out)
    try:
        return _import_all(src, files, store, size, fps, max_episode_len, skip_bad, progress)
    finally:
        if new_dir and len(store) == 0:  # leave no empty store behind
            (store.root / INDEX_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                store.root.rmdir()


def _import_all(
    src: Path,
    files: list[Path],
    store: EpisodeStore,
    size: tuple[int, int] | None,
    fps: float | None,
    max_episode_len: int,
    skip_bad: bool,
    progress: bool,
) -> dict[str, Any]:
    """The loop of ``import_videos`` over ``files``; returns its summary."""
    done = _parts_in_store(store)
    summary: dict[str, Any] = {
        "files": len(files),
        "imported": [],
        "skipped": [],
        "bad": [],
        "episodes_written": 0,
        "frames_written": 0,
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("importing", total=len(files))
        for path in files:
            rel = path.relative_to(src).as_posix()
            bar.update(task, description=f"importing {rel}")
            info = done.get(str(path.resolve()))
            if _is_complete(info):
                summary["skipped"].append(rel)
                bar.advance(task)
                continue
            try:
                n_eps, n_frames = _import_file(
                    path,
                    rel,
                    store,
                    size=size,
                    fps=fps,
                    max_episode_len=max_episode_len,
                    existing=info["parts"] if info else set(),
                )
            except VideoImportError as exc:
                error: VideoImportError = exc
            except (OSError, RuntimeError, ValueError, EOFError, StopIteration, SyntaxError) as exc:
                # PIL.UnidentifiedImageError is an OSError; ffmpeg failures are OSError/RuntimeError.
                error = VideoImportError(path, f"cannot decode ({_short_reason(exc)})")
            else:
                summary["imported"].append(rel)
                summary["episodes_written"] += n_eps
                summary["frames_written"] += n_frames
                bar.advance(task)
                continue
            if not skip_bad:
                raise error
            warnings.warn(f"skipping {error}", stacklevel=2)
            summary["bad"].append({"file": rel, "reason": error.reason})
            bar.advance(task)
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m worldsim.data.video_import SRC OUT [--size H W] [--fps F] ...``"""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of videos")
    parser.add_argument("out", help="EpisodeStore directory")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--max-episode-len", type=int, default=1000)
    parser.add_argument("--skip-bad", action="store_true")
    args = parser.parse_args(argv)
    summary = import_videos(
        args.src,
        args.out,
        size=tuple(args.size),
        fps=args.fps,
        max_episode_len=args.max_episode_len,
        skip_bad=args.skip_bad,
    )
    print(
        f"{summary['files']} files: {len(summary['imported'])} imported, "
        f"{len(summary['skipped'])} already present, {len(summary['bad'])} bad; "
        f"{summary['episodes_written']} episodes, {summary['frames_written']} frames written"
    )
    EpisodeStore(args.out, create=False).print_summary()


if __name__ == "__main__":
    main()
