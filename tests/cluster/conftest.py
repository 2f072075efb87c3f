"""A multi-node Ray cluster on one machine, as `ray_cluster.yaml` shapes one: a head that
schedules nothing (0 CPUs) and worker nodes of real raylets, with token authentication on.

These tests run in their own pytest invocation (``pytest -m cluster``): a Cluster cannot
share a process with the session-wide ``ray.init()`` of the other tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

# Fast health checks: a removed node is declared dead in about 1.5 s instead of 13 s.
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


@dataclass
class LocalCluster:
    """The cluster, its token and the nodes a test may remove (``workers``)."""

    cluster: object
    token: str
    tmpdir: str
    workers: list = field(default_factory=list)
    joined: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, num_cpus: int = 1, **kwargs):
        node = self.cluster.add_node(num_cpus=num_cpus, **kwargs)
        self.workers.append(node)
        self.cluster.wait_for_nodes()
        return node

    def join_node(self, num_cpus: int = 1) -> None:
        """A fresh node joins from outside, as the autoscaler's would: ``ray start`` with the
        cluster's token (from any thread: ``add_node`` needs the main one)."""
        import ray

        before = sum(n["Alive"] for n in ray.nodes())
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        command = [ray_cli, "start", f"--address={self.address}", f"--num-cpus={num_cpus}"]
        self.joined.append(
            subprocess.Popen(
                [*command, "--block", "--disable-usage-stats"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 120
        while sum(n["Alive"] for n in ray.nodes()) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError("a node started with `ray start` never joined")
            time.sleep(0.5)

    def shutdown(self) -> None:
        for proc in self.joined:  # `ray start --block` stops its node on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.cluster.shutdown()

    def remove_worker(self, node) -> None:
        """Kill the node's raylet and workers at once (a reclaimed spot node), then wait
        until the GCS has marked it dead."""
        import ray

        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            if node.node_id not in alive:
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {node.node_id} still alive 60 s after removal")

    def nodes_where(self, match) -> list:
        """The worker nodes with a process for which ``match(psutil.Process)`` holds (found
        from each node's raylet process tree, so no dashboard is needed)."""
        import psutil
        from ray._private import ray_constants

        def matches(proc) -> bool:
            try:
                return match(proc)
            except psutil.Error:  # gone meanwhile
                return False

        found = []
        for node in self.workers:
            raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
            try:
                children = psutil.Process(raylet.pid).children(recursive=True)
            except psutil.Error:
                continue
            if any(matches(c) for c in children):
                found.append(node)
        return found

    def nodes_running(self, actor_class: str) -> list:
        """The worker nodes where an actor of ``actor_class`` runs."""
        return self.nodes_where(lambda proc: actor_class in " ".join(proc.cmdline()))


def start_cluster(num_workers: int) -> LocalCluster:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "_system_config": HEALTH_CHECKS,
        },
    )
    local = LocalCluster(cluster, os.environ["RAY_AUTH_TOKEN"], os.environ["RAY_TMPDIR"])
    for _ in range(num_workers):
        local.add_worker()
    return local


@pytest.fixture(scope="session")
def token_env():
    """The private Ray temp folder of the run; token auth was turned on at session start
    (tests/conftest.py: Ray's core reads the auth mode once per process)."""
    if os.environ.get("RAY_AUTH_MODE") != "token" or "RAY_TMPDIR" not in os.environ:
        pytest.fail("multi-node tests run as their own invocation: pytest -m cluster")
    return os.environ["RAY_TMPDIR"]


@pytest.fixture
def mlflow_server(tmp_path):
    """A tracking server every node reaches (the store a search with --storage needs)."""
    from s2d_ray.tracking import start_local_server, stop_local_server

    url, proc = start_local_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    yield url
    stop_local_server(proc)


@pytest.fixture
def make_cluster(token_env):
    """``make_cluster(n)``: a head with no CPUs and ``n`` one-CPU worker nodes, this
    process connected to it as a driver. Only the Ray processes it started are stopped."""
    import ray

    started: list[LocalCluster] = []

    def make(num_workers: int = 3, runtime_env: dict | None = None) -> LocalCluster:
        """``runtime_env``: merged into the product's worker environment (a test's hook)."""
        from s2d_ray.cluster import worker_runtime_env

        local = start_cluster(num_workers)
        started.append(local)
        env = worker_runtime_env()
        if runtime_env:
            env = {
                **env,
                **runtime_env,
                "env_vars": env["env_vars"] | runtime_env.get("env_vars", {}),
            }
        ray.init(address=local.address, log_to_driver=False, runtime_env=env)
        return local

    yield make
    ray.shutdown()
    for local in started:
        local.shutdown()
