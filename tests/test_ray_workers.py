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
    env = worker_runtime_env()["env_vars"]
    assert env.items() >= WORKER_ENV_VARS.items() and env is not WORKER_ENV_VARS  # extendable


def test_workers_read_through_the_drivers_node_cache(ray_local):
    """The readers' settings set on the driver hold in its workers (the conftest sets a
    private S2D_CACHE_DIR before Ray starts)."""

    @ray_local.remote(num_cpus=0)
    def cache_dir() -> str | None:
        return os.environ.get("S2D_CACHE_DIR")

    assert worker_runtime_env()["env_vars"]["S2D_CACHE_DIR"] == os.environ["S2D_CACHE_DIR"]
    assert ray_local.get(cache_dir.remote()) == os.environ["S2D_CACHE_DIR"]
