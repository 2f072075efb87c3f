"""The data layer: dataset registry and readers, clip sampling, Parquet clip shards, streaming."""

from s2d_ray.data.prepare import PrepareConfig, prepare, run_local, run_ray
from s2d_ray.data.readers.media import BadVideoError
from s2d_ray.data.readers.splits import SplitFileError
from s2d_ray.data.registry import DATASETS, DiscoverOptions, discover, get_dataset
from s2d_ray.data.spec import ClipSpec
from s2d_ray.data.stream import (
    ArrowClipDataset,
    ClassSampler,
    ClipCollate,
    ClipShards,
    ClipTransform,
    FrameView,
    ray_clip_dataset,
)

__all__ = [
    "DATASETS",
    "ArrowClipDataset",
    "BadVideoError",
    "ClassSampler",
    "ClipCollate",
    "ClipShards",
    "ClipSpec",
    "ClipTransform",
    "DiscoverOptions",
    "FrameView",
    "PrepareConfig",
    "SplitFileError",
    "discover",
    "get_dataset",
    "prepare",
    "ray_clip_dataset",
    "run_local",
    "run_ray",
]
