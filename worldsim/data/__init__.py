"""Episodes and their storage: the format, the shard store, clip datasets and video import.

See docs/data.md for the on-disk format and usage, docs/architecture.md for the contracts.
"""

from worldsim.data.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from worldsim.data.clips import ClipDataset
from worldsim.data.episode import STEP_FIELDS, Episode, frames_to_tensor, tensor_to_frames
from worldsim.data.shards import ShardError, ShardReader, write_shard
from worldsim.data.store import ArrayStore, EpisodeStore, StoreError
from worldsim.data.video_import import VideoImportError, import_videos

__all__ = [
    "STEP_FIELDS",
    "ArrayStore",
    "ClipDataset",
    "Episode",
    "EpisodeStore",
    "ShardError",
    "ShardReader",
    "StoreError",
    "VideoImportError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "frames_to_tensor",
    "import_videos",
    "tensor_to_frames",
    "write_shard",
]
