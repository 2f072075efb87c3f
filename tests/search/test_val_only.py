"""Nothing a search chooses or stops on reads the test split: a trial's reports (what ASHA and
the pick see) come from val, and poisoning test changes none of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.stream import ClipShards
from s2d_ray.distill import run_distillation
from s2d_ray.search import load_space
from s2d_ray.search.results import best_trial
from s2d_ray.search.trial import SearchInputs, trial_config
from s2d_ray.tracking import TrackingConfig

SPACES = Path(__file__).parents[2] / "tune_spaces"
POINTS = {"a": {"lr_img": 1e3, "syn_steps": 2}, "b": {"lr_img": 1e5, "syn_steps": 2}}
SMALL = ["budget.iterations=2", "budget.eval_every=1", "budget.eval_epochs=1"]
SMALL += ["fixed.max_start_epoch=2", "fixed.batch_syn=5"]


def relabel(path: Path) -> None:
    table = pq.read_table(path)
    labels = pa.array([0] * len(table), pa.int32())
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", labels), path)


def poisoned_copy(data: str, out: Path) -> str:
    """The shards with every test clip relabelled to class 0 (test accuracy garbage), in the
    shards and in the row index readers take labels from."""
    shutil.copytree(data, out)
    manifest = json.loads((out / "dataset.json").read_text())
    for shard in manifest["shards"]:
        if shard["split"] == "test":
            relabel(out / shard["path"])
    relabel(out / manifest["row_index"]["test"]["path"])
    return str(out)


def reports(data: str, experts: str, workdir: Path) -> dict[str, list[dict]]:
    space = load_space(SPACES / "embedded_ipc1_mtt.yaml", SMALL)
    inputs = SearchInputs(space, data, str(workdir), TrackingConfig.disabled(), experts=experts)
    seen: dict[str, list[dict]] = {}
    for trial, point in POINTS.items():
        config = trial_config(inputs, point, trial)
        config = config.model_copy(update={"final_eval": False})
        run_distillation(
            config,
            inputs.tracking,
            on_evaluation=lambda it, m, t=trial: seen.setdefault(t, []).append(
                {**m, "iteration": it}
            ),
        )
    return seen


def test_poisoned_test_labels_change_no_report_and_no_pick(
    embedded_small, embedded_experts, tmp_path, monkeypatch
):
    clean = reports(embedded_small, embedded_experts, tmp_path / "clean")
    poisoned_data = poisoned_copy(embedded_small, tmp_path / "poisoned-data")
    assert set(ClipDataset(ClipShards(poisoned_data), "test").labels.tolist()) == {0}
    assert len(set(ClipDataset(ClipShards(embedded_small), "test").labels.tolist())) > 1
    # and any look at the test split during the trials fails outright: every reader plans
    # from a split's row index (or, for shards without one, its files)
    for name in ("files", "row_index"):
        original = getattr(ClipShards, name)

        def no_test(self, split, *args, _original=original, **kwargs):
            if split == "test":
                raise AssertionError("a trial read the test split")
            return _original(self, split, *args, **kwargs)

        monkeypatch.setattr(ClipShards, name, no_test)
    poisoned = reports(poisoned_data, embedded_experts, tmp_path / "poisoned")
    assert clean == poisoned
    assert all("val_top1" in r and not any(k.startswith("test") for k in r) for r in clean["a"])
    space = load_space(SPACES / "embedded_ipc1_mtt.yaml", SMALL)
    picks = [
        best_trial([{**runs[-1], "trial_id": t, "config": {}} for t, runs in seen.items()], space)
        for seen in (clean, poisoned)
    ]
    assert picks[0]["trial_id"] == picks[1]["trial_id"]


def test_a_search_objective_on_test_is_refused():
    with pytest.raises(ValueError, match="val_top1"):
        load_space(SPACES / "embedded_ipc1_mtt.yaml", ["objective.metric=test_top1"])
