"""Synthetic sets: full videos, still images, the S2D memory (static, dynamic, integrator,
pairing), and their one on-disk format."""

from s2d_ray.synthetic.base import STORAGE_DTYPES, SyntheticSet
from s2d_ray.synthetic.integrators import INTEGRATORS, create_integrator, register_integrator
from s2d_ray.synthetic.io import (
    DistilledSet,
    NotADistilledSetError,
    load_distilled,
    load_set,
    read_manifest,
    save_set,
)
from s2d_ray.synthetic.s2d import S2DMemory, slot_groups
from s2d_ray.synthetic.videos import SyntheticImages, SyntheticVideos

__all__ = [
    "INTEGRATORS",
    "STORAGE_DTYPES",
    "DistilledSet",
    "NotADistilledSetError",
    "S2DMemory",
    "SyntheticImages",
    "SyntheticSet",
    "SyntheticVideos",
    "create_integrator",
    "load_distilled",
    "load_set",
    "read_manifest",
    "register_integrator",
    "save_set",
    "slot_groups",
]
