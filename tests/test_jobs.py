"""The `s2d` subcommands: smoke runs end to end, and bad input exits 2 with a clear message."""

import json
from pathlib import Path

import pytest
from experts_in_process import train_experts

from s2d_ray.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def s2d(command: str, args: list[str]) -> int:
    return main([command, *args])


def test_prepare_data_smoke_test_runs_in_process(tmp_path, capsys):
    out = tmp_path / "data"
    assert (
        s2d("prepare", ["--dataset", "embedded", "--out", str(out), "--local", "--smoke-test"]) == 0
    )
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
    assert s2d("prepare", args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "flip"), [([], None), (["--flip"], True), (["--no-flip"], False)])
def test_train_experts_flip_flag_overrides_the_dataset_default(flag, flip):
    args = build_parser().parse_args(
        ["experts", "--data", "d", "--out", "o", "--smoke-test", *flag]
    )
    assert args.flip is flip and args.precision == "tf32"


def test_train_experts_rejects_a_folder_without_shards(tmp_path, capsys):
    code = s2d(
        "experts",
        [
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "e"),
            "--num-experts",
            "1",
            "--no-mlflow",
        ],
    )
    assert code == 2 and "s2d prepare" in capsys.readouterr().err


@pytest.mark.slow
def test_train_experts_smoke_test_end_to_end(tiny_shards, tmp_path, capsys, ray_local):
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
    assert s2d("experts", args) == 0
    printed = capsys.readouterr().out
    assert "2 complete experts (2 trained now" in printed and db.exists()


@pytest.fixture(scope="module")
def arid_shards(tmp_path_factory):
    """The real ARID clips (dark, H.264, 320x240 and 476x240) at 8x64², 2 videos per class
    split 1 train / 1 test."""
    from s2d_ray.data import PrepareConfig, prepare

    arid = ROOT.parent / "shared" / "data" / "arid11"
    if not arid.is_dir():
        pytest.skip(f"real sample clips not found at {arid}")
    out = tmp_path_factory.mktemp("arid")
    prepare(
        PrepareConfig(
            dataset="video-folder",
            root=str(arid),
            out=str(out),
            frames=8,
            size=64,
            sampling="centred",
            test_fraction=0.5,
        ),
        progress=False,
    )
    return str(out)


def distill_all(data: str, out, capsys, methods=None, variants=True) -> dict[str, str]:
    """Every registered method (or ``methods``) through the jobs, smoke-sized, and with
    ``variants`` the options beyond the defaults; returns each one's printout."""
    from s2d_ray.methods import METHODS

    experts = train_experts(data, str(out / "experts"))
    printed = {}
    static = str(out / "static")
    assert (
        s2d(
            "static", ["--data", data, "--out", static, "--spc", "1", "--smoke-test", "--no-mlflow"]
        )
        == 0
    )
    printed["static"] = capsys.readouterr().out
    for method in sorted(methods or METHODS):
        args = _common(method, data, out / method)
        if METHODS[method].needs_static:
            args += ["--static", static, "--spc", "1"]
        if method.endswith("mtt"):
            args += ["--experts", experts]
        assert s2d("distill", args) == 0, method
        printed[method] = capsys.readouterr().out
    for name, extra in VARIANTS.items() if variants else ():
        method = name.split(":")[0]
        args = [*_common(method, data, out / name.replace(":", "-")), *extra]
        if METHODS[method].needs_static:
            args += ["--static", static]
        if method.endswith("mtt"):
            args += ["--experts", experts]
        assert s2d("distill", args) == 0, name
        printed[name] = capsys.readouterr().out
    return printed


# options beyond each method's defaults: temporal compression and fixed labels
VARIANTS = {
    "dm:temporal": ["--syn-frames", "2", "--segments", "2", "--network", "convnet_gru"],
    "s2d-mtt:temporal": ["--syn-frames", "4", "--segments", "3,5"],
    "frepo:labels": ["--no-learn-labels"],
}


def _common(method: str, data: str, out) -> list[str]:
    smoke = ["--ipc", "1", "--smoke-test", "--no-mlflow"]
    return ["--method", method, "--data", data, "--out", str(out), *smoke]


@pytest.mark.slow
def test_every_method_runs_from_the_jobs_on_the_embedded_set(embedded_small, tmp_path, capsys):
    printed = distill_all(embedded_small, tmp_path, capsys)
    assert "| dm ipc 1 " in printed["dm"] and "| random real ipc 1 " in printed["dm"]
    assert "| s2d-dm ipc 1 " in printed["s2d-dm"] and "| s2d-mtt ipc 1 " in printed["s2d-mtt"]
    code = s2d(
        "evaluate",
        [
            str(tmp_path / "s2d-dm"),
            str(tmp_path / "dm"),
            "--data",
            embedded_small,
            "--smoke-test",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert code == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["name"] for r in rows][-1] == "random real ipc 1" and len(rows) == 3
    assert rows[0]["mib"] < rows[1]["mib"]  # S2D stores less than full videos
    cross = [
        "--data",
        embedded_small,
        "--smoke-test",
        "--network",
        "convnet_gru",
        "--no-baseline",
        str(tmp_path / "s2d-dm"),
    ]
    assert s2d("evaluate", cross) == 0
    assert "evaluation: convnet_gru" in capsys.readouterr().out


@pytest.mark.slow
def test_each_kind_of_method_runs_from_the_jobs_on_the_real_arid_clips(
    arid_shards, tmp_path, capsys
):
    """Real clips (dark, odd sizes, several codecs) through experts, a static memory and one
    method of each matching kind; every method's own paths run on the embedded set above."""
    kinds = ["dm", "s2d-mtt", "frepo", "herding"]  # distribution, trajectory, kernel, coreset
    printed = distill_all(arid_shards, tmp_path, capsys, methods=kinds, variants=False)
    assert set(printed) == {"static", *kinds}
    assert all("stored" in text for text in printed.values())


def test_distill_bad_input_exits_2_with_one_clear_line(embedded_small, tmp_path, capsys):
    base = ["--data", embedded_small, "--out", str(tmp_path / "o"), "--no-mlflow"]
    cases = [
        (["--method", "s2d-dm", "--ipc", "1"], "needs a static memory"),
        (["--method", "dm", "--ipc", "0"], "ipc"),
        (["--method", "dm", "--ipc", "1", "--lr-img", "-3"], "--lr-img"),
        (["--method", "dm", "--ipc", "99"], "fewer than the 99 per class"),
        (["--method", "dm", "--ipc", "1", "--syn-frames", "1", "--segments", "2"], "segments"),
        (["--method", "dm", "--ipc", "1", "--syn-frames", "9"], "--syn-frames must be in"),
        (["--method", "herding", "--ipc", "1", "--syn-frames", "2"], "--syn-frames: not a setting"),
    ]
    for args, message in cases:
        assert s2d("distill", args + base) == 2
        assert message in capsys.readouterr().err
    no_data = ["--method", "dm", "--ipc", "1", "--data", str(tmp_path), "--out", "x"]
    assert s2d("distill", no_data) == 2 and "s2d prepare" in capsys.readouterr().err
    bad_set = ["--data", embedded_small, str(tmp_path), "--no-mlflow"]
    assert s2d("evaluate", bad_set) == 2
    assert "is not a distilled set" in capsys.readouterr().err
