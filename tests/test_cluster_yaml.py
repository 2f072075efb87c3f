"""Every shipped cluster YAML passes Ray's own schema check, offline (no cloud calls)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_ray_cluster_yaml_is_a_valid_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))
    for name, node in config["available_node_types"].items():
        assert node.get("min_workers", 0) <= node.get("max_workers", config["max_workers"]), name
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert commands.count("RAY_AUTH_MODE=token") == 2  # token auth stays on
    assert "--dashboard-host=127.0.0.1" in commands
