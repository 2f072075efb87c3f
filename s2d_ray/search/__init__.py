"""The search: YAML search spaces, the trial function and the Ray Tune + Optuna driver."""

from s2d_ray.search.spaces import SearchSpace, SpaceError, load_space

__all__ = ["SearchSpace", "SpaceError", "load_space"]
