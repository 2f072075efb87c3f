"""A search on a cluster loses the node of a running trial (and the trial's files on that
node's disk): the trial starts again on another node from its last checkpoint in the shared
storage, and the search ends with one MLflow child per trial."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from s2d_ray.cli import main

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

# long enough a trial to lose its node between two reports: 4 reports, one every 5 iterations
WINDOW = ["--set", "budget.iterations=20", "--set", "budget.eval_every=5"]
ONE_CPU = ["--set", "resources.cpu=1"]  # one trial per one-CPU node


def smoke_storage(tmp_path: Path, embedded_small: str, embedded_experts: str) -> Path:
    """Shared storage with the smoke search's shards and experts in place (built by the
    farm and prepare tests elsewhere; here the search's trials are what is under test)."""
    storage = tmp_path / "shared"
    shutil.copytree(embedded_small, storage / "smoke" / "data")
    shutil.copytree(embedded_experts, storage / "smoke" / "experts")
    return storage


def results(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]


def test_a_trial_that_loses_its_node_resumes_elsewhere_from_its_checkpoint(
    make_cluster, tmp_path, embedded_small, embedded_experts, mlflow_server, capsys
):
    cluster = make_cluster(3)
    storage = smoke_storage(tmp_path, embedded_small, embedded_experts)
    workdir = tmp_path / "work"  # the nodes' local disk (one machine: the same folder)
    lost: list[str] = []

    def lose_the_node_of_the_first_checkpointed_trial() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for checkpoint in storage.glob("tune/*/*/checkpoint_*"):
                trial = checkpoint.parent.name
                # the trial's process works in a folder named after the trial
                nodes = cluster.nodes_where(lambda proc, trial=trial: trial in proc.cwd())
                if not nodes:
                    continue
                (node,) = nodes
                cluster.remove_worker(node)
                for local in (workdir / "trials").iterdir():  # the node's disk goes too
                    if local.name in trial:
                        shutil.rmtree(local)
                lost.append(trial)
                cluster.join_node()  # the autoscaler's replacement, for the next trials
                return
            time.sleep(0.2)

    killer = threading.Thread(target=lose_the_node_of_the_first_checkpointed_trial, daemon=True)
    killer.start()
    args = ["--smoke-test", "--workdir", str(workdir), "--storage", str(storage)]
    assert main(["tune", *args, "--mlflow-uri", mlflow_server, *WINDOW, *ONE_CPU]) == 0
    killer.join(timeout=60)
    assert lost, "no trial was found running after its first checkpoint"
    printed = capsys.readouterr().out
    assert ": 2 trials in " in printed

    (trial,) = storage.glob(f"tune/*/{lost[0]}")
    rows = results(trial)
    iterations = [row["iteration"] for row in rows]
    assert len({row["pid"] for row in rows}) == 2, "the lost trial was not run again"
    assert iterations == sorted(set(iterations)), f"reports restarted: {iterations}"
    assert iterations[-1] == 20 or rows[-1].get("done")  # it ended (ASHA may stop it early)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("s2d/embedded/smoke")
    found = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in found if r.data.tags.get("s2d.role") == "search"]
    assert parent.info.status == "FINISHED"
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.tags["s2d.trial_id"] for c in children) == sorted(
        {c.data.tags["s2d.trial_id"] for c in children}
    )
    assert len(children) == 2  # the resumed trial continued its run, not a second one
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
