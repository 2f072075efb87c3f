"""Real data as distillation methods see it: per-class batches of normalised clips on the
device, without the per-batch standardisation (SPEC §1: distillation losses never see it).

A real batch of a class is ``n`` distinct videos (drawn with replacement only when the class
has fewer), one random stored clip of each, as the reference's preloaded batches are;
``augment`` flips each clip (all its frames alike) where the dataset flips (SPEC §1)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.registry import DATASETS
from s2d_ray.data.stream import ClipShards, ClipTransform
from s2d_ray.seeding import numpy_rng

log = logging.getLogger(__name__)


@dataclass
class RealData:
    shards: ClipShards
    train: ClipDataset
    device: torch.device
    normalize: Literal["imagenet", "none"] = "imagenet"

    def __post_init__(self) -> None:
        self.transform = ClipTransform(normalize=self.normalize, standardize=False)
        definition = DATASETS.get(self.shards.manifest["dataset"])
        self.flip = bool(definition and definition.flip)
        self.augment = ClipTransform(normalize=self.normalize, standardize=False, flip=self.flip)
        self._videos_of: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for rows in self.train.video_rows:
            self._videos_of[int(self.train.labels[int(rows[0])])].append(rows)

    @classmethod
    def open(cls, data: str, device: torch.device | str = "cpu", normalize="imagenet") -> RealData:
        shards = ClipShards(data)
        return cls(shards, ClipDataset(shards, "train"), torch.device(device), normalize)

    @property
    def num_classes(self) -> int:
        return self.shards.num_classes

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, 3, H, W), as networks take clips."""
        t, h, w, c = self.shards.clip_shape
        return (t, c, h, w)

    def to_float(
        self, frames: torch.Tensor, generator: torch.Generator | None = None, *, flip=False
    ) -> torch.Tensor:
        """uint8 clips -> normalised float clips on the device; ``flip``: mirrored at random
        (drawn from ``generator``) where the dataset flips."""
        if flip and self.flip:
            return self.augment(frames, device=self.device, generator=generator)
        return self.transform(frames, device=self.device)

    def class_clips(self, label: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """uint8 clips of ``n`` distinct videos of class ``label``, one random clip each."""
        return self.train.batch(self.class_rows(label, n, generator))[0]

    def class_frames(self, label: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """A random frame of each of ``class_clips``'s clips, normalised, on the device: only
        those frames are read."""
        rows = self.class_rows(label, n, generator)
        frames = torch.randint(self.clip_shape[0], (len(rows),), generator=generator)
        return self.to_float(self.train.frames(rows, frames))

    def class_rows(self, label: int, n: int, generator: torch.Generator) -> list[int]:
        """The positions of ``class_clips``: distinct videos (with replacement only when the
        class has fewer than ``n``), a random stored clip of each."""
        videos = self.video_rows(label)
        if not videos:
            raise ValueError(f"class {self.shards.classes[label]!r} has no training videos")
        clips = sum(len(v) for v in videos)
        if n >= clips:  # more than the class has: each of its clips once, not duplicates
            _warn_capped(self.shards.classes[label], n, clips)
            every = [int(r) for v in videos for r in v]
            return [every[i] for i in torch.randperm(clips, generator=generator).tolist()]
        if n <= len(videos):
            pick = torch.randperm(len(videos), generator=generator)[:n]
        else:
            pick = torch.randint(len(videos), (n,), generator=generator)
        draws = torch.randint(1 << 30, (n,), generator=generator).tolist()
        return [
            int(videos[v][d % len(videos[v])]) for v, d in zip(pick.tolist(), draws, strict=True)
        ]

    def class_batch(self, label: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` real clips of class ``label`` (``class_clips``), normalised, on the device."""
        return self.to_float(self.class_clips(label, n, generator))

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


_CAPPED_WARNED: set[int] = set()


def _warn_capped(name: str, n: int, clips: int) -> None:
    """Once per process and batch size: a batch larger than a class would repeat clips."""
    if n in _CAPPED_WARNED:
        return
    _CAPPED_WARNED.add(n)
    log.warning(
        "batch_real %d exceeds the %d distinct training clips of class %r (and maybe of "
        "others): such classes give each of their clips once per batch instead",
        n,
        clips,
        name,
    )
