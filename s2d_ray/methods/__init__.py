"""Distillation methods (a registry) and the loop that runs them.

Importing this package registers every built-in method.
"""

from s2d_ray.methods import coresets, dm, frepo, mtt, static  # noqa: F401  (registration)
from s2d_ray.methods.hyperparameters import paper_defaults, smoke_settings
from s2d_ray.methods.real import RealData
from s2d_ray.methods.registry import (
    METHODS,
    STATIC_METHODS,
    DistillContext,
    DistillMethod,
    get_method,
    register_method,
)

__all__ = [
    "METHODS",
    "STATIC_METHODS",
    "DistillContext",
    "DistillMethod",
    "RealData",
    "get_method",
    "paper_defaults",
    "register_method",
    "smoke_settings",
]
