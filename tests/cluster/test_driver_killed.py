"""The search's driver is SIGKILLed mid-search (an OOM-killed or reclaimed head process):
the same command again completes the search, with no duplicate MLflow runs, none left
RUNNING, and no ``mlflow server`` left behind by the dead driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

ROOT = Path(__file__).parents[2]
# two trials at once, one per one-CPU node: the driver serves its sqlite store to them
# through an `mlflow server` it starts, the process a SIGKILL used to orphan
SEARCH = ["--smoke-test", "--set", "budget.max_concurrent=2", "--set", "resources.cpu=1"]
SEARCH += ["--set", "budget.iterations=20", "--set", "budget.eval_every=5"]


def servers_of(workdir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "mlflow" in cmdline and "server" in cmdline and str(workdir) in cmdline:
            found.append(proc)
    return found


def driver(workdir: Path, address: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "s2d_ray", "tune", *SEARCH, "--workdir", str(workdir)]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=os.environ | {"RAY_ADDRESS": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_killed_driver_leaves_nothing_behind_and_the_same_command_finishes(
    make_cluster, tmp_path, embedded_small, embedded_experts
):
    import shutil

    cluster = make_cluster(3)
    workdir = tmp_path / "work"
    shutil.copytree(embedded_small, workdir / "smoke" / "data")
    shutil.copytree(embedded_experts, workdir / "smoke" / "experts")

    first = driver(workdir, cluster.address)
    deadline = time.monotonic() + 600
    while not list(workdir.glob("tune/*/*/checkpoint_*")):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial reported within 10 minutes"
        time.sleep(0.5)
    assert servers_of(workdir), "the driver serves its store to the trials"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    deadline = time.monotonic() + 30
    while servers_of(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert servers_of(workdir) == [], "the dead driver's mlflow server is still running"

    again = driver(workdir, cluster.address)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    assert "search: resuming" in out and ": 2 trials in " in out
    assert servers_of(workdir) == []

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s2d/embedded/smoke")
    found = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in found if r.info.status == "RUNNING"] == []
    (parent,) = [r for r in found if r.data.tags.get("s2d.role") == "search"]
    assert parent.info.status == "FINISHED"
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert len({c.data.tags["s2d.trial_id"] for c in children}) == 2
