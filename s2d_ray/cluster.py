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
import socket
import sys
from pathlib import Path

WORKER_ENV_VARS = {"MALLOC_ARENA_MAX": "1"}
# The data readers' settings (data/cache.py, data/clips.py, data/stream.py): set on the
# driver, they hold in every worker too.
FORWARDED_ENV_VARS = ("S2D_CACHE_DIR", "S2D_CACHE_GIB", "S2D_DATA_BACKEND", "S2D_READ_CPUS")


def worker_runtime_env() -> dict:
    """The runtime environment every s2d-ray worker runs in (merged into the job's own)."""
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV_VARS if k in os.environ}
    return {"env_vars": {**WORKER_ENV_VARS, **forwarded}}


class ClusterUnreachable(ConnectionError):
    """RAY_ADDRESS names a cluster that does not answer."""


def init_ray(**kwargs) -> None:
    """Start (or join: ``RAY_ADDRESS``, a submitted job's cluster) Ray unless already up."""
    import ray

    if ray.is_initialized():
        return
    if "address" not in kwargs:
        kwargs["address"] = checked_address()
    # Before ray.init, so that the workers it starts inherit it: Ray Train's print patch
    # would repeat every line a worker prints.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    ray.init(runtime_env=worker_runtime_env(), configure_logging=False, **kwargs)


def checked_address(address_file: str | None = None, timeout: float = 2.0) -> str | None:
    """The address ``ray.init`` is to join, once something answers there.

    Left to itself, ``ray.init()`` joins the cluster named by ``RAY_ADDRESS``, else the one
    ``ray start`` recorded in ``/tmp/ray/ray_current_cluster``; a head killed without
    ``ray stop`` leaves that record behind, and Ray then retries "Failed to connect to GCS"
    for minutes. A dead RAY_ADDRESS is an error saying what to do; a dead record starts a
    local instance instead, and says so. None: Ray's own choice (nothing recorded)."""
    given = os.environ.get("RAY_ADDRESS", "").strip()
    if given:
        if (
            given in ("local", "auto")
            or given.startswith(("ray://", "http"))
            or _answers(given, timeout)
        ):
            return None  # Ray reads RAY_ADDRESS itself; clients and job servers are its job
        raise ClusterUnreachable(
            f"RAY_ADDRESS={given}: no Ray cluster answers there. Start it (`ray start "
            "--head` on that machine), correct the address, or set RAY_ADDRESS=local to run "
            "on this machine alone"
        )
    record = Path(address_file or _recorded_cluster_file())
    try:
        recorded = record.read_text().strip()
    except OSError:
        return None
    if not recorded or _answers(recorded, timeout):
        return None
    print(
        f"s2d: {record} names a Ray cluster at {recorded} that does not answer (its head "
        "stopped without `ray stop`?); starting a local Ray instance instead. `ray stop` "
        "clears the record; RAY_ADDRESS=<host:port> joins another cluster.",
        file=sys.stderr,
    )
    return "local"


def _recorded_cluster_file() -> str:
    try:
        from ray._common.utils import get_ray_address_file

        return get_ray_address_file(None)
    except ImportError:  # Ray moved it: its documented default
        return "/tmp/ray/ray_current_cluster"


def _answers(address: str, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


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
