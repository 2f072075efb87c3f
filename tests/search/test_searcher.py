"""The searcher: a trial ASHA stopped is PRUNED for Optuna, never COMPLETE with an early score;
the study persists in the search's storage and another search of the same problem proposes
from it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from s2d_ray.search import load_space
from s2d_ray.search.searcher import (
    FINAL,
    budget_aware_search,
    study_name,
    study_storage,
    unscored_points,
)
from s2d_ray.search.tuner import _sampler, tune_param_space

SPACES = Path(__file__).parents[2] / "tune_spaces"


def space(overrides=()):
    return load_space(SPACES / "embedded_ipc1_s2d-mtt.yaml", list(overrides))


def searcher(s, storage=None, points=()):
    from ray.tune.search.optuna import OptunaSearch

    return budget_aware_search(
        space=OptunaSearch.convert_search_space(tune_param_space(s)),
        metric="val_top1",
        mode="max",
        sampler=_sampler(s),
        storage=storage,
        study_name=study_name(s),
        points_to_evaluate=[dict(p) for p in points],
    )


def report(search, trial_id, values, final):
    """A trial's periodic reports, then its end (ASHA's stop or its last iteration)."""
    for step, value in enumerate(values, start=1):
        last = {"val_top1": value, "training_iteration": step, FINAL: False}
        search.on_trial_result(trial_id, last)
    search.on_trial_complete(trial_id, {**last, FINAL: final})


def test_a_trial_stopped_early_is_pruned_and_only_full_budget_scores_are_final():
    s = space()
    search = searcher(s)
    for trial in ("stopped", "full"):
        assert search.suggest(trial) is not None
    report(search, "stopped", [0.9], final=False)  # a high score at rung 1, then stopped
    report(search, "full", [0.3, 0.4], final=True)
    stopped, full = search._ot_study.get_trials(deepcopy=False)
    assert stopped.state == TrialState.PRUNED  # TPE ranks pruned trials below complete ones
    assert stopped.intermediate_values == {1: 0.9}  # what it showed, kept as such
    assert full.state == TrialState.COMPLETE and full.value == 0.4
    assert search._ot_study.best_trial.number == full.number  # not the early 0.9


def test_a_diverged_or_failed_trial_is_not_pruned():
    search = searcher(space())
    search.suggest("diverged")
    search.suggest("error")
    search.on_trial_complete("diverged", {"val_top1": 0.0, "diverged": 1.0})  # a bad point
    search.on_trial_complete("error", None, error=True)
    states = [t.state for t in search._ot_study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]


def test_the_study_is_the_problem_not_the_search():
    base = study_name(space())
    assert study_name(space(["budget.trials=24"])) == base  # more trials: the same study
    assert study_name(space(["searcher.seed=3"])) == base
    assert study_name(space(["space.lr_hal.low=1e-4"])) == base  # another range, same problem
    for other in ("budget.iterations=3000", "seed=1", "budget.eval_epochs=60", "ipc=5"):
        assert study_name(space([other])) != base, other
    assert study_name(space(["space.syn_steps.values=[5,10]"])) != base  # Optuna cannot mix


@pytest.mark.parametrize("restart", ["repeated", "larger"])
def test_another_search_proposes_from_the_stored_study(tmp_path, restart):
    """A second search of the same problem (the same command again, or more trials) reads
    every earlier trial: TPE models them at once instead of sampling its start-up points at
    random, and the paper's point, already scored, is not run again."""
    s = space(["searcher.startup_trials=3", "searcher.type=tpe"])
    workdir = tmp_path / "work"

    def run(s, storage, trials):
        search = searcher(s, storage, unscored_points(list(s.paper), storage, study_name(s)))
        proposed = []
        for i in range(trials):
            point = search.suggest(f"t{i}")
            proposed.append(point)
            report(search, f"t{i}", [1.0 / (1 + abs(point["lr_hal"] - 1e-3))], final=True)
        return proposed

    with study_storage(str(tmp_path / "tune"), str(workdir), study_name(s)) as storage:
        first = run(s, storage, 3)
    assert first[0] == dict(s.paper[0])  # a new study starts at the paper's point
    journal = tmp_path / "tune" / "optuna" / f"{study_name(s)}.journal"
    assert journal.is_file()

    again = (
        s if restart == "repeated" else space([*["searcher.startup_trials=3"], "budget.trials=9"])
    )
    with study_storage(str(tmp_path / "tune"), str(workdir), study_name(again)) as storage:
        assert unscored_points(list(again.paper), storage, study_name(again)) == []
        warm = run(again, storage, 1)[0]
        study = optuna.load_study(study_name=study_name(again), storage=storage)
        assert len(study.trials) == 4
    # the same searcher on an empty study proposes its random start-up point instead
    cold = searcher(again).suggest("cold")  # in memory, no paper point
    assert warm != cold and warm != first[0]


def test_a_study_on_remote_storage_is_mirrored_in_the_workdir(tmp_path, monkeypatch):
    """On s3:// the journal is appended locally (it needs a file lock) and written back when
    the search stops, even by an error; the next search starts from the stored copy."""
    from pyarrow import fs as pafs

    from s2d_ray import files

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    local_fs = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    monkeypatch.setattr(files, "filesystem", lambda uri: (local_fs, uri.split("://", 1)[1]))
    monkeypatch.setattr(files, "is_remote", lambda fs: True)
    s = space()
    with pytest.raises(RuntimeError), study_storage("s3://b/tune", str(tmp_path / "w1"), "x") as st:
        search = searcher(s, st)
        search.suggest("a")
        report(search, "a", [0.5], final=True)
        raise RuntimeError("the search stopped")
    assert (bucket / "b" / "tune" / "optuna" / "x.journal").is_file()
    with study_storage("s3://b/tune", str(tmp_path / "w2"), "x") as st:  # another machine
        assert len(optuna.load_study(study_name=study_name(s), storage=st).trials) == 1


@pytest.mark.parametrize("shared", [True, False])
def test_a_search_keeps_its_study_unless_told_not_to(tmp_path, monkeypatch, shared):
    """searcher.shared_study=false (bench/search.py's searches, each from nothing) runs on
    an in-memory study; by default the driver hands Tune's searcher the stored journal."""
    from s2d_ray.search import tuner
    from s2d_ray.search.trial import SearchInputs
    from s2d_ray.tracking import TrackingConfig

    seen = {}

    class Tuner:
        def fit(self):
            return "results"

    def build(inputs, storage, name, retries, lines, optuna_storage):
        seen["storage"] = optuna_storage
        return Tuner()

    monkeypatch.setattr(tuner, "build_tuner", build)
    s = space([f"searcher.shared_study={str(shared).lower()}"])
    inputs = SearchInputs(s, "/d", str(tmp_path / "work"), TrackingConfig.disabled())
    assert tuner.run_experiment(inputs, str(tmp_path / "tune"), "x") == "results"
    assert (seen["storage"] is not None) is shared
    assert (tmp_path / "tune" / "optuna").is_dir() is shared
