"""The environment s2d-ray's Ray workers run in (s2d_ray/cluster.py)."""

from __future__ import annotations

import os

from s2d_ray.cluster import WORKER_ENV_VARS, init_ray, worker_runtime_env


def test_workers_allocate_from_one_malloc_arena(ray_local):
    """Training threads in Ray workers must share the main arena (see s2d_ray/cluster.py)."""
    init_ray()  # already up: a no-op, not a second cluster

    @ray_local.remote(num_cpus=1)
    def arena_max() -> str | None:
        return os.environ.get("MALLOC_ARENA_MAX")

    assert ray_local.get(arena_max.remote()) == "1"
    assert worker_runtime_env() == {"env_vars": WORKER_ENV_VARS}
    assert worker_runtime_env()["env_vars"] is not WORKER_ENV_VARS  # callers may extend it
