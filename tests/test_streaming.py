"""No consumer loads a split whole: every pipeline runs with whole-file reads of clip shards
made impossible, so the only way to clips is a row group at a time (``ClipDataset``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from s2d_ray.cli import main
from s2d_ray.data.clips import ClipDataset
from s2d_ray.distill import DistillConfig, run_distillation
from s2d_ray.evaluation import EvalConfig
from s2d_ray.evaluation.groups import class_groups
from s2d_ray.tracking import TrackingConfig

OFF = TrackingConfig.disabled()
TINY_EVAL = EvalConfig(epochs=1, repeats=1)
SETTINGS = {
    "dm": {"batch_real": 4},
    "s2d-dm": {"batch_real": 4, "lr_dynamic": 100.0, "lr_hal": 1e-3},
    "mtt": {"syn_steps": 2, "batch_syn": 5, "max_start_epoch": 2, "lr_img": 100.0},
    "s2d-mtt": {"syn_steps": 2, "batch_syn": 5, "max_start_epoch": 2},
    "frepo": {"batch_real": 2, "pool_size": 2, "online_steps": 2},
}


@pytest.fixture
def no_whole_reads(monkeypatch):
    """Reading a shard's clip column other than by row group raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("a consumer read a clip shard whole instead of streaming it")

    real_read = pq.ParquetFile.read

    def read(self, columns=None, **kwargs):
        if columns is None or "frames" in columns:
            refuse()
        return real_read(self, columns=columns, **kwargs)

    real_read_table = pq.read_table

    def read_table(source, *args, columns=None, **kwargs):
        if "/index/" not in str(source) and (columns is None or "frames" in columns):
            refuse()
        return real_read_table(source, *args, columns=columns, **kwargs)

    real_init = ClipDataset.__init__

    def init(self, *args, memory="stream", **kwargs):
        if memory != "stream":
            refuse()
        real_init(self, *args, memory=memory, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", read)
    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(ClipDataset, "__init__", init)


@pytest.mark.slow
def test_every_pipeline_streams(embedded_small, tmp_path, no_whole_reads, capsys):
    from experts_in_process import train_experts

    experts = train_experts(embedded_small, str(tmp_path / "experts"), num_experts=1, epochs=3)
    static = tmp_path / "static"
    base = {"data": embedded_small, "ipc": 1, "eval": TINY_EVAL, "checkpoint_every": 2}
    run_distillation(
        DistillConfig(method="dm", stage="static", out=str(static), iterations=2,
                      final_eval=False, **base),
        OFF,
    )  # fmt: skip
    for method, settings in SETTINGS.items():
        extra = {"experts": experts} if "mtt" in method else {}
        run_distillation(
            DistillConfig(
                method=method,
                out=str(tmp_path / method),
                iterations=2,
                static=str(static) if method.startswith("s2d") else None,
                method_config={**settings, **extra},
                **base,
            ),
            OFF,
        )
        assert (tmp_path / method / "set.json").exists() or any((tmp_path / method).iterdir())
    groups = class_groups(ClipDataset(embedded_small, "train").shards, epochs=1)
    assert len(groups["static"]) + len(groups["dynamic"]) == 10
    argv = ["--data", embedded_small, "--full-data", "--smoke-test", "--no-mlflow"]
    assert main(["evaluate", *argv, str(tmp_path / "dm")]) == 0
    assert "full real data" in capsys.readouterr().out


def test_a_streamed_test_pass_scores_every_clip_once(embedded_small, monkeypatch):
    test = ClipDataset(embedded_small, "test")
    fetched = []
    real_gather = ClipDataset._gather  # every read of clips goes through it

    def gather(self, positions, *args):
        fetched.extend(positions.tolist())
        return real_gather(self, positions, *args)

    monkeypatch.setattr(ClipDataset, "_gather", gather)
    from s2d_ray.evaluation import protocol

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    net(torch.zeros(1, *[test.clip_shape[i] for i in (0, 3, 1, 2)]))
    scores = protocol.test_networks(
        [net, net], test, EvalConfig(eval_batch_size=7), torch.device("cpu")
    )
    assert sorted(fetched) == list(range(len(test)))  # every clip once, for both networks
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_memory_does_not_grow_with_the_dataset(tmp_path):
    """bench/streaming.py's check at 0.25 and 1 GiB, every reader in its own process: DM's
    real batches and a test pass grow by at most 64 MiB of peak anonymous memory when the
    data grows 4x, and no consumer passes 1 GiB (an expert epoch's first pass, which decodes
    up to a batch's worth of row groups, reaches its plateau between 0.25 and 1 GiB)."""
    import json
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench" / "streaming.py"
    out = tmp_path / "rows.json"
    subprocess.run(
        [sys.executable, str(bench), "--sizes", "0.25", "1", "--big", "0", "--readers",
         "stream", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        check=True, capture_output=True, timeout=1500,
    )  # fmt: skip
    rows = json.loads(out.read_text())
    for workload in ("epoch", "dm", "test"):
        small, large = (
            next(r for r in rows if r["workload"] == workload and r["gib"] == gib)
            for gib in (0.25, 1.0)
        )
        assert large["clips"] > 3 * small["clips"] or workload == "dm"
        assert large["peak_mib"] < 1024, (workload, large)
        if workload != "epoch":  # an epoch's cold pass: see docs/data.md, "Memory does not grow"
            assert large["peak_mib"] - small["peak_mib"] <= 64, (workload, small, large)
