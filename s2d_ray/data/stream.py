"""Reading clip shards into training: the shard directory, frames, transforms.

Clips stay uint8 (T, H, W, 3) until they reach the consuming device; ``ClipTransform`` turns a
batch into float (B, T, 3, H, W) there, so host memory and transfers carry a quarter the bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
import torch

from s2d_ray import files
from s2d_ray.data import shards as sh
from s2d_ray.data.rowindex import RowIndex, build_index
from s2d_ray.normalization import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


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
