"""Reading clip shards into training: in-process Arrow datasets, Ray Data streams, transforms.

Clips stay uint8 (T, H, W, 3) until they reach the consuming device; ``ClipTransform`` turns a
batch into float (B, T, 3, H, W) there, so host memory and transfers carry a quarter the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from torch.utils.data import Dataset

from s2d_ray import files
from s2d_ray.data import shards as sh
from s2d_ray.normalization import IMAGENET_MEAN, IMAGENET_STD
from s2d_ray.seeding import derive_seed

if TYPE_CHECKING:
    import ray.data


class ClipShards:
    """An opened shard directory (local path or URI): its manifest and its shard files."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = files.filesystem(uri)
        manifest_path = files.join(self.root, sh.MANIFEST)
        if not files.exists(self.fs, manifest_path):
            raise FileNotFoundError(
                f"{uri} holds no {sh.MANIFEST}: it is not a shard directory "
                "(make one with `python jobs/prepare_data.py --out DIR`)"
            )
        self.manifest = files.read_json(self.fs, manifest_path)
        self.classes: list[str] = self.manifest["classes"]
        self.clip_shape: tuple[int, int, int, int] = tuple(self.manifest["clip_shape"])
        self.fingerprint: str = self.manifest["fingerprint"]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_clips_per_video(self) -> int:
        """Train clips stored per video (shards from before this was recorded held one)."""
        return int(self.manifest.get("clips_per_video", {}).get("train", 1))

    def files(self, split: str, labels: Sequence[int] | None = None) -> list[str]:
        """Paths of the shards of ``split`` (optionally only some classes), in a fixed order."""
        wanted = None if labels is None else set(labels)
        paths = [
            files.join(self.root, s["path"])
            for s in self.manifest["shards"]
            if s["split"] == split and (wanted is None or s["label"] in wanted)
        ]
        if not paths and split == "val" and "validation" not in self.manifest:
            raise ValueError(
                f"{self.uri} was prepared before shards carried a validation split, which "
                "every choice (periodic evaluation, the search, the best set) now reads "
                "instead of test: prepare the dataset again into a new folder "
                f"(`python jobs/prepare_data.py --dataset {self.manifest['dataset']} "
                "--out NEW_DIR ...`, with the options used before)"
            )
        if not paths:
            which = "" if wanted is None else f" of labels {sorted(wanted)}"
            hint = ""
            if split == "val":
                hint = (
                    " (its validation split is empty: prepare it again with a larger "
                    "--val-fraction or --val-min-per-class)"
                )
            raise ValueError(f"{self.uri} has no {split!r} clips{which}{hint}")
        return paths

    def read_table(
        self, split: str, columns: Sequence[str] = ("frames", "label", "video_id")
    ) -> pa.Table:
        tables = [
            pq.read_table(p, columns=list(columns), filesystem=self.fs) for p in self.files(split)
        ]
        return pa.concat_tables(tables)

    def verify(self) -> list[str]:
        """Recompute every shard's checksum; returns the problems found (empty when healthy)."""
        problems = []
        for s in self.manifest["shards"]:
            path = files.join(self.root, s["path"])
            if not files.exists(self.fs, path):
                problems.append(f"{path}: missing")
            elif files.file_sha256(self.fs, path) != s["sha256"]:
                problems.append(f"{path}: checksum mismatch (file changed or corrupt)")
        return problems


class ArrowClipDataset(Dataset):
    """All clips of one split held as Arrow buffers; items are zero-copy views until batched.

    For sets that fit in memory (tests, the embedded set, single-machine work). Larger sets
    stream through :func:`ray_clip_dataset`.
    """

    def __init__(self, shards: ClipShards | str, split: str = "train") -> None:
        shards = shards if isinstance(shards, ClipShards) else ClipShards(shards)
        self._setup(shards.read_table(split), shards.clip_shape, shards.num_classes, split)

    @classmethod
    def from_table(
        cls, table: pa.Table, clip_shape: Sequence[int], num_classes: int, split: str = "train"
    ) -> ArrowClipDataset:
        """Wrap a table already in memory, e.g. one shared through Ray's object store."""
        self = cls.__new__(cls)
        self._setup(table, tuple(clip_shape), num_classes, split)
        return self

    def _setup(self, table: pa.Table, clip_shape, num_classes: int, split: str) -> None:
        self.table, self.clip_shape, self.num_classes, self.split = (
            table,
            clip_shape,
            num_classes,
            split,
        )
        # Keep Arrow's chunks as they are: int32 offsets cannot address one column over 2 GiB.
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        where = []
        for k, chunk in enumerate(table.column("frames").chunks):
            _, offsets, data = chunk.buffers()
            offs = np.frombuffer(offsets, dtype=np.int32)[
                chunk.offset : chunk.offset + len(chunk) + 1
            ]
            self._chunks.append((offs, np.frombuffer(data, dtype=np.uint8)))
            where += [(k, i) for i in range(len(chunk))]
        self._where = np.asarray(where, dtype=np.int64).reshape(-1, 2)
        self.labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
        self._group_videos(table)

    def _group_videos(self, table: pa.Table) -> None:
        """Rows of each video (train shards hold several clips per video); without a
        ``video_id`` column every clip counts as its own video."""
        labels = self.labels.tolist()
        if "video_id" in table.column_names:
            ids = table.column("video_id").to_pylist()
            keys = [f"{label}/{vid}" for label, vid in zip(labels, ids, strict=True)]
        else:
            keys = [f"{label}/row-{i}" for i, label in enumerate(labels)]
        rows: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows.setdefault(key, []).append(i)
        self.video_keys: list[str] = list(rows)
        self.video_rows: list[np.ndarray] = [np.asarray(r, dtype=np.int64) for r in rows.values()]

    @property
    def num_videos(self) -> int:
        return len(self.video_rows)

    def epoch_rows(self, seed: int, epoch: int) -> torch.Tensor:
        """One clip per video for this epoch: the per-epoch temporal jitter of SPEC §1.

        Video v's clip is drawn from (seed, epoch, v), so an epoch is one pass over the
        videos whatever the number of stored clips, and resuming at any epoch redraws
        exactly the same clips.
        """
        picks = [
            rows[0] if len(rows) == 1 else rows[derive_seed(seed, "clip", epoch, key) % len(rows)]
            for key, rows in zip(self.video_keys, self.video_rows, strict=True)
        ]
        return torch.as_tensor(picks, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def clip_array(self, i: int) -> np.ndarray:
        """A read-only (T, H, W, 3) uint8 view of clip ``i`` (no copy)."""
        chunk, j = self._where[i]
        offsets, data = self._chunks[chunk]
        view = data[offsets[j] : offsets[j + 1]].reshape(self.clip_shape)
        view.flags.writeable = False  # writes would corrupt the shared Arrow buffer
        return view

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.clip_array(i).copy()), int(self.labels[i])

    def batch(
        self, indices: Sequence[int] | torch.Tensor, *, pin_memory: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather clips into one uint8 (B, T, H, W, 3) tensor, copying each clip once.
        ``pin_memory``: into page-locked memory, so that a ``non_blocking`` copy to a GPU
        returns at once and the next batch is gathered while the GPU trains on this one."""
        idx = [int(i) for i in indices]
        out = torch.empty((len(idx), *self.clip_shape), dtype=torch.uint8, pin_memory=pin_memory)
        rows = out.numpy()
        for row, i in enumerate(idx):
            rows[row] = self.clip_array(i)
        return out, self.labels[idx]


class ClassSampler:
    """Random real batches of one class (DM matches class means of real and synthetic clips)."""

    def __init__(self, dataset: ArrowClipDataset) -> None:
        self.dataset = dataset
        self.by_class = [
            torch.nonzero(dataset.labels == c).flatten() for c in range(dataset.num_classes)
        ]

    def sample(self, label: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` clips of class ``label`` (without replacement when the class has enough)."""
        pool = self.by_class[label]
        if len(pool) == 0:
            raise ValueError(f"class {label} has no clips in split {self.dataset.split!r}")
        if n <= len(pool):
            pick = pool[torch.randperm(len(pool), generator=generator)[:n]]
        else:
            pick = pool[torch.randint(len(pool), (n,), generator=generator)]
        return self.dataset.batch(pick)[0]


class FrameView(Dataset):
    """Single frames for static (image) learning: item v is one random frame of video v,
    from any of its stored clips (SPEC §1: one random frame per video per access).

    The (clip, frame) pair is drawn from (seed, epoch, v), not from a global RNG, so the same
    epoch yields the same frames whatever the number of DataLoader workers; call
    ``set_epoch`` each epoch.
    """

    def __init__(self, clips: ArrowClipDataset, seed: int = 0) -> None:
        self.clips, self.seed, self.epoch = clips, seed, 0
        self.labels = clips.labels[[int(rows[0]) for rows in clips.video_rows]]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.clips.num_videos

    def source(self, v: int) -> tuple[int, int]:
        """(row, frame) of the clip frame that item ``v`` shows this epoch."""
        rows = self.clips.video_rows[v]
        draw = derive_seed(self.seed, "frame", self.epoch, self.clips.video_keys[v])
        return int(rows[draw % len(rows)]), (draw // len(rows)) % self.clips.clip_shape[0]

    def __getitem__(self, v: int) -> tuple[torch.Tensor, int]:
        row, t = self.source(v)
        return torch.from_numpy(self.clips.clip_array(row)[t].copy()), int(self.labels[v])


@dataclass(frozen=True)
class ClipTransform:
    """uint8 (B, T, H, W, 3) or (B, H, W, 3) -> float (B, T, 3, H, W) or (B, 3, H, W) on a device.

    ``normalize="imagenet"`` applies the ImageNet mean/std per channel; ``standardize`` is the
    reference's per-batch standardisation (one scalar mean and std over the whole batch), which
    it applied in expert training and evaluation but not inside distillation losses.
    ``flip`` mirrors each clip horizontally with probability 0.5, all its frames alike.
    """

    normalize: Literal["imagenet", "none"] = "imagenet"
    standardize: bool = True
    flip: bool = False

    def __call__(
        self,
        frames: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # Flip and transpose the uint8 data (a quarter of the bytes), then one fused
        # multiply-add does /255 and the normalisation: ~4x faster than step by step.
        x = frames.to(device or frames.device, non_blocking=True)
        if self.flip:
            flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-2), x)
        x = x.movedim(-1, -3).contiguous().float()  # (..., H, W, 3) -> (..., 3, H, W)
        if self.normalize == "imagenet":
            std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
            x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
        else:
            x.div_(255.0)
        return standardize(x) if self.standardize else x


def standardize(x: torch.Tensor) -> torch.Tensor:
    """The reference's per-batch standardisation: one scalar mean and std over the batch."""
    return (x - x.mean()) / x.std().clamp_min(1e-6)


def decode_clip_bytes(
    values: Sequence[bytes] | np.ndarray, clip_shape: Sequence[int]
) -> np.ndarray:
    """A batch of raw clip byte strings -> one uint8 (B, T, H, W, 3) array."""
    joined = bytearray().join(values)  # writable, so torch can take it without a copy
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(values), *clip_shape)


class ClipCollate(NumpyBatchCollateFn):
    """Ray Data collate: a numpy batch of raw clip bytes -> (uint8 clips, int64 labels) tensors."""

    def __init__(self, clip_shape: Sequence[int]) -> None:
        super().__init__()
        self.clip_shape = tuple(clip_shape)

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.from_numpy(decode_clip_bytes(batch["frames"], self.clip_shape))
        return frames, torch.from_numpy(batch["label"].astype(np.int64))


def ray_clip_dataset(
    shards: ClipShards | str, split: str = "train", *, concurrency: int | None = None
) -> ray.data.Dataset:
    """A Ray Dataset of ``frames`` (raw bytes) and ``label``; iterate it with
    ``ds.iter_torch_batches(collate_fn=ClipCollate(shards.clip_shape))``."""
    import ray.data

    shards = shards if isinstance(shards, ClipShards) else ClipShards(shards)
    ds = ray.data.read_parquet(
        shards.files(split), filesystem=shards.fs, partitioning=None, concurrency=concurrency
    )
    return ds.select_columns(["frames", "label"])
