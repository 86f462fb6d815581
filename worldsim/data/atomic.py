"""Atomic file writes: write to a temporary name in the same directory, fsync, then rename.

``os.replace`` within one directory is atomic on POSIX and Windows, so a reader (or a process
restarted after a kill) sees either the old file or the complete new one, never half a file.
A crash can leave a temporary file behind; its name starts with ``.`` and contains
``TEMP_MARKER``, so stores can recognise and delete such leftovers (see ``is_temp_file``).
The temporary name keeps the target's suffix, because some writers (ffmpeg, imageio) choose the
format from the extension.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Substring present in every temporary name made here.
TEMP_MARKER = ".tmp-"


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temporary path next to ``path`` that keeps its suffix: ``.name.tmp-<hex>.ext``."""
    path = Path(path)
    return path.with_name(f".{path.stem}{TEMP_MARKER}{uuid.uuid4().hex[:12]}{path.suffix}")


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a leftover from an interrupted atomic write."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARKER in name


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed onto ``path``.

    If the body raises (or never creates the file) the temporary file is removed and ``path``
    is left untouched. The parent directory is created when missing.

    Example::

        with atomic_path("out/video.mp4") as tmp:
            write_video(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to the temporary {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
