"""``s2d tune --smoke-test`` (``jobs/tune_mtt.py``) end to end: inputs built, a Tune + Optuna
search with ASHA, interrupted with SIGINT and resumed by the same command, one MLflow parent
with a child per trial, the best set exported and trainable; re-running reports the finished
search without new runs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import s2d_ray
from s2d_ray.cli import main

ROOT = Path(__file__).parents[2]


def tune(args: list[str]) -> int:
    return main(["tune", *args])


def runs(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s2d/embedded/smoke")  # smoke runs apart
    return client.search_runs([experiment.experiment_id]), client


def interrupt_after_first_report(workdir: Path) -> str:
    """``jobs/tune_mtt.py --smoke-test`` in a subprocess, SIGINT once a trial has reported."""
    driver = subprocess.Popen(
        [sys.executable, "jobs/tune_mtt.py", "--smoke-test", "--workdir", str(workdir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 600  # a busy 2-core machine took 521 s for the whole test
    while not list(workdir.glob("tune/*/*/checkpoint_*")):
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial reported within 10 minutes"
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, out[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three searches' start-ups; 66 s on an idle machine, 521 s busy
def test_tune_mtt_smoke_search_interrupted_resumed_and_reported(
    tmp_path, capsys, ray_local, embedded_small, embedded_experts
):
    """SIGINT mid-search, then the same command: the search completes with its two trials
    and no duplicate MLflow runs; a third run reports the finished search. The shards and
    experts are there already, as a smoke search builds them (the job-submission test
    builds them, through the farm): the search reuses them and distils its static memory."""
    workdir = tmp_path / "search"
    shutil.copytree(embedded_small, workdir / "smoke" / "data")
    shutil.copytree(embedded_experts, workdir / "smoke" / "experts")
    out = interrupt_after_first_report(workdir)
    assert "s2d tune: interrupted: search embedded_ipc1_s2d-mtt" in out
    assert "run the same command again to resume it" in out
    interrupted, _ = runs(workdir)
    assert [r.info.status for r in interrupted if r.data.tags.get("s2d.role") == "search"] == [
        "KILLED"
    ]

    assert tune(["--smoke-test", "--workdir", str(workdir)]) == 0
    printed = capsys.readouterr().out
    assert "search embedded_ipc1_s2d-mtt-" in printed and ": 2 trials in " in printed
    assert re.search(r"\(inputs \d+ s, trials \d+ s, judging \d+ s;", printed)
    assert "| best s2d-mtt ipc 1 " in printed and "| random real ipc 1 " in printed

    found, client = runs(workdir)
    parents = [r for r in found if r.data.tags.get("s2d.role") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2  # one per trial: the interrupted ones were continued
    assert len({c.data.tags["s2d.trial_id"] for c in children}) == 2
    assert {r.info.run_id for r in interrupted} <= {r.info.run_id for r in found}
    assert {c.data.tags["s2d.search"] for c in children} == {"embedded_ipc1_s2d-mtt"}
    used = {"val_top1", "val_top1_std", "stored_mib", "seconds", "peak_rss_mib"}
    for child in children:  # ASHA-stopped ones too: logged with each evaluation
        assert "method.lr_dynamic" in child.data.params and used <= set(child.data.metrics)
        assert child.info.status in ("FINISHED", "KILLED")
        distilled = {a.path for a in client.list_artifacts(child.info.run_id, "distilled")}
        assert distilled == {"distilled/manifest.json", "distilled/tensors.safetensors"}
    assert parent.data.tags["s2d.best_trial"] in {c.data.tags["s2d.trial_id"] for c in children}
    assert {"final_test_top1_mean", "final_val_top1_mean"} <= set(parent.data.metrics)
    (best_run,) = [
        c for c in children if c.data.tags["s2d.trial_id"] == parent.data.tags["s2d.best_trial"]
    ]
    best_judged = client.get_run(best_run.info.run_id).data.metrics  # judged on its own run too
    assert best_judged["final_test_top1_mean"] == parent.data.metrics["final_test_top1_mean"]
    assert {"seconds_inputs", "seconds_trials", "seconds_judging"} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    assert artifacts == {"best/manifest.json", "best/tensors.safetensors"}

    assert (workdir / "smoke" / "data").is_dir() and not (workdir / "data").exists()
    (exported,) = (workdir / "best").iterdir()  # one folder per search
    assert f"best set: {exported} " in printed
    best = s2d_ray.load_distilled(exported)  # the exported set trains a network
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(best.num_classes))
    loader = torch.utils.data.DataLoader(best, batch_size=4, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for videos, labels in loader:
        loss = torch.nn.functional.cross_entropy(model(videos), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)

    # the same command again, its best judged by two networks: the finished search is
    # reported, not redone (the judging is not part of its identity), and judged again
    args = ["--smoke-test", "--workdir", str(workdir), "--set", "budget.final_repeats=2"]
    assert tune(args) == 0
    again = capsys.readouterr().out
    assert "is finished; reporting it" in again and "resuming" not in again
    assert "best trial (by val top-1) " + parent.data.tags["s2d.best_trial"] in again
    assert len(runs(workdir)[0]) == len(found)
    judged = json.loads((exported / "search_evaluation.json").read_text())
    assert judged["protocol"]["repeats"] == 2 and len(judged["rows"][0]["top1"]) == 2
    rejudged = client.get_run(parent.info.run_id).data  # tags say how it was judged last
    assert rejudged.tags["s2d.final_repeats"] == "2"
    assert client.get_run(best_run.info.run_id).data.tags["s2d.final_repeats"] == "2"
    assert "budget.trials" in rejudged.params  # the search's identity, as params
    assert "budget.final_repeats" not in rejudged.params  # a param could not change


def test_tune_bad_input_is_one_clear_line_before_any_trial(
    tmp_path, capsys, monkeypatch, embedded_small, embedded_experts
):
    work = tmp_path / "w"
    base = ["--workdir", str(work), "--no-mlflow"]
    quickstart = str(ROOT / "tune_spaces" / "quickstart" / "embedded_ipc1_s2d-mtt.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text(Path(quickstart).read_text().replace("lr_dynamic:", "lr_dynamc:", 1))
    no_experts = tmp_path / "no-experts"
    no_experts.mkdir()
    mtt, experts = ["--method", "s2d-mtt"], embedded_experts
    two = ["--num-experts", "2", "--no-build"]
    no_gpu = ["--set", "resources.gpu=0"]  # the real datasets' spaces ask for half a GPU
    cases = [
        (["--method", "s2d-mtt", "--dataset", "ucf11"], "no search space named 'ucf11_ipc1_"),
        (["--method", "s2d-mtt", "--space", str(typo)], "space: ['lr_dynamc'] are not settings"),
        (["--method", "s2d-mtt", "--set", "budget.trails=3"], "did you mean budget.trials?"),
        (["--method", "s2d-mtt", "--no-build"], "prepare them first"),
        (["--method", "s2d-dm", "--dataset", "hmdb51", *no_gpu], "no clip shards"),
        (
            [*mtt, "--data", embedded_small, "--experts", str(no_experts), "--no-build"],
            "holds 0 complete experts, the search needs 4",
        ),
        (
            [*mtt, "--space", quickstart, "--data", embedded_small, "--experts", experts, *two],
            "no static memory at",
        ),
    ]
    for args, message in cases:
        assert tune(args + base) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, (args, err)
    assert not work.exists() or not any(work.iterdir())  # nothing built, no trial started
    unreachable = ["--method", "s2d-mtt", "--workdir", str(work)]
    assert tune([*unreachable, "--mlflow-uri", "http://127.0.0.1:9"]) == 2
    assert "does not answer" in capsys.readouterr().err
    assert tune([*unreachable, "--storage", "s3://bucket/search"]) == 2  # sqlite on a cluster
    assert "trials on other nodes cannot reach the MLflow store" in capsys.readouterr().err
    import ray  # a Ray instance without GPUs, whatever this machine has

    monkeypatch.setattr("s2d_ray.search.tuner.init_ray", lambda **kwargs: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    for share in (["--set", "resources.gpu=0.5"], ["--farm-gpus-per-worker", "1"]):
        assert tune([*unreachable, "--no-mlflow", *share]) == 2
        err = capsys.readouterr().err  # at once, not a silent wait for a GPU
        assert "this Ray instance has 0 GPUs" in err and err.strip().count("\n") == 0
    assert not (work / "data").exists()
    assert not (work / "data").exists() and not (work / "tune").exists()
