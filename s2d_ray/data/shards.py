"""Parquet clip shards and the ``dataset.json`` manifest: the one on-disk form of real clips.

Clips are a binary column of raw uint8 bytes (T, H, W, 3), decoded with ``np.frombuffer``:
Ray's tensor column is stored as nested lists and reads about 5× slower. Shards live under
``<split>/<label:04d>/part-NNNNN.parquet`` so one class of one split is one folder (DM draws
real batches per class). A row group, the smallest unit a Parquet reader can fetch, holds
about ``ROW_GROUP_MIB`` of clips, so random access reads a few MiB, not a shard. All I/O goes
through pyarrow filesystems, so a URI works like a path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from s2d_ray import files
from s2d_ray.data.rowindex import build_index, index_relpath
from s2d_ray.files import write_atomic

MANIFEST = "dataset.json"
SKIPPED = "skipped.csv"
FORMAT_VERSION = 2  # 2: row groups of about ROW_GROUP_MIB and a row index per split
ROW_GROUP_MIB = 4.0

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


def clips_per_row_group(clip_shape: tuple[int, ...], mib: float = ROW_GROUP_MIB) -> int:
    """Clips in one row group: as many as fit in ``mib`` uncompressed, at least one."""
    return max(1, int(mib * 2**20) // int(np.prod(clip_shape)))


def write_shard(
    fs: pafs.FileSystem, path: str, table: pa.Table, rows_per_group: int
) -> tuple[int, str]:
    """Write one shard atomically (zstd); returns (bytes, sha256)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=max(1, rows_per_group))
    data = sink.getvalue().to_pybytes()
    write_atomic(fs, path, data)
    return len(data), hashlib.sha256(data).hexdigest()


def write_row_indexes(fs: pafs.FileSystem, root: str, shards: list[dict]) -> dict:
    """Write each split's row index (``data/rowindex.py``) for the manifest's ``shards``;
    returns the manifest's ``row_index`` entries."""
    entries = {}
    for split in sorted({s["split"] for s in shards}):
        table = build_index(fs, root, [s["path"] for s in shards if s["split"] == split])
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        path = index_relpath(split)
        write_atomic(fs, files.join(root, path), sink.getvalue().to_pybytes())
        entries[split] = {"path": path, "rows": table.num_rows}
    return entries


def write_directory(
    uri: str,
    classes: list[str],
    clip_shape: tuple[int, ...],
    parts: Iterable[tuple[str, int, ClipRows]],
    *,
    dataset: str = "arrays",
    rows_per_group: int | None = None,
) -> str:
    """A shard directory straight from clips already in memory (``parts``: split, label and
    the rows of one shard each): for benchmarks and tests that need exact clips. Prepare
    writes the directories of real datasets."""
    fs, root = files.filesystem(uri)
    per_group = rows_per_group or clips_per_row_group(clip_shape)
    entries, counts = [], {}
    for split, label, rows in parts:
        n = counts[(split, label)] = counts.get((split, label), -1) + 1
        rel = shard_relpath(split, label, n)
        nbytes, digest = write_shard(
            fs, files.join(root, rel), rows.to_table(clip_shape), per_group
        )
        entries.append(
            {"path": rel, "split": split, "label": label, "rows": len(rows), "bytes": nbytes,
             "sha256": digest}
        )  # fmt: skip
    entries.sort(key=lambda e: e["path"])
    digest = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()[:16]
    manifest = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "classes": list(classes),
        "clip_shape": list(clip_shape),
        "shards": entries,
        "fingerprint": digest,
        "row_index": write_row_indexes(fs, root, entries),
    }
    files.write_json(fs, files.join(root, MANIFEST), manifest)
    return root
