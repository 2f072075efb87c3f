"""The Ray Train farm: N experts from W workers, MLflow lineage, resume, and a killed worker."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from s2d_ray.experts.farm import FarmConfig, assigned_experts, run_farm
from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.experts.training import ExpertConfig
from s2d_ray.tracking import TrackingConfig


def test_experts_are_split_round_robin_without_overlap():
    todo = [0, 2, 3, 5, 7]
    shares = [assigned_experts(todo, r, 2) for r in range(2)]
    assert shares == [[0, 3, 7], [2, 5]]
    assert assigned_experts(todo, 0, 1) == todo


def test_an_elastic_farm_asks_ray_train_for_a_range_never_more_than_experts_left():
    config = FarmConfig(data="d", out="o", num_experts=8, workers=4, min_workers=2)
    assert config.worker_range(8) == (2, 4)
    assert config.worker_range(3) == (2, 3)
    assert config.worker_range(2) == 2  # nothing to be elastic about
    assert FarmConfig(data="d", out="o", num_experts=8, workers=4).worker_range(8) == 4
    with pytest.raises(ValueError, match=r"min_workers \(5\) is more than workers \(4\)"):
        FarmConfig(data="d", out="o", num_experts=8, workers=4, min_workers=5)


def test_farm_paths_are_absolute_for_workers_in_other_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = FarmConfig(data="work/data", out="work/experts", num_experts=1)
    assert config.data == str(tmp_path / "work/data")
    assert config.out == str(tmp_path / "work/experts")


def farm_config(data, out, **kw):
    expert = ExpertConfig(epochs=kw.pop("epochs", 1), batch_size=4)
    return FarmConfig(
        data=data,
        out=str(out),
        num_experts=kw.pop("num_experts", 3),
        workers=2,
        expert=expert,
        **kw,
    )


def assert_store_exact(out: Path, num_experts: int, epochs: int):
    store = TrajectoryStore.open(str(out))
    experts = store.experts(complete_only=True)
    assert [e.expert_id for e in experts] == list(range(num_experts))
    assert all(e.epochs_completed == epochs for e in experts)
    assert store.validate() == []
    files = sorted(p.name for p in out.glob("expert-*/*"))
    expected = sorted(
        ["manifest.json"] * num_experts
        + [f"epoch-{e:04d}.safetensors" for e in range(epochs + 1)] * num_experts
    )
    assert files == expected  # no temp files, no torn or duplicated snapshots


@pytest.mark.slow
def test_farm_trains_n_experts_with_mlflow_lineage_and_resumes(tiny_shards, tmp_path, ray_local):
    tracking = TrackingConfig.create(tmp_path, "s2d/test", cli_uri=None)
    summary = run_farm(farm_config(tiny_shards, tmp_path / "experts"), tracking, progress=False)
    assert summary.trained == [0, 1, 2]
    assert_store_exact(tmp_path / "experts", 3, 1)
    # two workers logging at once: through a local server in front of the sqlite file
    assert (tmp_path / "mlflow-server.log").is_file()

    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name("s2d/test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "farm")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [
        "expert-0000",
        "expert-0001",
        "expert-0002",
    ]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(parent.inputs.dataset_inputs) == 1  # the shard manifest, for lineage
    history = client.get_metric_history(children[0].info.run_id, "test_acc")
    assert [m.step for m in history] == [0, 1]

    again = run_farm(farm_config(tiny_shards, tmp_path / "experts"), tracking, progress=False)
    assert again.trained == [] and again.parent_run_id == summary.parent_run_id


def train_worker_pids() -> list[int]:
    """PIDs of this test's Ray Train worker processes (local Ray runs under this process)."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(pids)


@pytest.mark.slow
def test_farm_survives_a_killed_worker_with_exactly_n_valid_experts(
    tiny_shards, tmp_path, ray_local
):
    out = tmp_path / "experts"
    config = farm_config(tiny_shards, out, num_experts=4, epochs=3, max_failures=3)
    killed = []

    def kill_a_worker_mid_run():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if (out / "store.json").exists():
                store = TrajectoryStore.open(str(out))
                running = store.experts(complete_only=False)
                if any(e.epochs_completed >= 1 and not e.complete for e in running):
                    workers = train_worker_pids()
                    if workers:
                        os.kill(workers[0], signal.SIGKILL)
                        killed.append(workers[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_mid_run, daemon=True)
    killer.start()
    summary = run_farm(config, TrackingConfig.disabled(), progress=False)
    killer.join(timeout=5)
    assert killed, "the test never found a worker to kill mid-run"
    assert len(summary.experts) == 4
    assert_store_exact(out, 4, 3)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_farm_reading_through_ray_data_stores_the_local_readers_experts(
    tiny_shards, tmp_path, ray_local, monkeypatch
):
    """Clips streamed to the farm's worker by Ray Data read tasks (what a farm on shared
    storage does) give the snapshots, bit for bit, of the worker's own reader in-process; the
    read tasks ask for no CPU, so they run beside a worker that holds one."""
    import torch

    from s2d_ray.data import ClipDataset, ClipShards
    from s2d_ray.experts.training import train_expert, trajectory_settings

    monkeypatch.setenv("S2D_DATA_BACKEND", "ray")
    config = farm_config(tiny_shards, tmp_path / "ray", num_experts=1, epochs=1)
    run_farm(config.model_copy(update={"workers": 1}), TrackingConfig.disabled())
    farmed = TrajectoryStore.open(str(tmp_path / "ray"))
    shards = ClipShards(tiny_shards)
    expert = config.expert.for_data(shards)
    local = TrajectoryStore(
        str(tmp_path / "local"),
        settings=trajectory_settings(expert, shards),
        dataset_fingerprint=shards.fingerprint,
    )
    readers = [ClipDataset(shards, split, backend="local") for split in ("train", "test")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the worker's (cpus_per_worker): the same float sums
    try:
        train_expert(0, expert, *readers, local)
    finally:
        torch.set_num_threads(threads)
    for epoch in range(2):
        assert torch.equal(farmed.load_snapshot(0, epoch), local.load_snapshot(0, epoch))
