"""Shared fixtures."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config) -> None:
    """A private node cache for the session (before any Ray worker starts, so they inherit
    it): tests never write into the user's ``~/.cache``."""
    if "S2D_CACHE_DIR" not in os.environ:
        os.environ["S2D_CACHE_DIR"] = config._s2d_cache = tempfile.mkdtemp(prefix="s2d-cache-")


def pytest_sessionstart(session) -> None:
    """A multi-node run (``-m cluster``) turns token auth on before anything imports Ray:
    Ray's core reads the auth mode and token once per process (tests/cluster/conftest.py)."""
    if "cluster" in (session.config.option.markexpr or ""):
        session.config._s2d_cluster_tmp = set_cluster_env()


def set_cluster_env() -> str:
    """Token auth on (``Cluster`` does not turn it on itself), one token for the run, and a
    short private Ray temp folder: ``Cluster.shutdown()`` deletes
    ``<tmp>/ray/ray_current_cluster``, which would clobber another Ray instance on the
    machine. Before any test module imports Ray."""
    tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
    os.environ.update(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_TMPDIR": tmp,
            "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        }
    )
    return tmp


def pytest_collection_modifyitems(config, items) -> None:
    """Multi-node tests start their own Ray cluster, which cannot share a process with the
    session's local Ray: they run only when asked for (``pytest -m cluster``)."""
    if "cluster" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if "cluster" not in item.keywords]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if "cluster" in i.keywords])
        items[:] = kept


def pytest_unconfigure(config) -> None:
    cluster_tmp = getattr(config, "_s2d_cluster_tmp", None)
    if cluster_tmp:
        shutil.rmtree(cluster_tmp, ignore_errors=True)
    cache = getattr(config, "_s2d_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample clips not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray instance shared by the tests that need Ray."""
    import ray

    from s2d_ray.cluster import init_ray

    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> str:
    """Tiny clip shards (3 classes, 4 train + 2 test videos each, 8x64x64) for fast training."""
    from media import write_video

    from s2d_ray.data import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("tiny_raw")
    for c, cls in enumerate(("a", "b", "c")):
        for i in range(6):
            write_video(root / cls / f"{cls}{i}.avi", 12 + 3 * c + i, size=(80, 64))
    out = tmp_path_factory.mktemp("tiny_shards")
    config = PrepareConfig(
        dataset="video-folder",
        root=str(root),
        out=str(out),
        frames=8,
        size=64,
        sampling="centred",
        test_fraction=0.34,
        test_clips=1,
    )
    prepare(config, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def embedded_small(tmp_path_factory) -> str:
    """The embedded dataset, 4 train + 4 test videos per class (4 clips each): real motion
    and appearance cues at a size distillation tests run in seconds."""
    from s2d_ray.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("embedded_small")
    prepare(PrepareConfig(dataset="embedded", out=str(out), max_videos_per_class=4), progress=False)
    return str(out)


@pytest.fixture(scope="session")
def embedded_experts(embedded_small, tmp_path_factory) -> str:
    """Two 3-epoch experts on ``embedded_small`` (in-process, no Ray): enough snapshots for
    MTT with max_start_epoch 2 and expert_epochs 1."""
    from experts_in_process import train_experts

    out = str(tmp_path_factory.mktemp("experts"))
    return train_experts(embedded_small, out, num_experts=2, epochs=3)


@pytest.fixture(scope="session")
def s3():
    """A bucket on a local S3 server (moto's, on 127.0.0.1) behind a pausable proxy; the
    credentials and endpoint are in the environment, where Ray workers started after this
    inherit them, and ``s3://s2d-test/...`` URIs resolve to it."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3 import PausableProxy

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proxy = PausableProxy(server.get_host_and_port())
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAS2DTESTNEVERLOGGED",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-never-logged",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": proxy.url,
        "MLFLOW_S3_ENDPOINT_URL": proxy.url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=proxy.url)
    client.create_bucket(Bucket="s2d-test")
    proxy.client, proxy.bucket, proxy.env = client, "s2d-test", env
    yield proxy
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()
