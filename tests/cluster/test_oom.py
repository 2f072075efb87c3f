"""A trial that allocates past the node's memory is killed by Ray's memory monitor: the
search says which trial, the memory its process held and its node's, starts it again from
its last checkpoint, and goes on to the end."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psutil
import pytest

from s2d_ray.cli import main

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

HOOKS = Path(__file__).parent / "hooks"


def test_a_trial_killed_by_the_memory_monitor_is_named_and_the_search_goes_on(
    make_cluster, tmp_path, monkeypatch, mlflow_server, embedded_small, embedded_experts, capsys
):
    memory = psutil.virtual_memory()
    in_use = 1 - memory.available / memory.total
    # The monitor reads the machine's memory (every node of this cluster shares it): it kills
    # once use passes today's by 30 % of the memory, well above what the cluster, the MLflow
    # server and a trial take (about 4 GiB), well below what the hungry trial asks for.
    threshold = min(0.9, in_use + 0.30)
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{threshold:.3f}")  # before the nodes
    cap = int(min(memory.available - (2 << 30), (threshold - in_use + 0.2) * memory.total))
    assert cap > (threshold - in_use + 0.05) * memory.total, "too little free memory to test"
    # one node: each node's monitor sees the whole machine, and on a second node it would
    # kill that node's trial too
    make_cluster(
        1,
        runtime_env={
            "worker_process_setup_hook": "hungry.install",
            "env_vars": {
                "PYTHONPATH": str(HOOKS),
                "S2D_HUNGRY_MARKER": str(tmp_path / "hungry-marker"),
                "S2D_HUNGRY_CAP_BYTES": str(cap),
            },
        },
    )
    storage = tmp_path / "shared"
    shutil.copytree(embedded_small, storage / "smoke" / "data")
    shutil.copytree(embedded_experts, storage / "smoke" / "experts")
    args = ["tune", "--smoke-test", "--workdir", str(tmp_path / "work"), "--storage", str(storage)]
    assert main([*args, "--mlflow-uri", mlflow_server, "--set", "resources.cpu=1"]) == 0
    assert (tmp_path / "hungry-marker").exists(), "no trial ran the hungry hook"

    printed = capsys.readouterr()
    out = printed.err  # the search's lines; its summary is on stdout
    killed = re.findall(
        r"search: trial \d/2 \(\w+\) was killed by Ray's memory monitor: its process held "
        r"([\d.]+) GB when its node had ([\d.]+) of ([\d.]+) GB in use",
        out,
    )
    assert len(killed) == 1, out[-3000:]
    held, used, limit = map(float, killed[0])
    assert held > 1.0 and used / limit >= threshold - 0.01
    assert "it starts again from its last checkpoint" in out
    assert ": 2 trials in " in printed.out
