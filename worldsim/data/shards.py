"""The shard file format: one ``.npz`` holding chunked arrays, whole arrays and JSON metadata.

A shard stores a few *chunked* arrays, split along the first (time) axis into members of
``chunk_len`` rows (``frames_00000``, ``frames_00001``, ...), each compressed on its own, so
reading a window ``[start, stop)`` decompresses only the chunks it overlaps (``np.load`` of an
npz reads members lazily). Small *whole* arrays (actions, rewards, flags) sit alongside as one
member each, and ``meta`` is UTF-8 JSON stored as a uint8 member (no pickle anywhere)::

    meta            uint8 [n]             JSON: format, chunk_len, shapes/dtypes, user metadata
    frames_00000    uint8 [32, h, w, 3]   rows 0..31 of the chunked array "frames"
    frames_00001    uint8 [<=32, h, w, 3]
    actions         int64 [t-1]           a whole array

Nothing here is specific to images: the latent cache stores float16 ``[t, c, h, w]`` latents
the same way (``write_shard(path, {"latents": z})`` then ``ShardReader(path).read("latents",
s, e)``). Files are written atomically (temporary name, fsync, rename).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.data.atomic import atomic_path

SHARD_FORMAT = 1
DEFAULT_CHUNK_LEN = 32
_CACHE_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*$")
# Errors numpy / zipfile raise on a damaged or truncated npz.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError)


class ShardError(RuntimeError):
    """A shard file is missing, corrupt, or does not hold what was asked; names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _check_name(name: str) -> None:
    if name == "meta" or not _NAME.match(name):
        raise ValueError(
            f"shard array name {name!r} is not allowed: use letters/digits joined by single "
            "underscores, not ending in digits after '_', and not 'meta'"
        )


def write_shard(
    path: str | os.PathLike,
    chunked: Mapping[str, np.ndarray],
    arrays: Mapping[str, np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    chunk_len: int = DEFAULT_CHUNK_LEN,
    compress: bool = True,
) -> int:
    """Write one shard atomically and return its size in bytes.

    Args:
        path: target file (conventionally ``shard_000123.npz``).
        chunked: arrays split along axis 0 into ``chunk_len``-row members (any dtype/shape).
        arrays: arrays stored whole.
        meta: JSON-serialisable user metadata, returned by ``ShardReader.user_meta``.
        chunk_len: rows per chunk; windows read whole chunks, so 16-64 suits clip training.
        compress: deflate each member (uint8 frames typically shrink several-fold).
    """
    if chunk_len < 1:
        raise ValueError(f"write_shard: chunk_len must be >= 1, got {chunk_len}")
    arrays = dict(arrays or {})
    members: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "chunk_len": int(chunk_len),
        "chunked": {},
        "arrays": {},
        "user": dict(meta or {}),
    }
    for name, value in chunked.items():
        _check_name(name)
        value = np.asarray(value)
        if value.ndim < 1:
            raise ValueError(f"write_shard: chunked array {name!r} must have a time axis")
        n_chunks = -(-value.shape[0] // chunk_len)
        for k in range(n_chunks):
            members[f"{name}_{k:05d}"] = np.ascontiguousarray(
                value[k * chunk_len : (k + 1) * chunk_len]
            )
        header["chunked"][name] = {
            "shape": list(value.shape),
            "dtype": value.dtype.str,
            "chunks": n_chunks,
        }
    for name, value in arrays.items():
        _check_name(name)
        if name in header["chunked"]:
            raise ValueError(f"write_shard: {name!r} given both as chunked and whole array")
        value = np.asarray(value)
        if value.dtype == object:
            raise TypeError(f"write_shard: array {name!r} has dtype object (pickle is not used)")
        members[name] = value
        header["arrays"][name] = {"shape": list(value.shape), "dtype": value.dtype.str}
    try:
        meta_bytes = json.dumps(header).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"write_shard: metadata for {path} is not JSON-serialisable: {exc}"
        ) from exc
    members["meta"] = np.frombuffer(meta_bytes, dtype=np.uint8)
    save = np.savez_compressed if compress else np.savez
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            save(f, **members)
    return Path(path).stat().st_size


class ShardReader:
    """Lazy reader of one shard; opens the file on first use. Use as a context manager.

    Raises ``ShardError`` naming the file for a missing or corrupt shard or an unknown array.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._npz: Any = None
        self._header: dict[str, Any] | None = None
        self._small: dict[str, np.ndarray] = {}  # whole arrays under _CACHE_BYTES, read once

    def _open(self) -> Any:
        if self._npz is None:
            if not self.path.exists():
                raise ShardError(self.path, "shard file does not exist")
            try:
                self._npz = np.load(self.path, allow_pickle=False)
            except _READ_ERRORS as exc:
                raise ShardError(self.path, f"corrupt shard ({type(exc).__name__}: {exc})") from exc
        return self._npz

    def _member(self, key: str) -> np.ndarray:
        npz = self._open()
        if key not in npz.files:
            raise ShardError(self.path, f"corrupt shard: member {key!r} is missing")
        try:
            return npz[key]
        except _READ_ERRORS as exc:
            raise ShardError(
                self.path, f"corrupt shard: cannot read {key!r} ({type(exc).__name__}: {exc})"
            ) from exc

    @property
    def header(self) -> dict[str, Any]:
        """The full JSON header: format, chunk_len, chunked/array shapes and dtypes, user meta."""
        if self._header is None:
            raw = self._member("meta")
            try:
                header = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ShardError(self.path, f"corrupt shard: unreadable meta ({exc})") from exc
            if not isinstance(header, dict) or header.get("format") != SHARD_FORMAT:
                raise ShardError(
                    self.path, f"unsupported shard format {header.get('format')!r}, expected 1"
                )
            self._header = header
        return self._header

    @property
    def user_meta(self) -> dict[str, Any]:
        """The metadata passed to ``write_shard(meta=...)``."""
        return self.header["user"]

    def names(self) -> list[str]:
        """Names of all arrays, chunked first."""
        return [*self.header["chunked"], *self.header["arrays"]]

    def length(self, name: str) -> int:
        """Rows along axis 0 of a chunked array."""
        return int(self._chunk_info(name)["shape"][0])

    def _chunk_info(self, name: str) -> dict[str, Any]:
        info = self.header["chunked"].get(name)
        if info is None:
            raise ShardError(
                self.path, f"no chunked array {name!r}; has {sorted(self.header['chunked'])}"
            )
        return info

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of a chunked array, decompressing only overlapping chunks."""
        info = self._chunk_info(name)
        n = int(info["shape"][0])
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise IndexError(
                f"{self.path}: window [{start}, {stop}) outside {name!r} rows [0, {n})"
            )
        if start == stop:
            return np.empty((0, *info["shape"][1:]), dtype=np.dtype(info["dtype"]))
        chunk_len = int(self.header["chunk_len"])
        first, last = start // chunk_len, (stop - 1) // chunk_len
        parts = [self._member(f"{name}_{k:05d}") for k in range(first, last + 1)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        offset = first * chunk_len
        out = out[start - offset : stop - offset]
        if out.shape[0] != stop - start or list(out.shape[1:]) != list(info["shape"][1:]):
            raise ShardError(self.path, f"corrupt shard: chunks of {name!r} have wrong shapes")
        return out

    def array(self, name: str) -> np.ndarray:
        """A whole (unchunked) array."""
        info = self.header["arrays"].get(name)
        if info is None:
            raise ShardError(self.path, f"no array {name!r}; has {sorted(self.header['arrays'])}")
        if name in self._small:
            return self._small[name].copy()
        value = self._member(name)
        if value.nbytes <= _CACHE_BYTES:  # per-step arrays: decompress once per open reader
            self._small[name] = value.copy()
        return value

    def close(self) -> None:
        """Release the file handle (the reader reopens on next use)."""
        if self._npz is not None:
            self._npz.close()
            self._npz = None
        self._small.clear()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
