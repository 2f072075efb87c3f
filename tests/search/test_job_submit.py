"""``ray job submit -- python jobs/tune_mtt.py --smoke-test`` against a local cluster with
token authentication on, as on a GPU box or a cluster: the job succeeds on 2 CPUs within a
bound (the deadlock guard: the job's driver, the expert farm's Ray Train worker, the two
trials at once on one CPU and half a GPU each, then the static memory's and the judging's Ray
tasks, all on the same two CPUs; a trial nests no Ray work of its own), the head declares one
logical GPU (Ray schedules fractions of it as of a real one), and the search keeps what every
node reads on shared storage (``--storage``, the code path of s3://) and logs to an MLflow
server, as ray_cluster.yaml sets it up. The store holds one search with a child per trial,
loadable artefacts and a trainable exported set, which comes from Tune's storage, not from
the disk of the node that ran the trial."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

import s2d_ray
from s2d_ray.cli import main
from s2d_ray.synthetic import load_set
from s2d_ray.tracking import start_local_server, stop_local_server

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
SUBMIT_TIMEOUT_S = 480  # the smoke search takes about 2 minutes; a deadlock never ends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_cluster():
    """A 2-CPU head on loopback with token auth, in its own temp dir (so that ``ray.init()``
    elsewhere in this session never finds it) and stopped by signalling its ``--block``
    process (``ray stop`` would also kill the session's ``ray_local`` instance)."""
    temp = tempfile.mkdtemp(prefix="s2dray-", dir="/tmp")  # short: Unix socket paths
    gcs, dashboard = free_port(), free_port()
    # the session's ray_local instance holds the default agent ports: a second agent on them
    # never registers ("No available agent to submit job")
    agent = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
        "object-manager-port")]  # fmt: skip
    env = os.environ | {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # the job's `python` is ours
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--num-gpus=1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={temp}", "--disable-usage-stats", *agent],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while not _answers(env):
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the head's job server never answered"
            time.sleep(2)
        yield env
    finally:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # its raylet, GCS, agents, workers
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _answers(env: dict) -> bool:
    listed = subprocess.run(
        [BIN / "ray", "job", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    return listed.returncode == 0


@pytest.fixture
def mlflow_server(tmp_path):
    """What ray_cluster.yaml runs on the head: a server every node logs to."""
    url, server = start_local_server(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        tmp_path / "mlartifacts",
        log_file=tmp_path / "mlflow-server.log",
    )
    yield url
    stop_local_server(server)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the cluster's start, the submission's bound, the checks
def test_ray_job_submit_smoke_search_on_a_token_cluster(
    token_cluster, mlflow_server, tmp_path, capsys, ray_local
):
    env = token_cluster
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    assert not _answers(no_token), "the cluster accepted a client without the token"

    workdir, shared = tmp_path / "search", tmp_path / "shared"
    args = ["--smoke-test", "--workdir", str(workdir), "--storage", shared.as_uri()]
    args += ["--mlflow-uri", mlflow_server]
    for setting in ("resources.cpu=1", "resources.gpu=0.5", "budget.max_concurrent=2"):
        args += ["--set", setting]
    command = [BIN / "ray", "job", "submit", "--working-dir", str(ROOT), "--"]
    command += ["python", "jobs/tune_mtt.py", *args]
    for _ in range(12):  # the head's job agent registers a little after the server answers
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S
        )
        if "No available agent to submit job" not in done.stderr:
            break
        time.sleep(5)
    logs = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, logs
    assert "succeeded" in done.stdout, logs
    assert "| best s2d-mtt ipc 1 " in done.stdout and "| random real ipc 1 " in done.stdout

    built = {p.name for p in (shared / "smoke").iterdir()}  # the inputs every node reads
    assert {"data", "experts"} <= built and any(n.startswith("static-spc") for n in built)
    assert list((shared / "tune").glob("embedded_ipc1_s2d-mtt-*/run_trial_*/checkpoint_*"))
    assert not (workdir / "data").exists() and not (workdir / "tune").exists()

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("s2d/embedded/smoke")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if r.data.tags.get("s2d.role") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert len({c.data.tags["s2d.trial_id"] for c in children}) == 2
    assert [c.data.tags.get("s2d.gpu_ids") for c in children] == ["0", "0"]  # one GPU, shared
    started, ended = (c.info.start_time for c in children), (c.info.end_time for c in children)
    assert max(started) < min(ended), "the two trials did not run at once"
    for child in children:
        assert {"method.lr_dynamic", "method.lr_hal", "method.syn_steps"} <= set(child.data.params)
        assert "val_top1" in child.data.metrics
        assert child.data.tags["s2d.experts"] and child.data.tags["s2d.static"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished, "ASHA stopped every trial: the best one must run to the end"
    for child in children:  # a trial ASHA stopped keeps the set of its last evaluation
        _check_trial_artifacts(client, child.info.run_id, tmp_path / child.info.run_id)

    # as if other nodes had run every trial: the best set comes from Tune's storage (its
    # judging, cached beside it, is kept: judged again, it would wait for a GPU here)
    (exported,) = (workdir / "best").iterdir()  # one folder per search
    shutil.rmtree(workdir / "trials")
    for file in ("manifest.json", "tensors.safetensors"):
        (exported / file).unlink()
    capsys.readouterr()
    assert main(["tune", "--method", "s2d-mtt", *args]) == 0
    assert "is finished; reporting it" in capsys.readouterr().out
    best = s2d_ray.load_distilled(exported)
    assert best.num_classes == 10 and len(best) % 10 == 0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(best.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for videos, labels in torch.utils.data.DataLoader(best, batch_size=4, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(videos), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)


def _check_trial_artifacts(client: MlflowClient, run_id: str, into: Path) -> None:
    """The distilled memories round-trip through safetensors and the previews decode."""
    local = Path(client.download_artifacts(run_id, "", str(into)))
    synthetic, _ = load_set(local / "distilled")
    items, labels = synthetic.materialize()  # (N, T, 3, H, W)
    assert torch.isfinite(items).all() and set(labels.tolist()) == set(range(10))
    gifs = sorted((local / "previews" / "gifs").glob("*.gif"))
    assert len(gifs) == 10
    with Image.open(io.BytesIO(gifs[0].read_bytes())) as gif:
        assert gif.n_frames == items.shape[1]
    with Image.open(local / "previews" / "frame-differences.png") as png:
        assert png.size[0] > 0 and png.size[1] > 0
