"""Real data as distillation methods see it: per-class batches of normalised clips on the
device, without the per-batch standardisation (SPEC §1: distillation losses never see it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from s2d_ray.data.stream import ArrowClipDataset, ClassSampler, ClipShards, ClipTransform
from s2d_ray.seeding import numpy_rng


@dataclass
class RealData:
    shards: ClipShards
    train: ArrowClipDataset
    device: torch.device
    normalize: Literal["imagenet", "none"] = "imagenet"

    def __post_init__(self) -> None:
        self.sampler = ClassSampler(self.train)
        self.transform = ClipTransform(normalize=self.normalize, standardize=False)
        self._videos_of: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for rows in self.train.video_rows:
            self._videos_of[int(self.train.labels[int(rows[0])])].append(rows)

    @classmethod
    def open(cls, data: str, device: torch.device | str = "cpu", normalize="imagenet") -> RealData:
        shards = ClipShards(data)
        return cls(shards, ArrowClipDataset(shards, "train"), torch.device(device), normalize)

    @property
    def num_classes(self) -> int:
        return self.shards.num_classes

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, 3, H, W), as networks take clips."""
        t, h, w, c = self.shards.clip_shape
        return (t, c, h, w)

    def to_float(self, frames: torch.Tensor) -> torch.Tensor:
        return self.transform(frames, device=self.device)

    def class_batch(self, label: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random clips of class ``label``, normalised, on the device."""
        return self.to_float(self.sampler.sample(label, n, generator))

    def video_rows(self, label: int) -> list[np.ndarray]:
        """The stored clips (rows) of each video of class ``label``."""
        return self._videos_of[label]

    def one_clip_per_video(self, label: int, seed: int) -> np.ndarray:
        """One stored clip of every video of class ``label``, drawn with ``seed``."""
        rng = numpy_rng(seed, "one-clip-per-video", label)
        return np.array([int(rows[rng.integers(len(rows))]) for rows in self.video_rows(label)])

    def random_videos(self, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_class`` random real videos of each class (one clip each), class-major, as
        float clips: the real initialisation of DM/MTT and the random coreset/baseline."""
        rows, labels = [], []
        for c in range(self.num_classes):
            pool = self.one_clip_per_video(c, seed)
            if len(pool) < per_class:
                raise ValueError(
                    f"class {self.shards.classes[c]!r} has {len(pool)} training videos, fewer "
                    f"than the {per_class} per class asked for; lower --ipc"
                )
            pick = numpy_rng(seed, "random-videos", c).choice(len(pool), per_class, replace=False)
            rows += pool[np.sort(pick)].tolist()
            labels += [c] * per_class
        frames, _ = self.train.batch(rows)
        return self.to_float(frames), torch.tensor(labels, device=self.device)
