"""Parquet clip shards and the ``dataset.json`` manifest: the one on-disk form of real clips.

Clips are a binary column of raw uint8 bytes (T, H, W, 3), decoded with ``np.frombuffer``:
Ray's tensor column is stored as nested lists and reads about 5× slower. Shards live under
``<split>/<label:04d>/part-NNNNN.parquet`` so one class of one split is one folder (DM draws
real batches per class). All I/O goes through pyarrow filesystems, so a URI works like a path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from s2d_ray.files import write_atomic

MANIFEST = "dataset.json"
SKIPPED = "skipped.csv"
FORMAT_VERSION = 1

CLIP_SCHEMA = pa.schema(
    [
        ("frames", pa.binary()),
        ("label", pa.int32()),
        ("class_name", pa.string()),
        ("video_id", pa.string()),
        ("split", pa.string()),
        ("clip", pa.int16()),
        ("frame_indices", pa.list_(pa.int32())),
    ]
)


def shard_relpath(split: str, label: int, part: int) -> str:
    return f"{split}/{label:04d}/part-{part:05d}.parquet"


@dataclass
class ClipRows:
    """Column buffers for one shard, filled clip by clip."""

    frames: list[bytes]
    label: list[int]
    class_name: list[str]
    video_id: list[str]
    split: list[str]
    clip: list[int]
    frame_indices: list[list[int]]

    @classmethod
    def empty(cls) -> ClipRows:
        return cls([], [], [], [], [], [], [])

    def add(
        self,
        frames: np.ndarray,
        label: int,
        class_name: str,
        video_id: str,
        split: str,
        clip: int,
        indices: list[int],
    ) -> None:
        self.frames.append(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
        self.label.append(label)
        self.class_name.append(class_name)
        self.video_id.append(video_id)
        self.split.append(split)
        self.clip.append(clip)
        self.frame_indices.append([int(i) for i in indices])

    def __len__(self) -> int:
        return len(self.frames)

    def to_table(self, clip_shape: tuple[int, ...]) -> pa.Table:
        columns = {name: getattr(self, name) for name in CLIP_SCHEMA.names}
        meta = {b"s2d.clip_shape": json.dumps(list(clip_shape)).encode()}
        return pa.Table.from_pydict(columns, schema=CLIP_SCHEMA.with_metadata(meta))


def write_shard(fs: pafs.FileSystem, path: str, table: pa.Table) -> tuple[int, str]:
    """Write one shard atomically (zstd); returns (bytes, sha256)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=max(1, len(table)))
    data = sink.getvalue().to_pybytes()
    write_atomic(fs, path, data)
    return len(data), hashlib.sha256(data).hexdigest()
