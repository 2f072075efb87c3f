"""The search driver's parts without Ray: Tune's space, each trial's distillation config, the
smoke shrink, the choice of the best trial and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2d_ray.methods.checkpoint import FOLDER
from s2d_ray.search import load_space
from s2d_ray.search.config import SearchConfig, load_config_space, smoke_space
from s2d_ray.search.inputs import _ensure_experts, ensure_inputs, inputs_root
from s2d_ray.search.results import best_trial, pareto_front
from s2d_ray.search.trial import SearchInputs, final_protocol, restore_distillation, trial_config
from s2d_ray.search.tuner import _sampler, _scheduler, experiment_name, tune_param_space
from s2d_ray.tracking import TrackingConfig

SPACES = Path(__file__).parents[2] / "tune_spaces"


def space(name="embedded_ipc1_s2d-mtt", overrides=()):
    return load_space(SPACES / f"{name}.yaml", list(overrides))


def test_tune_space_samples_inside_the_yaml_ranges():
    dims = tune_param_space(space("embedded_ipc1_s2d-dm"))
    assert set(dims) == {"lr_dynamic", "lr_hal", "spc:dpc"}
    for _ in range(20):
        assert 1e-5 <= dims["lr_dynamic"].sample() <= 1e4
        assert dims["spc:dpc"].sample() in ("1:1", "2:1", "2:2")


def test_a_trial_distils_the_method_at_its_point(tmp_path):
    s = space("embedded_ipc5_s2d-mtt")
    inputs = SearchInputs(
        s,
        data="/d",
        workdir=str(tmp_path),
        tracking=TrackingConfig.disabled(),
        experts="/e",
        statics=((10, "/static10"),),
    )
    config = trial_config(inputs, {"lr_dynamic": 5.0, "lr_hal": 1e-3, "syn_steps": 5}, "t1")
    assert config.out == str(tmp_path / "trials" / "t1")
    assert config.static == "/static10"  # '2:2' at IPC 5: ten stills per class
    assert config.method_config == {
        "lr_dynamic": 5.0,
        "lr_hal": 1e-3,
        "syn_steps": 5,
        "batch_syn": 10,
        "dpc": 10,
        "experts": "/e",
    }
    assert (config.iterations, config.eval_every, config.checkpoint_every) == (200, 50, 50)
    assert not config.final_eval and config.eval.epochs == s.budget.eval_epochs
    assert config.eval_repeats_during == 1  # one network per report unless the budget says
    steadier = space("embedded_ipc5_s2d-mtt", ["budget.eval_repeats=2"])
    steadier_inputs = inputs.__class__(**{**inputs.__dict__, "space": steadier})
    assert trial_config(steadier_inputs, {}, "t2").eval_repeats_during == 2
    with pytest.raises(ValueError, match="no static memory with spc 10"):
        trial_config(inputs.__class__(**{**inputs.__dict__, "statics": ((2, "/s"),)}), {}, "t")


def test_the_quickstart_distils_from_its_stills_with_a_standardised_student(tmp_path):
    """The front door's departures from the reference's defaults (docs/distillation.md,
    "S2D-MTT on a small budget") reach every trial, on the reference's ipc-1 memory (2:2);
    the full-size spaces keep the reference's defaults."""
    s = space("quickstart/embedded_ipc1_s2d-mtt")
    inputs = SearchInputs(s, "/d", str(tmp_path), TrackingConfig.disabled(), "/e", ((2, "/s"),))
    config = trial_config(inputs, dict(s.paper[0]), "t")
    settings = config.method_config
    assert (config.static, settings["dpc"]) == ("/s", 2)  # two stills, two maps per class
    assert settings["integrator_init"] == "identity" and settings["student_standardize"]
    assert settings["learn_syn_lr"] is False  # evaluated at lr_teacher, as random real clips
    assert (s.budget.eval_every, s.budget.eval_epochs, s.budget.eval_repeats) == (5, 40, 1)
    full = space("embedded_ipc1_s2d-mtt")
    assert "integrator_init" not in full.fixed and "student_standardize" not in full.fixed


def test_the_pick_is_judged_by_networks_no_trial_trained(tmp_path):
    s = space("embedded_ipc1_s2d-mtt", ["budget.final_repeats=4", "budget.final_epochs=70"])
    tracking, statics = TrackingConfig.disabled(), ((2, "/static2"),)
    inputs = SearchInputs(s, "/d", str(tmp_path), tracking, statics=statics)
    periodic, final = trial_config(inputs, {}, "t1").eval, final_protocol(s)
    assert (final.epochs, final.repeats) == (70, 4)
    assert final.seed != periodic.seed == s.seed  # the winner's curse, else
    assert final == final_protocol(
        space("embedded_ipc1_s2d-mtt", ["budget.final_repeats=4", "budget.final_epochs=70"])
    )
    assert final_protocol(space("embedded_ipc1_s2d-mtt", ["seed=1"])).seed != final.seed


@pytest.mark.parametrize(("flag", "gpus"), [(None, 0.25), (0.0, 0.0), (1.0, 1.0)])
def test_expert_trainers_get_a_trials_gpu_share_unless_told(tmp_path, monkeypatch, flag, gpus):
    import s2d_ray.experts.farm as farm

    asked = []
    monkeypatch.setattr(farm, "run_farm", lambda config, *a, **k: asked.append(config))
    s = space("embedded_ipc1_s2d-mtt", ["resources.gpu=0.25"])
    config = SearchConfig(space="x.yaml", workdir=str(tmp_path), farm_gpus_per_worker=flag)
    _ensure_experts(config, s, str(tmp_path / "data"), str(tmp_path / "experts"), None)
    assert [c.gpus_per_worker for c in asked] == [gpus]


def test_reused_inputs_that_do_not_fit_the_space_fail_before_any_trial(
    embedded_small, embedded_experts, tmp_path
):
    def inputs(name, *overrides):
        s = load_space(SPACES / name, list(overrides))
        config = SearchConfig(
            space=name, workdir=str(tmp_path), data=embedded_small, experts=embedded_experts
        )
        ensure_inputs(config.model_copy(update={"num_experts": 2}), s, TrackingConfig.disabled())

    with pytest.raises(ValueError, match="hold embedded, the space hmdb51_ipc1_s2d-mtt.yaml"):
        inputs("hmdb51_ipc1_s2d-mtt.yaml")
    with pytest.raises(ValueError, match="no complete expert with the 6 snapshots"):
        inputs("quickstart/embedded_ipc1_s2d-mtt.yaml", "fixed.max_start_epoch=5")
    (tmp_path / "static-spc2").mkdir()  # a static memory left by a search on other shards
    (tmp_path / "static-spc2" / "manifest.json").write_text('{"dataset": {"fingerprint": "x"}}')
    with pytest.raises(ValueError, match="static-spc2 was distilled from other shards"):
        inputs("quickstart/embedded_ipc1_s2d-mtt.yaml")


def test_inputs_live_on_the_shared_storage_and_a_smoke_tests_apart(tmp_path):
    def root(**kw):
        return inputs_root(SearchConfig(space="x.yaml", workdir=str(tmp_path), **kw))

    assert root() == str(tmp_path) and root(smoke=True) == f"{tmp_path}/smoke"
    assert root(storage="s3://bucket/search", smoke=True) == "s3://bucket/search/smoke"


def test_experiment_name_is_stable_and_follows_the_space():
    assert experiment_name(space()) == experiment_name(space())
    assert experiment_name(space()) != experiment_name(space(overrides=["budget.trials=3"]))


@pytest.mark.parametrize(
    "override, same",
    [
        ("budget.final_epochs=20", True),  # read only by the judging after the trials
        ("budget.final_repeats=5", True),
        ("budget.eval_epochs=20", False),  # what every trial's signal is
        ("resources.gpu=0.5", False),  # resumed trials would keep their old share
        ("seed=1", False),
    ],
)
def test_only_the_judging_can_change_without_starting_another_search(override, same):
    assert (experiment_name(space()) == experiment_name(space(overrides=[override]))) is same


@pytest.mark.parametrize("iterations, eval_every, reports", [(20, 5, 4), (20, 6, 4), (5, 5, 1)])
def test_asha_counts_every_report_the_last_short_one_included(iterations, eval_every, reports):
    """A trial reports at iterations 6, 12, 18 and 20 for (20, 6): a max_t of 3 would let
    ASHA take the third report for the end."""
    budget = [f"budget.iterations={iterations}", f"budget.eval_every={eval_every}"]
    asha = _scheduler(space(overrides=budget))
    assert asha._max_t == reports and asha._time_attr == "training_iteration"
    fifo = _scheduler(space(overrides=[*budget, "scheduler.type=fifo"]))
    assert type(fifo).__name__ == "FIFOScheduler"


def test_a_trial_resumes_from_tunes_checkpoint_never_a_stale_local_one(tmp_path):
    from ray import tune

    out = tmp_path / "trial"
    (out / FOLDER).mkdir(parents=True)
    (out / FOLDER / "state.pt").write_text("iteration 7, after Tune's last report")
    restore_distillation(out, None)  # a new trial, or one stopped before its first report
    assert not (out / FOLDER).exists()

    saved = tmp_path / "tune-checkpoint"
    (saved / FOLDER).mkdir(parents=True)
    (saved / FOLDER / "state.pt").write_text("iteration 5")
    (out / FOLDER).mkdir()
    (out / FOLDER / "state.pt").write_text("iteration 7")
    restore_distillation(out, tune.Checkpoint.from_directory(saved))
    assert (out / FOLDER / "state.pt").read_text() == "iteration 5"

    old_layout = tmp_path / "old"  # reports once carried the checkpoint folder itself
    old_layout.mkdir()
    (old_layout / "state.pt").write_text("iteration 3")
    restore_distillation(out, tune.Checkpoint.from_directory(old_layout))
    assert (out / FOLDER / "state.pt").read_text() == "iteration 3"


@pytest.mark.parametrize("kind", ["tpe", "gp", "random"])
def test_the_searcher_is_seeded_and_repeats_its_proposals(kind):
    """Same space and seed, same points: a search (and bench/search.py) is reproducible."""
    import optuna

    def proposals(seed, key="seed"):
        s = space(overrides=[f"searcher.type={kind}", f"{key}={seed}"])
        study = optuna.create_study(sampler=_sampler(s), direction="maximize")
        points = []
        for _ in range(12):  # past TPE's random start-up trials
            trial = study.ask()
            x = trial.suggest_float("lr_dynamic", 10.0, 1e6, log=True)
            study.tell(trial, -abs(x - 1e4))
            points.append(x)
        return points

    expected = {
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "random": optuna.samplers.RandomSampler,
    }
    tpe = _sampler(space(overrides=["budget.trials=12"]))
    assert tpe._n_startup_trials == 3  # a quarter of the budget models the rest
    assert _sampler(space(overrides=["budget.trials=100"]))._n_startup_trials == 10
    assert _sampler(space(overrides=["searcher.startup_trials=5"]))._n_startup_trials == 5
    assert _sampler(space(overrides=["searcher.type=gp"]))._n_startup_trials == 3
    study = optuna.create_study(direction="maximize")
    assert tpe._is_multivariate(study)  # Optuna 5's default: the dimensions modelled jointly
    assert type(_sampler(space(overrides=[f"searcher.type={kind}"]))) is expected[kind]
    assert proposals(0) == proposals(0) != proposals(1)
    assert proposals(1, "searcher.seed") == proposals(1) != proposals(0, "searcher.seed")
    assert experiment_name(space()) != experiment_name(space(overrides=["searcher.type=random"]))


def test_smoke_space_is_tiny_and_still_valid():
    config = SearchConfig(space=str(SPACES / "embedded_ipc1_s2d-mtt.yaml"), smoke=True)
    s = load_config_space(config)
    assert s.budget.trials == 2 and s.budget.iterations == 2
    assert s.space["syn_steps"].values == [1, 2] and s.paper[0]["syn_steps"] == 2
    assert s.fixed["max_start_epoch"] == 1
    assert smoke_space(space("embedded_ipc1_s2d-dm")).fixed == {"batch_real": 8}  # from 64


def result(trial, top1, iteration=200, **kw):
    return {"trial_id": trial, "val_top1": top1, "iteration": iteration, "config": {}, **kw}


def test_the_best_trial_is_the_best_completed_finite_one():
    s = space()
    results = [
        result("stopped", 0.9, iteration=50),  # ASHA stopped it early: no set was saved
        result("diverged", 0.95, diverged=1.0),
        result("a", 0.4),
        result("b", 0.6),
    ]
    assert best_trial(results, s)["trial_id"] == "b"
    with pytest.raises(RuntimeError, match="none of the 2 trials ran its 200 iterations"):
        best_trial(results[:2], s)


def test_pareto_front_keeps_the_undominated_trials():
    results = [
        result("small", 0.3, stored_mib=0.1),
        result("big", 0.6, stored_mib=1.0),
        result("dominated", 0.2, stored_mib=0.5),
        result("mid", 0.5, stored_mib=0.4),
    ]
    assert [r["trial_id"] for r in pareto_front(results)] == ["small", "mid", "big"]


def test_tune_does_not_copy_cloud_credentials_into_trials_runtime_envs(monkeypatch):
    """Tune would copy the driver's AWS keys into every trial's runtime_env, which Ray's
    runtime-env agent logs in clear on each node; trials take them from their node."""
    from ray.tune.execution import class_cache

    from s2d_ray.search.tune_fixes import SECRET_ENV_VARS, keep_secrets_out_of_runtime_envs

    # as Ray ships it (a search run earlier in this process has applied the fix already)
    as_shipped = set(class_cache.ENV_VARS_TO_PROPAGATE) | set(SECRET_ENV_VARS)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", as_shipped)
    keep_secrets_out_of_runtime_envs()
    assert not set(SECRET_ENV_VARS) & class_cache.ENV_VARS_TO_PROPAGATE
    assert "RAY_CHDIR_TO_TRIAL_DIR" in class_cache.ENV_VARS_TO_PROPAGATE  # the rest kept


def test_an_oom_killed_trial_reaches_tune_as_an_actor_death_naming_the_memory(monkeypatch):
    """Tune's actor manager raises on Ray's OutOfMemoryError and stops the whole search;
    handed over as an actor death the trial fails alone (its error text keeps Ray's)."""
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.exceptions import OutOfMemoryError, RayActorError

    from s2d_ray.search.tune_fixes import oom_killed_trials_fail_alone

    seen = []
    monkeypatch.setattr(RayActorManager, "_actor_task_failed", lambda s, t, e: seen.append(e))
    oom_killed_trials_fail_alone()
    oom_killed_trials_fail_alone()  # once only, whatever the calls
    RayActorManager._actor_task_failed(None, None, OutOfMemoryError("was 9.1GB used / 9.5GB"))
    RayActorManager._actor_task_failed(None, None, ValueError("other"))
    assert isinstance(seen[0], RayActorError) and "was 9.1GB used / 9.5GB" in str(seen[0])
    assert str(seen[0]).startswith("OutOfMemoryError: ")
    assert isinstance(seen[1], ValueError)
