"""Reading clip shards into training: the shard directory, frames, transforms, Ray Data reads.

Clips stay uint8 (T, H, W, 3) until they reach the consuming device; ``ClipTransform`` turns a
batch into float (B, T, 3, H, W) there, so host memory and transfers carry a quarter the bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from s2d_ray import files
from s2d_ray.data import shards as sh
from s2d_ray.data.rowindex import RowIndex, build_index
from s2d_ray.normalization import IMAGENET_MEAN, IMAGENET_STD
from s2d_ray.seeding import derive_seed

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from s2d_ray.data.clips import ClipDataset


class ClipShards:
    """An opened shard directory (local path or URI): its manifest and its shard files."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = files.filesystem(uri)
        manifest_path = files.join(self.root, sh.MANIFEST)
        if not files.exists(self.fs, manifest_path):
            what = "holds no clip shards" if files.exists(self.fs, self.root) else "does not exist"
            raise FileNotFoundError(
                f"--data {uri} {what} (no {sh.MANIFEST}): pass the folder that "
                "`s2d prepare --out DIR` wrote, or make one with it"
            )
        self.manifest = files.read_json(self.fs, manifest_path)
        self.classes: list[str] = self.manifest["classes"]
        self.clip_shape: tuple[int, int, int, int] = tuple(self.manifest["clip_shape"])
        self.fingerprint: str = self.manifest["fingerprint"]

    @property
    def location(self) -> str:
        """The directory as any process of the cluster opens it: the URI, or the absolute path."""
        return self.uri if "://" in self.uri else self.root

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
                f"(`s2d prepare --dataset {self.manifest['dataset']} "
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

    def row_index(self, split: str) -> RowIndex:
        """The split's row index: prepare's file, or derived from the shards that predate it."""
        entry = self.manifest.get("row_index", {}).get(split)
        if entry is not None:
            path = files.join(self.root, entry["path"])
            table = files.retrying(self.fs, path, lambda: pq.read_table(path, filesystem=self.fs))
            return RowIndex.from_table(table)
        self.files(split)  # the errors that name the fix
        shards = [s["path"] for s in self.manifest["shards"] if s["split"] == split]
        index = RowIndex.from_table(build_index(self.fs, self.root, shards))
        groups = len(index.row_groups())
        mib = len(index) * int(np.prod(self.clip_shape)) / max(1, groups) / 2**20
        if mib > 4 * sh.ROW_GROUP_MIB:
            log.warning(
                "%s predates the row index: its row groups hold %.0f MiB of clips on average, "
                "and a reader holds one at a time; prepare it again into a new folder for "
                "%.0f MiB row groups (s2d prepare --dataset %s --out NEW_DIR)",
                self.uri, mib, sh.ROW_GROUP_MIB, self.manifest.get("dataset"),
            )  # fmt: skip
        return index

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


class FrameView(Dataset):
    """Single frames for static (image) learning: item v is one random frame of video v,
    from any of its stored clips (SPEC §1: one random frame per video per access).

    The (clip, frame) pair is drawn from (seed, epoch, v), not from a global RNG, so the same
    epoch yields the same frames whatever the number of DataLoader workers; call
    ``set_epoch`` each epoch.
    """

    def __init__(self, clips: ClipDataset, seed: int = 0) -> None:
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
        frames, labels = self.batch([v])
        return frames[0], int(labels[0])

    def batch(self, items: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``items`` as uint8 (B, H, W, 3) frames and their labels, only those frames
        read."""
        sources = [self.source(int(v)) for v in items]
        rows, frames = zip(*sources, strict=True) if sources else ((), ())
        return self.clips.frames(rows, frames), self.labels[torch.as_tensor(items).long()]


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
        if self.standardize:  # in place (x is this call's own): one float copy fewer
            mean, std = x.mean(), x.std().clamp_min(1e-6)
            x.sub_(mean).div_(std)
        return x


def standardize(x: torch.Tensor) -> torch.Tensor:
    """The reference's per-batch standardisation: one scalar mean and std over the batch."""
    return (x - x.mean()) / x.std().clamp_min(1e-6)


READ_CPUS_ENV = "S2D_READ_CPUS"
_readers: dict[tuple[str, str], ClipDataset] = {}


def ray_batches(
    dataset: ClipDataset,
    plan: Iterable[Sequence[int] | torch.Tensor],
    *,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``dataset.batch(p)`` for each ``p`` of ``plan``, fetched by Ray Data tasks anywhere in
    the cluster: the read is a function of the plan alone, so the batches equal the local
    reader's bit for bit. The plan's batches must share one size (the last may be smaller):
    Ray Data re-batches the stream to it.

    Read tasks ask for ``$S2D_READ_CPUS`` CPUs (default 0): inside a Train worker or a trial
    that holds the node's CPUs, a read that waits for a free CPU would wait for ever.
    """
    import ray
    import ray.data

    from s2d_ray.cluster import init_ray

    plan = [np.asarray(p, dtype=np.int64).reshape(-1) for p in plan]
    if not plan:
        return
    sizes = {len(p) for p in plan[:-1]}
    if len(sizes) > 1 or (sizes and len(plan[-1]) > sizes.pop()):
        raise ValueError("a streamed plan's batches must share one size (the last may be smaller)")
    init_ray()
    plan_ref = ray.put(plan)
    uri, split = dataset.shards.location, dataset.split

    def fetch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reader = _readers.get((uri, split))
        if reader is None:
            from s2d_ray.data.clips import ClipDataset

            reader = _readers[(uri, split)] = ClipDataset(uri, split)
        positions = np.concatenate([ray.get(plan_ref)[int(k)] for k in batch["batch"]])
        frames, labels = reader.batch(positions)
        return {"frames": frames.numpy(), "label": labels.numpy()}

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not two INFO lines an epoch
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the plan's order is the batches' order
    context.enable_progress_bars = False
    # At most ``prefetch`` + 1 reads at once: the window that bounds memory, and no more
    # worker processes (each imports torch) than the window needs.
    ds = ray.data.from_items([{"batch": k} for k in range(len(plan))]).map_batches(
        fetch,
        batch_size=1,
        num_cpus=float(os.environ.get(READ_CPUS_ENV, 0)),
        compute=ray.data.TaskPoolStrategy(size=max(1, prefetch) + 1),
    )
    for batch in ds.iter_batches(
        batch_size=len(plan[0]), batch_format="numpy", prefetch_batches=prefetch
    ):
        frames = torch.from_numpy(np.ascontiguousarray(batch["frames"]))
        if pin_memory:
            frames = frames.pin_memory()
        yield frames, torch.from_numpy(batch["label"].astype(np.int64))
