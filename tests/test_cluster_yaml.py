"""The shipped cluster definition passes Ray's own schema check offline (no cloud calls), and
what the schema does not check: worker bounds, integer resources, local paths that exist,
token auth on every node, a loopback dashboard, current images, idempotent setup, one place
naming the shared storage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# the user's Ray token and MLflow credentials: mounted from their home, never committed
USER_FILES = {"~/.ray/auth_token", "~/.s2d_secrets"}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def test_ray_accepts_the_cluster_config(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_what_the_schema_misses(config):
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for name, node in types.items():
        low, high = node.get("min_workers", 0), node.get("max_workers", config["max_workers"])
        assert 0 <= low <= high <= config["max_workers"], name
        for resource, amount in node["resources"].items():
            assert isinstance(amount, int) and amount >= 0, (name, resource)
    head = types[config["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0  # the driver and MLflow, no training
    assert any(node["resources"].get("GPU", 0) for node in types.values())
    assert any(
        node["resources"].get("CPU", 0) and not node["resources"].get("GPU")
        for name, node in types.items()
        if name != config["head_node_type"]
    )  # a CPU type for data preparation


def test_every_local_path_it_names_exists(config):
    for remote, local in config["file_mounts"].items():
        if local in USER_FILES:
            assert remote == local, remote
            continue
        assert (ROOT / local).exists(), local


def test_token_auth_and_loopback_everywhere(config):
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [
        c for c in starts
        if re.match(r"(source ~/\.s2d_secrets && )?RAY_AUTH_MODE=token ", c)
        and re.search(r"(^| )ray start ", c)
    ]  # fmt: skip
    others = [c for c in starts if "ray start" in c and c not in ray_starts]
    assert len(ray_starts) == 2 and not others
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # MLflow on the head's private address, where trials on the workers reach it; never all
    server = " ".join(config["head_setup_commands"])
    assert "mlflow server --app-name basic-auth --host $(hostname -I | awk '{print $1}')" in server
    assert "default_permission = NO_PERMISSIONS" in server  # no user, no access
    assert "~/.s2d_secrets" in config["file_mounts"]  # the credentials: the user's file
    assert "0.0.0.0" not in (ROOT / "ray_cluster.yaml").read_text()
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert "'export RAY_AUTH_MODE=token" in config["setup_commands"][0]  # jobs from the head


def test_images_are_current_ubuntu_with_a_gpu_driver_where_there_are_gpus(config):
    """Ray's ``latest_dlami`` is an Ubuntu 18.04 image with CUDA 11.2: too old a glibc for
    the torch wheel and too old a driver for its CUDA. EC2 resolves AWS's public SSM
    parameters at launch instead."""
    for name, node in config["available_node_types"].items():
        image = node["node_config"]["ImageId"]
        assert image.startswith("resolve:ssm:/aws/service/") and "22.04" in image, name
        gpu = node["resources"].get("GPU", 0) > 0
        assert ("nvidia-driver" in image) == gpu, name


def test_setup_is_idempotent_and_installs_into_one_venv(config):
    """``ray up`` again re-runs every setup command: nothing may pile up or start twice."""
    setup = config["setup_commands"]
    assert "> ~/.s2d_env" in setup[0] and ">> ~/.s2d_env" not in setup[0]
    assert setup[1].startswith("grep -qx 'source ~/.s2d_env' ~/.bashrc ||")
    assert any("uv venv --allow-existing --python 3.11 ~/s2d-venv" in c for c in setup)
    assert any("pip install --python ~/s2d-venv/bin/python -e ~/s2d-ray" in c for c in setup)
    assert "curl -sf $MLFLOW_TRACKING_URI/health ||" in config["head_setup_commands"][-1]


def test_the_shared_storage_is_named_in_one_place():
    text = (ROOT / "ray_cluster.yaml").read_text()
    buckets = set(re.findall(r"s3://[\w.-]+", text))
    assert len(buckets) == 1
    assert len(re.findall(re.escape(next(iter(buckets))), text)) == 1
