"""The row index of a split: where every clip lives (shard, row group, row) and whose it is.

Every reader plans from it (an epoch's clips, a class's videos, a test pass in stored order)
and fetches only the row groups a plan touches, so no reader needs a split in memory. Prepare
writes one Parquet file per split (``index/<split>.parquet``); for shards prepared before
that, the same table is derived from the shards' footers and small columns (no clip bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from s2d_ray import files

INDEX_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("row_group", pa.int32()),
        ("row", pa.int32()),
        ("label", pa.int32()),
        ("video_id", pa.string()),
        ("clip", pa.int16()),
    ]
)


def index_relpath(split: str) -> str:
    return f"index/{split}.parquet"


def build_index(fs: pafs.FileSystem, root: str, shard_paths: Sequence[str]) -> pa.Table:
    """The index of ``shard_paths`` (relative to ``root``, in reading order) from each shard's
    footer and its ``label``, ``video_id`` and ``clip`` columns."""
    tables = []

    def footer_and_columns(path: str) -> tuple[list[int], pa.Table]:
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            groups = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            names = parquet.schema_arrow.names
            cols = parquet.read(columns=[c for c in ("label", "video_id", "clip") if c in names])
        return groups, cols

    for rel in shard_paths:
        path = files.join(root, rel)
        groups, cols = files.retrying(fs, path, lambda path=path: footer_and_columns(path))
        n = sum(groups)
        group = np.repeat(np.arange(len(groups), dtype=np.int32), groups)
        row = np.arange(n, dtype=np.int32) - np.repeat(np.cumsum([0, *groups[:-1]]), groups)
        names = cols.column_names
        video = cols.column("video_id") if "video_id" in names else _row_ids(rel, n)
        clip = cols.column("clip") if "clip" in names else pa.array(np.zeros(n, np.int16))
        tables.append(
            pa.table(
                [
                    pa.array([rel] * n, pa.string()),
                    pa.array(group),
                    pa.array(row.astype(np.int32)),
                    cols.column("label").cast(pa.int32()),
                    video.cast(pa.string()),
                    clip.cast(pa.int16()),
                ],
                schema=INDEX_SCHEMA,
            )
        )
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


def _row_ids(rel: str, n: int) -> pa.Array:
    """Without a ``video_id`` column every clip counts as its own video."""
    return pa.array([f"{rel}#{i}" for i in range(n)])


@dataclass
class RowIndex:
    """A split's index as flat arrays: position ``i`` is the split's ``i``-th stored clip."""

    shards: list[str]  # relative paths; ``shard`` indexes this list
    shard: np.ndarray
    row_group: np.ndarray
    row: np.ndarray
    label: np.ndarray  # int64
    clip: np.ndarray
    video: np.ndarray  # int64: which of ``video_keys`` the clip belongs to
    video_keys: list[str]  # "label/video_id", in first-seen order

    @classmethod
    def from_table(cls, table: pa.Table) -> RowIndex:
        shard = pc.dictionary_encode(table.column("shard")).combine_chunks()
        key = pc.binary_join_element_wise(
            pc.cast(table.column("label"), pa.string()), table.column("video_id"), "/"
        )
        video = pc.dictionary_encode(key).combine_chunks()
        return cls(
            shards=shard.dictionary.to_pylist(),
            shard=shard.indices.to_numpy().astype(np.int32),
            row_group=table.column("row_group").to_numpy(),
            row=table.column("row").to_numpy(),
            label=table.column("label").to_numpy().astype(np.int64),
            clip=table.column("clip").to_numpy(),
            video=video.indices.to_numpy().astype(np.int64),
            video_keys=video.dictionary.to_pylist(),
        )

    def __len__(self) -> int:
        return len(self.label)

    def row_groups(self) -> list[tuple[int, int]]:
        """Every (shard, row group) of the split, in stored order."""
        pairs = zip(self.shard.tolist(), self.row_group.tolist(), strict=True)
        return sorted(set(pairs))

    def video_rows(self) -> VideoRows:
        return VideoRows(self.video, len(self.video_keys))


class VideoRows(Sequence):
    """The positions of each video's clips, as a sequence of arrays without one per video."""

    def __init__(self, video: np.ndarray, count: int) -> None:
        self._order = np.argsort(video, kind="stable")
        self._starts = np.searchsorted(video[self._order], np.arange(count + 1))

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, v: int) -> np.ndarray:
        if not -len(self) <= v < len(self):
            raise IndexError(v)
        v %= len(self)
        return self._order[self._starts[v] : self._starts[v + 1]]
