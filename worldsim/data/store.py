"""Directory stores of shards: ``ArrayStore`` (any chunked arrays) and ``EpisodeStore``.

Layout of a store directory::

    root/
      index.json           {"format_version": 1, "kind": "episodes", "shards": [entry, ...]}
      shard_000000.npz     one item (episode) per shard, see worldsim/data/shards.py
      shard_000001.npz

Every shard and every version of ``index.json`` is written to a temporary name and renamed, so
a killed writer leaves complete shards plus, at worst, a temporary file (deleted on the next
open for writing) and an index that misses the last shard. On open, the index is checked
against the shard files on disk (names, and each file's size against the index, one ``stat``
per shard); when it is missing, unreadable or disagrees, it is rebuilt from the shards' own
headers, with a warning. A shard that cannot be read (truncated, not a zip, no header) is
quarantined, with a warning naming it: renamed to ``shard_N.npz.bad`` when the store is open
for writing (its bytes are kept; a resumed ``collect`` writes the missing episode again), left
alone and skipped when it is open read-only. New shards are numbered after the highest number
on disk (quarantined ones included), so appending after a crash continues and never overwrites
a finished shard. One writer at a time.

A store opened read-only (``create=False``) never writes, renames or deletes anything in its
folder: a missing or stale index is rebuilt in memory only, and a folder that has neither an
index nor shards is refused (``StoreError``) rather than taken for an empty store.
``verify()`` opens every shard (and with ``full=True`` checks every member's CRC) to find
damage that keeps a file's size.

``ArrayStore`` is the generic layer (the latent cache uses it for float16 ``[t, c, h, w]``
latents); ``EpisodeStore`` maps ``Episode`` objects onto it: ``frames`` chunked, the per-step
arrays whole.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from worldsim.data.atomic import atomic_write_json, is_temp_file
from worldsim.data.episode import STEP_FIELDS, Episode
from worldsim.data.shards import DEFAULT_CHUNK_LEN, ShardError, ShardReader, write_shard

STORE_FORMAT = 1
INDEX_NAME = "index.json"
_SHARD_FILE = re.compile(r"^shard_(\d{6,})\.npz$")
_NUMBERED_FILE = re.compile(r"^shard_(\d{6,})\.npz(?:\.bad\d*)?$")  # quarantined ones too
BAD_SUFFIX = ".bad"
_MAX_OPEN_READERS = 16


class StoreError(ValueError):
    """A directory cannot be used as this store (not a store, another kind, read-only, a
    mismatched array); names the directory."""


class ArrayStore:
    """A directory of shards, one item per shard, each holding named chunked/whole arrays.

    Args:
        root: the store directory.
        create: open for writing, creating ``root`` when missing. ``False`` opens an existing
            store read-only: ``FileNotFoundError`` when ``root`` is missing, ``StoreError``
            when it holds neither an index nor shards, and nothing in it is ever modified.
        chunk_len: rows per compressed chunk for new shards.
        compress: deflate shard members.
    """

    kind = "arrays"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        create: bool = True,
        chunk_len: int = DEFAULT_CHUNK_LEN,
        compress: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise FileNotFoundError(f"store directory {self.root} does not exist")
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise NotADirectoryError(f"store path {self.root} is not a directory")
        self.readonly = not create
        self.chunk_len = chunk_len
        self.compress = compress
        #: shards found unreadable on open: file name -> reason (quarantined or skipped)
        self.bad_shards: dict[str, str] = {}
        self._entries: list[dict[str, Any]] = []
        self._schema: dict[str, tuple[tuple[int, ...], str]] = {}
        self._readers: OrderedDict[str, ShardReader] = OrderedDict()
        self._pid = os.getpid()
        self.refresh()

    # ----------------------------------------------------------------- index and recovery
    def refresh(self) -> None:
        """Load the index, or rebuild it from the shards; quarantine shards that cannot be read.

        Open for writing: leftover temporary files are deleted, a rebuilt index is written and
        unreadable shards are renamed to ``*.bad``. Read-only: the same checks, in memory.
        """
        if not self.readonly:
            for path in self.root.iterdir():
                if is_temp_file(path):
                    warnings.warn(f"removing leftover temporary file {path}", stacklevel=3)
                    path.unlink(missing_ok=True)
        on_disk = self._shard_files()
        index_path = self.root / INDEX_NAME
        entries, problem = self._read_index(index_path, on_disk)
        if self.readonly and not on_disk and entries is None:
            what = "an episode store" if self.kind == "episodes" else f"a store of {self.kind}"
            raise StoreError(
                f"{self.root} is not {what}: it holds no readable {INDEX_NAME} and no "
                "shard_*.npz files"
            )
        if problem is not None:
            where = " (in memory: the store is open read-only)" if self.readonly else ""
            warnings.warn(
                f"{index_path} {problem}; rebuilding it from the shard files{where}", stacklevel=3
            )
        known = {e["file"]: e for e in entries or []}
        checked: list[dict[str, Any]] = []
        self.bad_shards = {}
        changed = problem is not None or not index_path.exists()
        for name in on_disk:
            entry = known.get(name)
            size = (self.root / name).stat().st_size
            if entry is not None and int(entry.get("bytes", -1)) == size:
                checked.append(entry)
                continue
            changed = True
            sizes = f"{size} bytes, {INDEX_NAME} says {entry.get('bytes')}" if entry else ""
            try:
                checked.append(self._entry_from_shard(name))
            except ShardError as exc:
                self.bad_shards[name] = f"{exc.reason}{f' ({sizes})' if sizes else ''}"
                continue
            if sizes:
                warnings.warn(
                    f"{self.root / name}: {sizes}; its entry is rebuilt from the shard",
                    stacklevel=3,
                )
        if self.bad_shards:
            self._quarantine(len(checked))
        self._entries = checked
        self._schema = {}
        for entry in checked:
            self._update_schema(entry)
        if changed and not self.readonly:
            self._write_index()

    def _read_index(
        self, index_path: Path, on_disk: list[str]
    ) -> tuple[list[dict[str, Any]] | None, str | None]:
        """``(entries, problem)``: entries ``None`` when unreadable; problem ``None`` when the
        index can be used as it is."""
        if not index_path.exists():
            return None, ("is missing" if on_disk else None)
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            entries = list(index["shards"])
            names = [e["file"] for e in entries]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return None, f"is unreadable ({type(exc).__name__}: {exc})"
        if index.get("kind") != self.kind:
            raise StoreError(
                f"{index_path}: store holds kind {index.get('kind')!r}, "
                f"but was opened as {type(self).__name__} (kind {self.kind!r})"
            )
        if index.get("format_version") != STORE_FORMAT:
            return None, f"has format_version {index.get('format_version')!r}"
        if names != on_disk:
            return entries, (
                f"lists {len(entries)} shards but {len(on_disk)} are on disk"
                if len(entries) != len(on_disk)
                else "names different shards than those on disk"
            )
        return entries, None

    def _quarantine(self, intact: int) -> None:
        """Warn about (and, open for writing, rename aside) the shards in ``bad_shards``."""
        for name, reason in self.bad_shards.items():
            path = self.root / name
            if self.readonly:
                action = (
                    "skipped (the store is open read-only; opening it for writing, e.g. "
                    f"re-running `worldsim collect` into it, moves it aside as {name}{BAD_SUFFIX})"
                )
            else:
                target = path.with_name(name + BAD_SUFFIX)
                k = 1
                while target.exists():
                    k += 1
                    target = path.with_name(f"{name}{BAD_SUFFIX}{k}")
                os.replace(path, target)
                action = f"moved aside to {target.name}"
            warnings.warn(
                f"{path}: {reason}; {action}; the other {intact} shard(s) are reachable",
                stacklevel=4,
            )

    def verify(self, *, full: bool = False) -> dict[str, str]:
        """Open every shard of the index and check its header against the index.

        ``full=True`` also reads every member and checks its CRC (reads the whole store).
        Returns ``{file: reason}`` for the shards that fail; nothing is modified.
        """
        bad: dict[str, str] = {}
        for entry in self._entries:
            path = self.root / entry["file"]
            try:
                with ShardReader(path) as reader:
                    header = reader.header
                rebuilt = self._make_entry(entry["file"], header, entry["bytes"])
                if json.loads(json.dumps(rebuilt)) != json.loads(json.dumps(entry)):
                    bad[entry["file"]] = "its header disagrees with the index"
                    continue
                if full:
                    with zipfile.ZipFile(path) as zf:
                        broken = zf.testzip()
                    if broken is not None:
                        bad[entry["file"]] = f"corrupt shard: member {broken!r} fails its CRC"
            except ShardError as exc:
                bad[entry["file"]] = exc.reason
            except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
                bad[entry["file"]] = f"corrupt shard ({type(exc).__name__}: {exc})"
        return bad

    def _shard_files(self) -> list[str]:
        names = [p.name for p in self.root.iterdir() if _SHARD_FILE.match(p.name)]
        return sorted(names, key=lambda n: int(_SHARD_FILE.match(n).group(1)))  # type: ignore[union-attr]

    def _entry_from_shard(self, name: str) -> dict[str, Any]:
        path = self.root / name
        with ShardReader(path) as reader:
            header = reader.header
            try:
                return self._make_entry(name, header, path.stat().st_size)
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                raise ShardError(path, f"corrupt shard: malformed header ({exc!r})") from exc

    @staticmethod
    def _make_entry(name: str, header: Mapping[str, Any], nbytes: int) -> dict[str, Any]:
        chunked = {
            k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in header["chunked"].items()
        }
        first = next(iter(chunked.values()), None)
        return {
            "file": name,
            "length": int(first["shape"][0]) if first else 0,
            "chunked": chunked,
            "arrays": dict(header["arrays"]),
            "meta": header["user"],
            "bytes": int(nbytes),
        }

    def _write_index(self) -> None:
        atomic_write_json(
            self.root / INDEX_NAME,
            {"format_version": STORE_FORMAT, "kind": self.kind, "shards": self._entries},
        )

    def _update_schema(self, entry: Mapping[str, Any]) -> None:
        for group in ("chunked", "arrays"):
            for name, info in entry[group].items():
                item = tuple(int(s) for s in info["shape"][1:])
                self._schema.setdefault(name, (item, info["dtype"]))

    def _check_schema(self, arrays: Mapping[str, np.ndarray], what: str) -> None:
        for name, value in arrays.items():
            if name not in self._schema:
                continue
            item, dtype = self._schema[name]
            if tuple(value.shape[1:]) != item or value.dtype.str != dtype:
                raise StoreError(
                    f"{what} {name!r} has per-step shape {tuple(value.shape[1:])} dtype "
                    f"{value.dtype}, but store {self.root} holds {item} dtype {np.dtype(dtype)}; "
                    "a store keeps one shape per array (use a separate store)"
                )

    # ----------------------------------------------------------------- writing
    def append_arrays(
        self,
        chunked: Mapping[str, np.ndarray],
        arrays: Mapping[str, np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one item as a new shard and return its index."""
        if self.readonly:
            raise StoreError(f"store {self.root} is open read-only (create=False); cannot append")
        chunked = {k: np.asarray(v) for k, v in chunked.items()}
        arrays = {k: np.asarray(v) for k, v in (arrays or {}).items()}
        self._check_schema({**chunked, **arrays}, "array")
        numbers = [int(m.group(1)) for p in self.root.iterdir() if (m := _NUMBERED_FILE.match(p.name))]
        number = max(numbers) + 1 if numbers else 0
        name = f"shard_{number:06d}.npz"
        header = {
            "chunked": {
                k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in chunked.items()
            },
            "arrays": {
                k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()
            },
            "user": dict(meta or {}),
        }
        nbytes = write_shard(
            self.root / name,
            chunked,
            arrays,
            meta,
            chunk_len=self.chunk_len,
            compress=self.compress,
        )
        entry = self._make_entry(name, header, nbytes)
        self._entries.append(entry)
        self._update_schema(entry)
        self._write_index()
        return len(self._entries) - 1

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._entries)

    def _resolve(self, i: int) -> int:
        n = len(self._entries)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"store index must be an int, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(
                f"index {i} out of range for store {self.root} with {n} items (valid -{n}..{n - 1})"
                if n
                else f"index {i} out of range: store {self.root} is empty"
            )
        return int(i) % n

    def entry(self, i: int) -> dict[str, Any]:
        """The index entry of item ``i`` (file, length, shapes, user meta, bytes)."""
        return self._entries[self._resolve(i)]

    def length(self, i: int) -> int:
        """Rows of item ``i``'s first chunked array, from the index (no file is opened)."""
        return int(self.entry(i)["length"])

    def meta(self, i: int) -> dict[str, Any]:
        """The user metadata of item ``i``, from the index."""
        return self.entry(i)["meta"]

    def shard_path(self, i: int) -> Path:
        return self.root / self.entry(i)["file"]

    def reader(self, i: int) -> ShardReader:
        """An open reader for item ``i``; a few are kept open, never shared across processes."""
        if os.getpid() != self._pid:  # forked into a DataLoader worker: drop inherited handles
            self._readers = OrderedDict()
            self._pid = os.getpid()
        name = self.entry(i)["file"]
        reader = self._readers.pop(name, None) or ShardReader(self.root / name)
        self._readers[name] = reader
        while len(self._readers) > _MAX_OPEN_READERS:
            self._readers.popitem(last=False)[1].close()
        return reader

    def read(self, i: int, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of chunked array ``name`` of item ``i``."""
        return self.reader(i).read(name, start, stop)

    def read_array(self, i: int, name: str) -> np.ndarray:
        """Whole array ``name`` of item ``i``."""
        return self.reader(i).array(name)

    def bytes_on_disk(self) -> int:
        return sum(int(e["bytes"]) for e in self._entries)

    def close(self) -> None:
        """Close open shard files (they reopen on demand)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()  # file handles do not travel to other processes
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, items={len(self)})"


class EpisodeStore(ArrayStore):
    """Episodes on disk: ``frames`` chunked (uint8 ``[t, h, w, 3]``), per-step arrays whole.

    All episodes of a store share one frame shape and one action layout; ``append`` rejects an
    episode that differs. Item ``i`` is the ``i``-th shard in number order.
    """

    kind = "episodes"

    def append(self, episode: Episode) -> int:
        """Write ``episode`` as a new shard (atomically) and return its index."""
        if not isinstance(episode, Episode):
            raise TypeError(f"EpisodeStore.append expects an Episode, got {type(episode).__name__}")
        if "frames" in self._schema and self._schema["frames"][0] != episode.frame_shape:
            raise StoreError(
                f"episode frames have shape {episode.frame_shape} (H, W, 3) per frame, but store "
                f"{self.root} holds {self._schema['frames'][0]}; resize the frames or use "
                "another store"
            )
        meta = {
            "metadata": episode.metadata,
            "length": len(episode),
            "return": episode.episode_return,
        }
        return self.append_arrays({"frames": episode.frames}, episode.step_arrays(), meta)

    def __getitem__(self, i: int) -> Episode:
        reader = self.reader(i)
        present = set(self.entry(i)["arrays"])
        steps = {n: reader.array(n) for n in STEP_FIELDS if n in present}
        return Episode(frames=reader.read("frames"), metadata=self.metadata(i), **steps)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def episode_length(self, i: int) -> int:
        """Frames ``T`` of episode ``i`` (from the index)."""
        return self.length(i)

    def metadata(self, i: int) -> dict[str, Any]:
        """The ``Episode.metadata`` of episode ``i`` (from the index)."""
        return dict(self.meta(i).get("metadata", {}))

    def has(self, i: int, name: str) -> bool:
        """Whether episode ``i`` has per-step array ``name`` (e.g. ``"actions"``)."""
        return name in self.entry(i)["arrays"]

    def read_frames(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 ``[stop - start, h, w, 3]``; decompresses only the chunks the window overlaps."""
        try:
            return self.read(i, "frames", start, stop)
        except IndexError:
            n = self.episode_length(i)
            raise IndexError(
                f"read_frames({i}, {start}, {stop}): window outside episode frames [0, {n})"
            ) from None

    def read_steps(self, i: int, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Per-step arrays present in episode ``i``, sliced to transitions ``[start, stop)``.

        Transition ``t`` goes from frame ``t`` to frame ``t + 1``, so valid windows lie in
        ``[0, T - 1]``. Missing arrays are absent from the dict.
        """
        steps = self.episode_length(i) - 1
        stop = steps if stop is None else stop
        if not 0 <= start <= stop <= steps:
            raise IndexError(f"read_steps({i}, {start}, {stop}): outside transitions [0, {steps})")
        reader = self.reader(i)
        return {n: reader.array(n)[start:stop] for n in STEP_FIELDS if n in self.entry(i)["arrays"]}

    @property
    def total_frames(self) -> int:
        return sum(int(e["length"]) for e in self._entries)

    def summary(self) -> dict[str, Any]:
        """Counts and shapes, computed from the index alone (no shard is opened)."""
        lengths = np.array([e["length"] for e in self._entries], dtype=np.int64)
        returns = [e["meta"].get("return") for e in self._entries]
        returns = [r for r in returns if r is not None]
        action_space = next(
            (
                e["meta"]["metadata"]["action_space"]
                for e in self._entries
                if "action_space" in e["meta"].get("metadata", {})
            ),
            None,
        )
        fps = sorted({e["meta"].get("metadata", {}).get("fps") for e in self._entries} - {None})
        frames = self._schema.get("frames")
        return {
            "root": str(self.root),
            "episodes": len(self),
            "frames": int(lengths.sum()),
            "frame_shape": list(frames[0]) if frames else None,
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "episodes_with_actions": sum("actions" in e["arrays"] for e in self._entries),
            "episodes_with_rewards": sum("rewards" in e["arrays"] for e in self._entries),
            "action_space": action_space,
            "fps": fps,
            "mean_return": float(np.mean(returns)) if returns else None,
            "bytes_on_disk": self.bytes_on_disk(),
        }

    def print_summary(self, console: Any = None) -> None:
        """Print ``summary()`` as a rich table."""
        table = Table(title=f"EpisodeStore {self.root}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in self.summary().items():
            if key == "root":
                continue
            if key == "bytes_on_disk":
                value = f"{value / 2**20:.2f} MiB"
            elif isinstance(value, float):
                value = f"{value:.3f}"
            table.add_row(
                key.replace("_", " "),
                json.dumps(value) if isinstance(value, (dict, list)) else str(value),
            )
        (console or Console()).print(table)


__all__ = ["ArrayStore", "EpisodeStore", "INDEX_NAME", "STORE_FORMAT", "ShardError", "StoreError"]
