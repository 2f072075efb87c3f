"""The job entry points: smoke runs end to end, and bad input exits 2 with a clear message."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_job(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_smoke_test_runs_in_process(tmp_path, capsys):
    job = load_job("prepare_data")
    out = tmp_path / "data"
    assert job.main(["--dataset", "embedded", "--out", str(out), "--local", "--smoke-test"]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert (
        manifest["counts"]["train"]["clips"] == 160 and manifest["counts"]["test"]["clips"] == 120
    )
    printed = capsys.readouterr().out
    assert "dataset embedded: 10 classes" in printed and "skipped: 0" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "ucf101", "--out", "x"], "needs --root"),
        (
            ["--dataset", "video-folder", "--root", "/nonexistent/videos", "--out", "x", "--local"],
            "does not exist",
        ),
        (["--dataset", "hmdb51", "--root", ".", "--out", "x", "--local"], "split"),
        (["--dataset", "embedded", "--out", "x", "--frames", "0"], "frames"),
    ],
)
def test_prepare_data_bad_input_exits_2_naming_the_fix(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    assert load_job("prepare_data").main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "flip"), [([], None), (["--flip"], True), (["--no-flip"], False)])
def test_train_experts_flip_flag_overrides_the_dataset_default(flag, flip):
    args = load_job("train_experts").parse_args(
        ["--data", "d", "--out", "o", "--smoke-test", *flag]
    )
    assert args.flip is flip and args.precision == "fp32"


def test_train_experts_rejects_a_folder_without_shards(tmp_path, capsys):
    job = load_job("train_experts")
    code = job.main(
        ["--data", str(tmp_path), "--out", str(tmp_path / "e"), "--num-experts", "1", "--no-mlflow"]
    )
    assert code == 2 and "prepare_data.py" in capsys.readouterr().err


@pytest.mark.slow
def test_train_experts_smoke_test_end_to_end(tiny_shards, tmp_path, capsys, ray_local):
    job = load_job("train_experts")
    db = tmp_path / "mlflow.db"
    args = [
        "--data",
        tiny_shards,
        "--out",
        str(tmp_path / "experts"),
        "--smoke-test",
        "--mlflow-uri",
        f"sqlite:///{db}",
    ]
    assert job.main(args) == 0
    printed = capsys.readouterr().out
    assert "2 complete experts (2 trained now" in printed and db.exists()
