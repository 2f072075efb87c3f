"""A smoke search on a cluster with everything on S3 (moto's server on 127.0.0.1 behind a
pausable proxy): shards, the farm's experts, the static memory and Tune's storage in the
bucket, MLflow's artefacts too (``mlflow server --artifacts-destination s3://...``), the
server with basic auth on. The bucket drops every connection for 3 s during an expert epoch
and again at a trial's first report: both are ridden out. While trials log, a client without
MLflow credentials, or with a wrong password, is refused. The search restores from the
bucket, the best set is exported from it, and no secret (the Ray token, the S3 keys, the
MLflow password) appears in any output."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from s3 import bucket_keys

import s2d_ray
from s2d_ray.cli import main
from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.tracking import start_local_server, stop_local_server

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

OUTAGE_S = 3.0
USER, PASSWORD = "s2d-admin", "a-password-never-logged"
SEARCH_API = "/api/2.0/mlflow/experiments/search"


def status(url: str, path: str, body: dict, user: str | None = None) -> int:
    """The HTTP status of a request to the MLflow server, with or without credentials."""
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Outages(threading.Thread):
    """Drops the bucket for OUTAGE_S once an object matching each marker appears."""

    def __init__(self, s3, markers: list[tuple[str, str]], on_report=None) -> None:
        super().__init__(daemon=True)
        self.s3, self.markers, self.hit, self.on_report = s3, list(markers), [], on_report

    def run(self) -> None:
        deadline = time.monotonic() + 1200
        while self.markers and time.monotonic() < deadline:
            prefix, needle = self.markers[0]
            if any(needle in key for key in bucket_keys(self.s3, prefix)):
                refused = self.s3.refused
                self.s3.pause()
                time.sleep(OUTAGE_S)
                self.s3.resume()
                self.hit.append((needle, self.s3.refused - refused))
                self.markers.pop(0)
                if not self.markers and self.on_report:  # trials are logging now
                    self.on_report()
            time.sleep(0.1)


def test_a_search_with_everything_in_a_bucket_rides_out_outages_and_leaks_no_secret(
    s3, make_cluster, tmp_path, capfd, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)  # before the nodes start: the
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)  # trials inherit them
    cluster = make_cluster(3)
    url, server = start_local_server(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        f"s3://{s3.bucket}/mlflow-artifacts",
        log_file=tmp_path / "mlflow-server.log",
        auth=True,
    )
    refused: dict[str, int] = {}

    def try_to_get_in() -> None:
        refused["read, no credentials"] = status(url, SEARCH_API, {"max_results": 5})
        refused["read, wrong password"] = status(
            url, SEARCH_API, {"max_results": 5}, f"{USER}:wrong"
        )
        create = "/api/2.0/mlflow/experiments/create"
        refused["write, no credentials"] = status(url, create, {"name": "intruder"})
        refused["admin reads"] = status(url, SEARCH_API, {"max_results": 5}, f"{USER}:{PASSWORD}")

    storage = f"s3://{s3.bucket}/search"
    workdir = tmp_path / "work"
    args = ["tune", "--smoke-test", "--workdir", str(workdir), "--storage", storage]
    args += ["--mlflow-uri", url, "--set", "resources.cpu=1"]
    outages = Outages(
        s3,
        [
            ("search/smoke/experts/", "epoch-0000.safetensors"),  # the farm, mid-expert
            ("search/tune/", "/checkpoint_"),  # a trial's first report
        ],
        on_report=try_to_get_in,
    )
    outages.start()
    try:
        assert main(args) == 0
        outages.join(timeout=30)
        assert [needle for needle, _ in outages.hit] == ["epoch-0000.safetensors", "/checkpoint_"]
        assert all(refused > 0 for _, refused in outages.hit), outages.hit  # both hit a request
        assert refused == {
            "read, no credentials": 401,
            "read, wrong password": 401,
            "write, no credentials": 401,
            "admin reads": 200,
        }

        experts = TrajectoryStore.open(f"{storage}/smoke/experts")
        assert [e.expert_id for e in experts.experts()] == [0] and experts.validate() == []
        first = capfd.readouterr()
        assert "Trial task failed" not in first.err, first.err[-3000:]  # no trial lost work
        stored = bucket_keys(s3, "")
        assert not [k for k in stored if k.rsplit("/", 1)[-1].startswith(".tmp-")]
        assert any(k.endswith("distilled/tensors.safetensors") for k in stored)  # artefacts
        assert any(k.endswith("best/tensors.safetensors") for k in stored)
        assert not (tmp_path / "mlartifacts").exists()

        (exported,) = (workdir / "best").iterdir()  # from the bucket's checkpoint
        assert s2d_ray.load_distilled(exported).num_classes == 10
        assert main(args) == 0  # again: the finished search is restored from the bucket
        printed = capfd.readouterr()
        assert (
            f"search: {storage}/tune/" in printed.out and "is finished; reporting it" in printed.out
        )

        client = MlflowClient(url)  # with the credentials of the environment
        experiment = client.get_experiment_by_name("s2d/embedded/smoke")
        runs = client.search_runs([experiment.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("s2d.role") == "search"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 2 and all("val_top1" in c.data.metrics for c in children)
        assert client.get_experiment_by_name("intruder") is None
        texts = [first.out, first.err, printed.out, printed.err]
        texts.append((tmp_path / "mlflow-server.log").read_text())
        for run in runs:
            texts += [repr(run.data.params), repr(run.data.tags)]
    finally:
        stop_local_server(server)

    secrets = {
        "the Ray token": os.environ["RAY_AUTH_TOKEN"],
        "the S3 access key": s3.env["AWS_ACCESS_KEY_ID"],
        "the S3 secret key": s3.env["AWS_SECRET_ACCESS_KEY"],
        "the MLflow password": PASSWORD,
    }
    leaks = []
    for what, secret in secrets.items():
        leaks += [f"{what} in output/MLflow #{i}" for i, t in enumerate(texts) if secret in t]
        for key in bucket_keys(s3, ""):  # every object: artefacts, sets, checkpoints, Tune's state
            body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
            if secret.encode() in body:
                leaks.append(f"{what} in s3://{s3.bucket}/{key}")
        for root in (Path(cluster.tmpdir), workdir):  # Ray's logs of every node, the workdir
            for file in root.rglob("*"):
                readable = file.is_file() and not file.is_symlink()
                data = file.read_bytes() if readable and file.stat().st_size < 50 << 20 else b""
                if secret.encode() in data:
                    at = data.index(secret.encode())
                    leaks.append(f"{what} in {file}: ...{data[max(0, at - 300) : at]!r}")
    assert leaks == []
