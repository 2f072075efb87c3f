"""One distillation run: resume bit-identical, NaN stop, bad inputs, tracking and artefacts."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError

from s2d_ray.distill import DistillConfig, DivergedError, run_distillation
from s2d_ray.evaluation import EvalConfig
from s2d_ray.methods import METHODS, STATIC_METHODS
from s2d_ray.methods.checkpoint import CheckpointMismatchError
from s2d_ray.methods.dm import S2DDM, _DistributionMatching
from s2d_ray.methods.frepo import FREPO_PROTOCOL
from s2d_ray.synthetic import load_distilled, load_set, save_set
from s2d_ray.synthetic.videos import SyntheticImages
from s2d_ray.tracking import TrackingConfig

OFF = TrackingConfig.disabled()
FAST = {"batch_real": 4}
ONE_EPOCH = EvalConfig(epochs=1, repeats=1)


def config(data, out, **kw) -> DistillConfig:
    base = {
        "method": "dm",
        "data": data,
        "out": str(out),
        "ipc": 1,
        "iterations": 6,
        "checkpoint_every": 2,
        "final_eval": False,
        "method_config": FAST,
    }
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def static(embedded_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    run_distillation(config(embedded_small, out, stage="static", iterations=2), OFF)
    return str(out)


def tensors(path):
    return load_set(path)[0].stored_tensors()


def interrupt_at(monkeypatch, cls, iteration: int) -> None:
    """Make ``cls.step`` raise KeyboardInterrupt at ``iteration`` (a killed run)."""
    real_step = cls.step

    def step(self, i):
        if i == iteration:
            monkeypatch.setattr(cls, "step", real_step)  # the re-run is not interrupted
            raise KeyboardInterrupt
        return real_step(self, i)

    monkeypatch.setattr(cls, "step", step)


S2D = {"lr_dynamic": 100.0, "lr_hal": 1e-3}
POOL = {"batch_real": 2, "pool_size": 2, "online_steps": 2}
STUDENT = {"syn_steps": 2, "batch_syn": 5, "max_start_epoch": 2}
# every iterative method of both registries, at settings that run in seconds
RESUMABLE = {
    ("static", "dm"): FAST,
    ("static", "dc"): FAST,
    ("video", "dm"): FAST,
    ("video", "s2d-dm"): {**FAST, **S2D},
    ("video", "mtt"): {**STUDENT, "lr_img": 100.0},
    ("video", "s2d-mtt"): {**STUDENT, **S2D},
    ("video", "frepo"): {**POOL, "lr_img": 1e-2},
    ("video", "s2d-frepo"): {**POOL, "lr_dynamic": 0.1, "lr_hal": 1e-3},
}


def test_resume_covers_every_iterative_method():
    assert {n for k, n in RESUMABLE if k == "video"} == {
        n for n, cls in METHODS.items() if cls.iterative
    }
    assert {n for k, n in RESUMABLE if k == "static"} == set(STATIC_METHODS)


@pytest.mark.parametrize(("stage", "method"), RESUMABLE, ids=[f"{s}-{m}" for s, m in RESUMABLE])
def test_interrupted_run_resumes_bit_identical(
    embedded_small, embedded_experts, static, tmp_path, stage, method, monkeypatch
):
    mc = dict(RESUMABLE[(stage, method)])
    if method.endswith("mtt"):
        mc["experts"] = embedded_experts
    kw = {"method": method, "stage": stage, "method_config": mc}
    if method.startswith("s2d"):
        kw["static"] = static
    clean = run_distillation(config(embedded_small, tmp_path / "clean", **kw), OFF)
    assert clean.iterations_run == 6 and clean.resumed_from is None

    registry = STATIC_METHODS if stage == "static" else METHODS
    interrupt_at(monkeypatch, registry[method], 4)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 3  # checkpoints after iterations 2 and 4 (1-based)
    resumed = run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    assert resumed.resumed_from == 3 and resumed.iterations_run == 2
    assert resumed.losses == clean.losses[4:]
    for name, value in tensors(tmp_path / "clean").items():
        assert torch.equal(value, tensors(tmp_path / "crashed")[name]), name


def test_interrupted_frepo_run_resumes_bit_identical_with_its_pool_and_labels(
    embedded_small, tmp_path, monkeypatch
):
    from s2d_ray.methods.frepo import _FeatureRegression

    # networks live 2 steps, so some restart before and some after the interruption; the
    # videos are temporally compressed and the labels learnt, so all of it is resumed
    mc = {"batch_real": 2, "pool_size": 2, "online_steps": 2, "learn_labels": True}
    mc |= {"lr_img": 1e-2, "lr_label": 1e-2, "syn_frames": 2, "segments": 2}
    kw = {"method": "frepo", "method_config": mc}
    clean = run_distillation(config(embedded_small, tmp_path / "clean", **kw), OFF)
    interrupt_at(monkeypatch, _FeatureRegression, 4)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    resumed = run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    assert resumed.resumed_from == 3 and resumed.losses == clean.losses[4:]
    clean_set, crashed_set = tensors(tmp_path / "clean"), tensors(tmp_path / "crashed")
    assert set(clean_set) == {"items", "label_vectors"}
    for name, value in clean_set.items():
        assert torch.equal(value, crashed_set[name]), name
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert manifest["layout"]["temporal"] == {"frames": 8, "syn_frames": 2, "segments": [4, 4]}
    assert manifest["eval"] == FREPO_PROTOCOL


def test_interrupted_mtt_run_resumes_bit_identical_with_its_syn_lr(
    embedded_small, embedded_experts, tmp_path, monkeypatch
):
    from s2d_ray.methods.mtt import _TrajectoryMatching

    mc = {
        "experts": embedded_experts,
        "syn_steps": 2,
        "batch_syn": 5,
        "max_start_epoch": 2,
        "lr_img": 100.0,
        "lr_lr": 1e-3,
    }
    kw = {"method": "mtt", "iterations": 4, "method_config": mc}
    clean = run_distillation(config(embedded_small, tmp_path / "clean", **kw), OFF)
    interrupt_at(monkeypatch, _TrajectoryMatching, 3)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    resumed = run_distillation(config(embedded_small, tmp_path / "crashed", **kw), OFF)
    assert resumed.resumed_from == 1 and resumed.losses == clean.losses[2:]
    assert torch.equal(tensors(tmp_path / "clean")["items"], tensors(tmp_path / "crashed")["items"])
    lrs = [
        json.loads((tmp_path / d / "manifest.json").read_text())["eval"]["lr"]
        for d in ("clean", "crashed")
    ]
    assert lrs[0] == lrs[1] and lrs[0] != 0.01  # the learned syn_lr, resumed exactly


def test_a_finished_run_extends_with_more_iterations(embedded_small, tmp_path):
    run_distillation(config(embedded_small, tmp_path / "a", iterations=4), OFF)
    more = run_distillation(config(embedded_small, tmp_path / "a", iterations=6), OFF)
    assert more.resumed_from == 3 and more.iterations_run == 2
    run_distillation(config(embedded_small, tmp_path / "b", iterations=6), OFF)
    assert torch.equal(tensors(tmp_path / "a")["items"], tensors(tmp_path / "b")["items"])


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_last_checkpoint(
    embedded_small, tmp_path, monkeypatch
):
    real_step = _DistributionMatching.step

    def diverge(self, iteration):
        out = real_step(self, iteration)
        return {**out, "loss": float("nan")} if iteration == 4 else out

    monkeypatch.setattr(_DistributionMatching, "step", diverge)
    with pytest.raises(DivergedError, match=r"nan at iteration 5.*checkpoint of iteration 4") as e:
        run_distillation(config(embedded_small, tmp_path / "x"), OFF)
    assert e.value.stored_mib == pytest.approx(10 * 8 * 3 * 64 * 64 * 4 / 2**20)  # for a search
    state = json.loads((tmp_path / "x" / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 3
    assert not (tmp_path / "x" / "manifest.json").exists()  # no set from a diverged run


def test_a_non_finite_set_stops_the_run_even_with_a_finite_loss(
    embedded_small, tmp_path, monkeypatch
):
    real_step = _DistributionMatching.step

    def poison(self, iteration):
        out = real_step(self, iteration)
        if iteration == 5:  # the last step: no later loss would ever show it
            with torch.no_grad():
                self.synthetic.items[0, 0, 0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(_DistributionMatching, "step", poison)
    with pytest.raises(DivergedError, match="non-finite at iteration 6"):
        run_distillation(config(embedded_small, tmp_path / "x"), OFF)
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_bad_inputs_fail_before_any_work(embedded_small, static, tmp_path):
    with pytest.raises(ValidationError, match="ipc"):
        config(embedded_small, tmp_path / "a", ipc=0)
    with pytest.raises(ValidationError, match="lr_img"):
        run_distillation(config(embedded_small, tmp_path / "b", method_config={"lr_img": -1}), OFF)
    with pytest.raises(ValidationError, match="lr_hal"):
        run_distillation(
            config(
                embedded_small,
                tmp_path / "c",
                method="s2d-dm",
                static=static,
                method_config={"lr_hal": 0},
            ),
            OFF,
        )
    with pytest.raises(ValidationError, match="typo_rate"):
        run_distillation(
            config(embedded_small, tmp_path / "d", method_config={"typo_rate": 1}), OFF
        )
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        run_distillation(config(embedded_small, tmp_path / "e", method="nope"), OFF)
    with pytest.raises(ValueError, match="needs a static memory.*s2d static"):
        run_distillation(config(embedded_small, tmp_path / "f", method="s2d-dm"), OFF)
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_static_memory_for_other_data_is_refused(embedded_small, static, tmp_path):
    wrong_classes = tmp_path / "wrong-classes"
    save_set(SyntheticImages(torch.zeros(3, 3, 64, 64), 3), wrong_classes, {})
    with pytest.raises(ValueError, match="3 classes.*10 classes"):
        run_distillation(
            config(embedded_small, tmp_path / "a", method="s2d-dm", static=str(wrong_classes)), OFF
        )
    wrong_size = tmp_path / "wrong-size"
    save_set(SyntheticImages(torch.zeros(10, 3, 32, 32), 10), wrong_size, {})
    with pytest.raises(ValueError, match=r"images \(3, 32, 32\)"):
        run_distillation(
            config(embedded_small, tmp_path / "b", method="s2d-dm", static=str(wrong_size)), OFF
        )
    other_data = tmp_path / "other-data"
    save_set(
        SyntheticImages(torch.zeros(10, 3, 64, 64), 10),
        other_data,
        {"dataset": {"fingerprint": "elsewhere"}},
    )
    with pytest.raises(ValueError, match="fingerprint elsewhere"):
        run_distillation(
            config(embedded_small, tmp_path / "c", method="s2d-dm", static=str(other_data)), OFF
        )


def test_a_checkpoint_of_another_configuration_is_refused(embedded_small, tmp_path):
    run_distillation(config(embedded_small, tmp_path / "a", iterations=2), OFF)
    with pytest.raises(CheckpointMismatchError, match="another configuration"):
        run_distillation(config(embedded_small, tmp_path / "a", seed=1, iterations=2), OFF)


def test_static_only_memory_needs_no_iterations(embedded_small, static, tmp_path):
    summary = run_distillation(
        config(
            embedded_small, tmp_path / "s", method="s2d-dm", static=static, method_config={"dpc": 0}
        ),
        OFF,
    )
    assert summary.iterations_run == 0
    data = load_distilled(tmp_path / "s")
    assert len(data) == 10 and summary.storage_bytes == 10 * 3 * 64 * 64 * 4


def test_tracked_run_logs_params_losses_results_artefacts_and_lineage(
    embedded_small, static, tmp_path
):
    tracking = TrackingConfig.create(tmp_path, "s2d/test")
    static_run = run_distillation(
        config(embedded_small, tmp_path / "static", stage="static", iterations=2), tracking
    )
    summary = run_distillation(
        config(
            embedded_small,
            tmp_path / "s2d",
            method="s2d-dm",
            static=str(tmp_path / "static"),
            iterations=4,
            final_eval=True,
            eval=EvalConfig(epochs=2, repeats=1),
            method_config={**FAST, "lr_dynamic": 100.0, "lr_hal": 1e-3},
        ),
        tracking,
    )
    client = MlflowClient(tracking.uri)
    run = client.get_run(summary.run_id)
    assert run.data.tags["s2d.static_run"] == static_run.run_id
    assert run.data.params["method.lr_dynamic"] == "100.0" and run.data.params["ipc"] == "1"
    losses = client.get_metric_history(summary.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert [m.value for m in losses] == pytest.approx(summary.losses)
    metrics = run.data.metrics  # every figure names its split: test reported, val beside it
    assert {"final_test_top1_mean", "final_val_top1_mean", "random_baseline_test_top1_mean"} <= set(
        metrics
    )
    assert not any(k.startswith("final_top1") for k in metrics)
    assert run.data.metrics["stored_mib"] == pytest.approx(summary.storage_bytes / 2**20)
    artifacts = {f.path for f in client.list_artifacts(summary.run_id, "previews")}
    assert {"previews/grid.png", "previews/frame-differences.png", "previews/gifs"} <= artifacts
    gifs = client.list_artifacts(summary.run_id, "previews/gifs")
    assert len(gifs) == 10
    local = client.download_artifacts(summary.run_id, "distilled", str(tmp_path / "download"))
    assert len(load_distilled(local)) == 10
    from PIL import Image

    gif = Image.open(client.download_artifacts(summary.run_id, gifs[0].path, str(tmp_path)))
    assert gif.n_frames == 8
    assert len(summary.rows) == 2 and summary.rows[1].name == "random real ipc 1"
    assert (tmp_path / "s2d" / "evaluation.json").exists()
    assert S2DDM.needs_static


def test_a_search_trial_is_evaluated_at_its_last_iteration_off_the_interval(
    embedded_small, tmp_path
):
    """A trial (no final evaluation) reports its last iteration even when eval_every does
    not divide the iterations: the search ranks it by that report."""
    seen = []
    run_distillation(
        config(embedded_small, tmp_path / "x", iterations=5, eval_every=2, eval=ONE_EPOCH),
        OFF,
        on_evaluation=lambda iteration, metrics: seen.append((iteration, sorted(metrics))),
    )
    assert [iteration for iteration, _ in seen] == [2, 4, 5]
    assert {"val_top1", "val_top1_std", "stored_mib"} <= set(seen[-1][1])


def test_one_mlflow_run_per_output_folder(embedded_small, tmp_path):
    """The same configuration into another folder (another search's trial at the same
    point) is another run; into the same folder it continues its run."""
    tracking = TrackingConfig.create(tmp_path, "s2d/test")
    first = run_distillation(config(embedded_small, tmp_path / "a", iterations=2), tracking)
    again = run_distillation(config(embedded_small, tmp_path / "a", iterations=4), tracking)
    other = run_distillation(config(embedded_small, tmp_path / "b", iterations=2), tracking)
    assert again.run_id == first.run_id != other.run_id
    metrics = MlflowClient(tracking.uri).get_run(first.run_id).data.metrics
    assert metrics["seconds"] > 0 and metrics["peak_rss_mib"] > 100  # torch alone is more
