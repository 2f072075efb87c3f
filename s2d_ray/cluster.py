"""How the product starts Ray and what its workers' processes need, in one place.

Ray Train workers and Ray Tune trials run their function in a thread of the worker process,
and glibc gives each thread its own malloc arena, whose heaps are at most 64 MiB: the large
activations that models/allocator.py keeps in the main heap go back to fresh ``mmap`` pages
in a thread, and every step faults them in again. Measured at 16x112² on 2 cores, an expert
epoch with its evaluation took 0.24 s per clip in a thread (22 s of system time in a 50 s
epoch) against 0.156 in the main thread. ``MALLOC_ARENA_MAX=1`` sends every thread to the
main arena: 0.14-0.16 s in a thread (bench/train_loops.py measures the farm with and
without it). glibc reads it when a process starts, so it travels in the workers' runtime
environment; other C libraries ignore it.
"""

from __future__ import annotations

import os

WORKER_ENV_VARS = {"MALLOC_ARENA_MAX": "1"}
# The data readers' settings (data/cache.py, data/clips.py, data/stream.py): set on the
# driver, they hold in every worker too.
FORWARDED_ENV_VARS = ("S2D_CACHE_DIR", "S2D_CACHE_GIB", "S2D_DATA_BACKEND", "S2D_READ_CPUS")


def worker_runtime_env() -> dict:
    """The runtime environment every s2d-ray worker runs in (merged into the job's own)."""
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV_VARS if k in os.environ}
    return {"env_vars": {**WORKER_ENV_VARS, **forwarded}}


def init_ray(**kwargs) -> None:
    """Start (or join: ``RAY_ADDRESS``, a submitted job's cluster) Ray unless already up."""
    import ray

    if ray.is_initialized():
        return
    # Before ray.init, so that the workers it starts inherit it: Ray Train's print patch
    # would repeat every line a worker prints.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    ray.init(runtime_env=worker_runtime_env(), configure_logging=False, **kwargs)


def run_with_resources(fn, *args, cpu: float, gpu: float, remote: bool, **kwargs):
    """``fn(*args, **kwargs)``, in this process or, ``remote``, as a Ray task that holds
    ``cpu`` and ``gpu``: on a cluster the driver sits on a head that does not train, and the
    work a search does outside its trials (the static memory, the final judging) belongs
    where the trials run."""
    if not remote:
        return fn(*args, **kwargs)
    import ray

    init_ray()
    task = ray.remote(num_cpus=cpu, num_gpus=gpu, runtime_env=worker_runtime_env())(fn)
    return ray.get(task.remote(*args, **kwargs))
