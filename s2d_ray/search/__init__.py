"""The search: YAML search spaces, the inputs it builds, the trial function, the Ray Tune +
Optuna driver, and the best trial's judging and export."""

from s2d_ray.search.spaces import SearchSpace, SpaceError, load_space

__all__ = ["SearchSpace", "SpaceError", "load_space"]
