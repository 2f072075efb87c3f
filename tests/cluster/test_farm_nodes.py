"""The expert farm loses a node mid-run: with a replacement node (the autoscaler's part)
and without one (an elastic worker group that goes on with what is left). Either way the
store ends with exactly the experts asked for, bit-identical to an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from s2d_ray.experts.farm import FarmConfig, run_farm
from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.experts.training import ExpertConfig
from s2d_ray.tracking import TrackingConfig

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

NUM_EXPERTS, EPOCHS = 4, 3


def test_a_client_without_the_token_is_refused(make_cluster, tmp_path):
    """The GCS refuses a driver with no token or a wrong one; the right token connects."""
    cluster = make_cluster(1)
    probe = (
        "import ray\n"
        "try:\n"
        f"    ray.init(address={cluster.address!r}, log_to_driver=False)\n"
        "except ConnectionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )

    def connect(**env) -> tuple[str, str]:
        # a fresh HOME: no ~/.ray/auth_token to fall back on
        base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_TMPDIR": cluster.tmpdir}
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=base | env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        return result.stdout.strip(), result.stderr

    said, log = connect()
    assert said == "refused" and "Authentication token is missing or incorrect" in log
    said, log = connect(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)
    assert said == "refused" and "Unauthenticated" in log
    assert connect(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)[0] == "connected"


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory) -> TrajectoryStore:
    """The same experts trained in this process, one thread (a farm worker's), no Ray."""
    from s2d_ray.data import ClipDataset, ClipShards
    from s2d_ray.experts.training import train_expert, trajectory_settings

    shards = ClipShards(tiny_shards)
    expert = expert_config().for_data(shards)
    store = TrajectoryStore(
        str(tmp_path_factory.mktemp("uninterrupted")),
        settings=trajectory_settings(expert, shards),
        dataset_fingerprint=shards.fingerprint,
    )
    train, test = ClipDataset(shards, "train"), ClipDataset(shards, "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for expert_id in range(NUM_EXPERTS):
            train_expert(expert_id, expert, train, test, store)
    finally:
        torch.set_num_threads(threads)
    return store


def expert_config() -> ExpertConfig:
    return ExpertConfig(epochs=EPOCHS, batch_size=4)


def expert_in_progress(store_dir: Path) -> bool:
    """An expert with a stored epoch that is not complete: a worker is mid-expert."""
    if not (store_dir / "store.json").exists():
        return False
    running = TrajectoryStore.open(str(store_dir)).experts(complete_only=False)
    return any(e.epochs_completed >= 1 and not e.complete for e in running)


def lose_a_node_mid_farm(
    cluster, store_dir: Path, *, replace: bool
) -> tuple[list, threading.Thread]:
    removed: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not removed:
            nodes = cluster.nodes_running("RayTrainWorker")
            if nodes and expert_in_progress(store_dir):
                cluster.remove_worker(nodes[0])
                removed.append(nodes[0].node_id)
                print(f"removed node {nodes[0].node_id}", flush=True)
                if replace:  # the autoscaler's part: a fresh node of the same type
                    time.sleep(3)
                    cluster.join_node()
                    print("added a node", flush=True)
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return removed, thread


@pytest.mark.parametrize("replace", [True, False], ids=["node-replaced", "elastic"])
def test_the_farm_loses_a_node_and_ends_with_exactly_its_experts(
    make_cluster, tiny_shards, tmp_path, uninterrupted, replace
):
    cluster = make_cluster(2)  # two one-CPU nodes: no spare capacity for a fixed group
    out = tmp_path / "experts"
    config = FarmConfig(
        data=tiny_shards,
        out=str(out),
        num_experts=NUM_EXPERTS,
        workers=2,
        min_workers=None if replace else 1,
        max_failures=3,
        expert=expert_config(),
    )
    removed, watcher = lose_a_node_mid_farm(cluster, out, replace=replace)
    summary = run_farm(config, TrackingConfig.disabled(), progress=False)
    watcher.join(timeout=60)
    assert removed, "no Train worker was found mid-expert to lose its node"

    assert [e.expert_id for e in summary.experts] == list(range(NUM_EXPERTS))
    store = TrajectoryStore.open(str(out))
    assert store.validate() == []
    names = sorted(p.name for p in out.glob("expert-*/*"))
    expected = ["manifest.json"] + [f"epoch-{e:04d}.safetensors" for e in range(EPOCHS + 1)]
    assert names == sorted(expected * NUM_EXPERTS)  # no temp files, no torn snapshots
    for expert_id in range(NUM_EXPERTS):
        for epoch in range(EPOCHS + 1):
            assert torch.equal(
                store.load_snapshot(expert_id, epoch),
                uninterrupted.load_snapshot(expert_id, epoch),
            ), f"expert {expert_id} epoch {epoch} differs from the uninterrupted run"
