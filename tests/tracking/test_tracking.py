"""Behaviour of the MLflow layer against a real sqlite store under tmp_path."""

from __future__ import annotations

import json
import mmap
import multiprocessing as mp
import pickle
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from s2d_ray.tracking import (
    PARENT_RUN_TAG,
    RESUME_KEY_TAG,
    Tracker,
    TrackingConfig,
    TrackingWarning,
    Usage,
    resolve_tracking_uri,
    shared_store,
    start_local_server,
    stop_local_server,
)

MlflowClient = pytest.importorskip("mlflow").MlflowClient


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store for the module: creating MLflow's schema costs ~1.5 s per database."""
    return tmp_path_factory.mktemp("tracking") / "work"


@pytest.fixture
def config(workdir: Path, request: pytest.FixtureRequest) -> TrackingConfig:
    """A fresh experiment per test in the shared store."""
    return TrackingConfig.create(workdir, f"ds-{request.node.name}", cli_uri=None)


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _tracking_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, TrackingWarning)]


# -- URI resolution ------------------------------------------------------------------------------


def test_uri_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "w"
    default = resolve_tracking_uri(None, "w")
    assert default == f"sqlite:///{work / 'mlflow.db'}"
    assert default.startswith("sqlite:////")  # absolute path
    assert work.is_dir()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env/m.db")
    assert resolve_tracking_uri(None, work) == f"sqlite:///{tmp_path / 'env' / 'm.db'}"
    # The CLI value wins over the environment; absolute and server URIs are kept as given.
    assert resolve_tracking_uri("http://127.0.0.1:5000", work) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:////abs/x.db", work) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("sqlite:///rel.db?timeout=3", work) == (
        f"sqlite:///{tmp_path / 'rel.db'}?timeout=3"
    )
    assert resolve_tracking_uri("runs.db", work) == f"sqlite:///{tmp_path / 'runs.db'}"


def test_config_is_absolute_small_and_picklable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = TrackingConfig.create("work", "ucf101")
    assert cfg.uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    assert cfg.artifact_root == (tmp_path / "work" / "mlartifacts").as_uri()
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert len(pickle.dumps(cfg)) < 400
    # Built by hand with a relative path: still made absolute before it can reach a worker.
    assert TrackingConfig(uri="sqlite:///a.db").uri == f"sqlite:///{tmp_path / 'a.db'}"
    http = TrackingConfig.create("work", "ucf101", cli_uri="http://127.0.0.1:5000")
    assert http.artifact_root is None  # the server decides where artifacts go
    with pytest.raises(ValueError):
        TrackingConfig(uri=None, enabled=True)


# -- experiments --------------------------------------------------------------------------------


def test_experiment_created_once_with_absolute_artifact_location(
    config: TrackingConfig, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp_id = Tracker(config).experiment_id()
    assert exp_id is not None
    assert Tracker(config).experiment_id() == exp_id
    client = MlflowClient(config.uri)
    exps = [e for e in client.search_experiments() if e.name == config.experiment]
    assert len(exps) == 1
    assert exps[0].artifact_location == (workdir / "mlartifacts").as_uri()

    # Race: another process creates the experiment between our lookup and our create.
    other = config.with_experiment("ds-race")
    real_get = MlflowClient.get_experiment_by_name
    calls = {"n": 0}

    def get_then_lose_race(self, name):  # first lookup misses, as if the rival was faster
        calls["n"] += 1
        if calls["n"] == 1:
            MlflowClient(config.uri).create_experiment(name)
            return None
        return real_get(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", get_then_lose_race)
    tracker = Tracker(other)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        raced = tracker.experiment_id()
    assert _tracking_warnings(record) == []
    assert raced == client.get_experiment_by_name("ds-race").experiment_id
    assert tracker.active


# -- runs ---------------------------------------------------------------------------------------


def _child_in_other_process(cfg: TrackingConfig, parent_run_id: str, queue) -> None:
    tracker = Tracker(cfg)
    with tracker.start_run("child-remote", parent_run_id=parent_run_id) as run:
        run.log_metrics({"loss": 0.25}, step=7)
        queue.put(run.run_id)


def test_parent_and_children_across_processes(
    config: TrackingConfig, workdir: Path, tmp_path: Path
) -> None:
    tracker = Tracker(config)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with tracker.start_run("parent", tags={"stage": "farm"}) as parent:
        parent.log_params({"lr": 0.01, "epochs": 3, "arch": "convnet"})
        for step in range(3):
            parent.log_metrics({"loss": 1.0 / (step + 1), "acc": 0.1 * step}, step=step)
        parent.log_artifact(artifact)
        parent.log_dict({"a": 1}, "config/resolved.json")
        parent.set_tags({"s2d.dataset": "tiny"})
        with tracker.start_run("child-local", parent_run_id=parent.run_id) as local:
            local.log_metrics({"loss": 0.5}, step=1)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child_in_other_process, args=(config, parent.run_id, queue))
        proc.start()
        remote_id = queue.get(timeout=180)
        proc.join(timeout=120)
        assert proc.exitcode == 0

    client = MlflowClient(config.uri)
    run = client.get_run(parent.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "epochs": "3", "arch": "convnet"}
    assert run.data.tags["stage"] == "farm" and run.data.tags["s2d.dataset"] == "tiny"
    assert run.info.run_name == "parent"
    history = client.get_metric_history(parent.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
    ]
    names = {a.path for a in client.list_artifacts(parent.run_id)}
    assert {"note.txt", "config"} <= names
    assert run.info.artifact_uri.startswith((workdir / "mlartifacts").as_uri())
    assert list((workdir / "mlartifacts").rglob("note.txt"))

    for child_id in (local.run_id, remote_id):
        child = client.get_run(child_id)
        assert child.data.tags[PARENT_RUN_TAG] == parent.run_id
        assert child.info.experiment_id == run.info.experiment_id
        assert child.info.status == "FINISHED"
    remote = client.get_metric_history(remote_id, "loss")
    assert [(m.step, m.value) for m in remote] == [(7, 0.25)]


def test_artefacts_named_by_a_uri_are_fetched_and_logged(
    config: TrackingConfig, tmp_path: Path
) -> None:
    """A static memory on shared storage (s3://...) logs its set like a local one."""
    remote = tmp_path / "bucket" / "static"
    remote.mkdir(parents=True)
    (remote / "manifest.json").write_text("{}")
    with Tracker(config).start_run("static") as run:
        run.log_artifact((remote / "manifest.json").as_uri(), "distilled")
        run.log_artifact(remote.as_uri(), "whole")
    client = MlflowClient(config.uri)
    assert [a.path for a in client.list_artifacts(run.run_id, "distilled")] == [
        "distilled/manifest.json"
    ]
    assert [a.path for a in client.list_artifacts(run.run_id, "whole")] == ["whole/manifest.json"]


def test_input_manifest_is_a_run_input(config: TrackingConfig, tmp_path: Path) -> None:
    shards = tmp_path / "data" / "shards"
    manifest = {"root": str(shards), "num_clips": 12, "clip_shape": [8, 3, 32, 32], "files": ["a"]}
    with Tracker(config).start_run("prepare") as run:
        run.log_input_manifest(manifest, name="tiny-ucf", digest="d1g35t")
    client = MlflowClient(config.uri)
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert (ds.name, ds.digest, ds.source_type) == ("tiny-ucf", "d1g35t", "local")
    assert json.loads(ds.source)["uri"] == str(shards)
    assert json.loads(ds.profile)["num_clips"] == 12
    assert {(t.key, t.value) for t in inputs[0].tags} == {("mlflow.data.context", "train")}
    assert "inputs" in {a.path for a in client.list_artifacts(run.run_id)}


def test_resume_key_continues_the_same_run(config: TrackingConfig) -> None:
    key = "farm/0123abcd/expert-3"
    tracker = Tracker(config)
    with tracker.start_run("expert-3", resume_key=key) as first:
        first.log_params({"seed": 3})
        first.log_metrics({"loss": 1.0}, step=0)
        assert not first.resumed
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # A re-run in a fresh process/tracker: finds the run by its key.
        with Tracker(config).start_run("expert-3", resume_key=key) as again:
            assert again.resumed and again.previous_status == "FINISHED"
            again.log_params({"seed": 4, "extra": "x"})  # changed value: kept, not fatal
            again.log_metrics({"loss": 0.5}, step=1)
        # Another handle on the same run, without the param cache: MLflow rejects the change.
        # That request fails alone; tracking goes on.
        tracker.attach(first.run_id).log_params({"seed": 5})
        tracker.attach(first.run_id).log_metrics({"after": 1.0})
    assert _tracking_warnings(record) == []
    assert tracker.active
    assert again.run_id == first.run_id
    client = MlflowClient(config.uri)
    exp_id = tracker.experiment_id()
    assert len(client.search_runs([exp_id], f"tags.`{RESUME_KEY_TAG}` = '{key}'")) == 1
    run = client.get_run(first.run_id)
    assert run.data.params == {"seed": "3", "extra": "x"}
    assert run.data.metrics["after"] == 1.0
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(first.run_id, "loss")) == 2


def test_exception_marks_run_failed_and_propagates(config: TrackingConfig) -> None:
    tracker = Tracker(config)
    with pytest.raises(RuntimeError, match="boom"), tracker.start_run("doomed") as run:
        raise RuntimeError("boom")
    assert MlflowClient(config.uri).get_run(run.run_id).info.status == "FAILED"
    assert tracker.active  # the job's failure is not a tracking failure


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_a_stopped_run_ends_killed_not_failed(config: TrackingConfig, stop) -> None:
    """Ctrl-C, or Tune ending a trial its scheduler stopped (SystemExit in the trial's thread)."""
    with pytest.raises(stop), Tracker(config).start_run("stopped") as run:
        raise stop()
    assert MlflowClient(config.uri).get_run(run.run_id).info.status == "KILLED"


def test_bad_values_fail_alone(config: TrackingConfig, tmp_path: Path) -> None:
    """A caller's bad value skips that one call; it is not a store failure."""
    tracker = Tracker(config)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with tracker.start_run("sloppy") as run:
            run.log_metrics({"ok": 1.0, "bad": "n/a"}, step=0)
            run.log_artifact(tmp_path / "missing.txt")
            run.log_dict({"obj": object()}, "x.json")
            run.log_metrics({"ok": 2.0}, step=1)
    assert _tracking_warnings(record) == []
    assert tracker.active
    client = MlflowClient(config.uri)
    assert [m.value for m in client.get_metric_history(run.run_id, "ok")] == [1.0, 2.0]
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_many_runs_open_at_once_in_threads(config: TrackingConfig) -> None:
    import threading

    tracker = Tracker(config)
    ids: list[str] = []

    def work(i: int) -> None:
        with tracker.start_run(f"w{i}") as run:
            run.log_metrics({"i": i}, step=i)
            ids.append(run.run_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = MlflowClient(config.uri)
    assert sorted(client.get_run(r).data.metrics["i"] for r in ids) == [0, 1, 2, 3]


# -- failure policy ------------------------------------------------------------------------------


def _track_some_work(tracker: Tracker) -> int:
    total = 0
    with tracker.start_run("parent") as parent:
        parent.log_params({"a": 1})
        for step in range(3):
            total += step
            parent.log_metrics({"loss": 1.0}, step=step)
        parent.log_input_manifest({"root": "/x"}, name="m", digest="d")
        with tracker.start_run("child", parent_run_id=parent.run_id, resume_key="k") as child:
            child.log_dict({"a": 1}, "a.json")
            total += 10
    return total


def _unwritable_sqlite(tmp_path: Path, kind: str) -> str:
    if kind == "parent-is-a-file":
        (tmp_path / "blocker").write_text("")
        return f"sqlite:///{tmp_path / 'blocker' / 'mlflow.db'}"
    (tmp_path / "db-is-a-dir").mkdir()
    return f"sqlite:///{tmp_path / 'db-is-a-dir'}"


@pytest.mark.parametrize("store", ["closed-http-port", "parent-is-a-file", "db-is-a-dir"])
def test_broken_store_warns_once_and_work_completes(tmp_path: Path, store: str) -> None:
    if store == "closed-http-port":
        uri = "http://127.0.0.1:9"
    else:
        uri = _unwritable_sqlite(tmp_path, store)
    tracker = Tracker(TrackingConfig(uri=uri, experiment="broken"))
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert _track_some_work(tracker) == 13
        assert _track_some_work(tracker) == 13
    messages = _tracking_warnings(record)
    assert len(messages) == 1, messages
    assert uri in messages[0] and "continues WITHOUT tracking" in messages[0]
    assert "--no-mlflow" in messages[0]
    assert not tracker.active
    assert time.monotonic() - start < 30  # no MLflow retry loops (~100 s for a bad sqlite)
    # A failed tracker sent to a worker stays quiet there too.
    assert not pickle.loads(pickle.dumps(tracker)).active


def test_store_lock_errors_are_retried(config: TrackingConfig) -> None:
    from mlflow.exceptions import MlflowException

    tracker = Tracker(config)
    attempts = {"n": 0}

    def flaky(client):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert tracker.call("flaky op", flaky) == "ok"
    assert attempts["n"] == 3 and _tracking_warnings(record) == []
    assert tracker.active


def test_disabled_tracker_is_a_noop_without_files_or_mlflow(tmp_path: Path) -> None:
    code = f"""
import os, sys, warnings
warnings.simplefilter("error")
from s2d_ray.tracking import Tracker, TrackingConfig
cfg = TrackingConfig.create({str(tmp_path / "work")!r}, "ds", enabled=False)
t = Tracker(cfg)
with t.start_run("p", resume_key="k") as run:
    run.log_params({{"a": 1}}); run.log_metrics({{"m": 1.0}}, step=1)
    run.log_input_manifest({{"root": "/x"}}, name="n", digest="d"); run.log_dict({{}}, "a.json")
    run.log_artifact("/nonexistent/file.txt"); run.set_tags({{"t": 1}})
    with t.start_run("c", parent_run_id=run.run_id) as child:
        assert child.run_id is None
assert run.run_id is None and t.experiment_id() is None and not t.active
assert "mlflow" not in sys.modules, "disabled tracking imported mlflow"
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []


def test_the_tracking_layer_imports_without_torch() -> None:
    """The MLflow layer needs torch only to read a CUDA peak (Usage), and loads it only then:
    a process that just logs pays neither its second of import nor its memory."""
    code = "import sys, s2d_ray.tracking; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_local_server_round_trip(tmp_path: Path) -> None:
    url, proc = start_local_server(
        f"sqlite:///{tmp_path / 'server.db'}",
        tmp_path / "artifacts",
        log_file=tmp_path / "log",
        timeout_s=240,  # ~10 s on an idle 2-core machine, far more when it is shared
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        cfg = TrackingConfig.create(tmp_path / "work", "ds-http", cli_uri=url)
        note = tmp_path / "note.txt"
        note.write_text("hi")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            tracker = Tracker(cfg)
            with tracker.start_run("parent") as parent:
                parent.log_metrics({"loss": 0.5}, step=2)
                parent.log_artifact(note)
                with tracker.start_run("child", parent_run_id=parent.run_id) as child:
                    child.log_params({"k": 1})
        assert _tracking_warnings(record) == []
        client = MlflowClient(url)
        assert client.get_run(parent.run_id).data.metrics == {"loss": 0.5}
        assert client.get_run(child.run_id).data.tags[PARENT_RUN_TAG] == parent.run_id
        assert list((tmp_path / "artifacts").rglob("note.txt"))  # proxied to the server's dir
    finally:
        stop_local_server(proc)
    assert proc.poll() is not None


@pytest.mark.slow
def test_parallel_writers_log_to_sqlite_through_a_local_server(tmp_path: Path) -> None:
    """One writer uses the sqlite file; several get a server for the duration, and the
    experiment (created in the file first) keeps its artefacts in the workdir's folder."""
    tracking = TrackingConfig.create(tmp_path, "ds-shared")
    with shared_store(tracking, 1) as alone:
        assert alone == tracking
    note = tmp_path / "note.txt"
    note.write_text("hi")
    with shared_store(tracking, 2) as served:
        assert served.uri.startswith("http://127.0.0.1:")
        with Tracker(served).start_run("worker") as run:
            run.log_metrics({"loss": 0.5})
            run.log_artifact(note)
    with pytest.raises(OSError):  # stopped on the way out
        urllib.request.urlopen(served.uri + "/health", timeout=2)
    client = MlflowClient(tracking.uri)
    assert client.get_run(run.run_id).data.metrics == {"loss": 0.5}
    location = client.get_experiment_by_name("ds-shared").artifact_location
    assert location == tracking.artifact_root
    assert list(Path(location.removeprefix("file://")).rglob("note.txt"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_memory_is_the_runs_not_the_processes() -> None:
    """A Ray actor runs trial after trial: each run's peak starts from what is resident."""
    first = Usage()
    block = mmap.mmap(-1, 256 << 20)  # 256 MiB outside malloc, which may keep what it frees
    for page in range(0, len(block), mmap.PAGESIZE):
        block[page] = 1
    used = first.metrics()
    block.close()
    after = Usage().metrics()
    assert used["peak_rss_mib"] - after["peak_rss_mib"] > 200
    assert used["seconds"] >= 0 and "peak_cuda_mib" not in used
