"""The data layer: dataset registry and readers, clip sampling, Parquet clip shards, the row index,
streaming readers."""

from s2d_ray.data.clips import ClipDataset, FrameView
from s2d_ray.data.prepare import PrepareConfig, prepare, run_local, run_ray
from s2d_ray.data.readers.media import BadVideoError
from s2d_ray.data.readers.splits import SplitFileError
from s2d_ray.data.registry import DATASETS, DiscoverOptions, discover, get_dataset
from s2d_ray.data.spec import ClipSpec
from s2d_ray.data.stream import ClipShards, ClipTransform

__all__ = [
    "DATASETS",
    "BadVideoError",
    "ClipDataset",
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
    "run_local",
    "run_ray",
]
