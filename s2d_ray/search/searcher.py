"""The searcher: Optuna behind Ray Tune, told what a trial really was, and remembering.

* A trial that ASHA stopped before the last iteration reaches Optuna as PRUNED, with its
  periodic evaluations as intermediate values, never as COMPLETE with its last (early) score:
  Ray 2.60's ``OptunaSearch.on_trial_complete`` tells the last reported value as final, so
  TPE would model 5-iteration scores as if they were 15-iteration ones.
* The study persists in the search's storage (Optuna's journal, ``<storage>/optuna/``), named
  by what makes two trials' scores comparable: the dataset, ipc, method, the fixed settings,
  the budget a trial runs and how it is scored, the seed and the objective. Another search of
  the same problem (more trials, another searcher seed, a narrower range) proposes from every
  earlier trial, and does not run again a starting point the study has already scored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s2d_ray import files
from s2d_ray.config import config_fingerprint
from s2d_ray.search.spaces import Choice, SearchSpace

FINAL = "final"  # a result key: whether the report is the trial's last iteration's


def study_name(space: SearchSpace) -> str:
    """Stable for every search whose trials' scores can be compared: the same point would
    score the same. The ranges of continuous dimensions are left out (another range is the
    same problem), the choices of categorical ones kept (Optuna cannot mix them)."""
    budget = space.budget
    identity = {
        "dataset": space.dataset,
        "ipc": space.ipc,
        "method": space.method,
        "fixed": space.fixed,
        "seed": space.seed,
        "objective": space.objective.model_dump(mode="json"),
        "trial": [budget.iterations, budget.eval_every, budget.eval_epochs, budget.eval_repeats],
        "dimensions": {
            key: dim.values if isinstance(dim, Choice) else type(dim).__name__
            for key, dim in sorted(space.space.items())
        },
    }
    return f"{space.dataset}_ipc{space.ipc}_{space.method}-{config_fingerprint(identity)[:8]}"


@contextlib.contextmanager
def study_storage(storage: str, workdir: str, name: str) -> Iterator[Any]:
    """Optuna's journal for study ``name`` in ``<storage>/optuna/``. A remote storage
    (s3://) keeps a local copy in the workdir while the search runs (the journal appends to a
    file under a lock) and writes it back when the search stops, however it stops."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    fs, path = files.filesystem(files.join(storage, "optuna", f"{name}.journal"))
    remote = files.is_remote(fs)
    local = Path(workdir) / "optuna" / f"{name}.journal" if remote else Path(path)
    local.parent.mkdir(parents=True, exist_ok=True)
    if remote and files.exists(fs, path):
        local.write_bytes(files.read_bytes(fs, path))
    try:
        yield JournalStorage(JournalFileBackend(os.fspath(local)))
    finally:
        if remote and local.exists():
            files.write_atomic(fs, path, local.read_bytes())


def unscored_points(points: list[dict], storage, name: str) -> list[dict]:
    """The starting points (the paper's) the study has not completed yet."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a new study
        return points
    done = [t.params for t in study.get_trials(deepcopy=False, states=[_complete()])]
    return [p for p in points if not any(_same(p, d) for d in done)]


def _complete():
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def _same(point: dict, params: dict) -> bool:
    return point.keys() == params.keys() and all(
        params[k] == v or (isinstance(v, float) and abs(params[k] - v) <= 1e-9 * abs(v))
        for k, v in point.items()
    )


def budget_aware_search(**kwargs):
    """An ``OptunaSearch`` that tells Optuna a trial stopped early is PRUNED (see above)."""
    from ray.tune.search.optuna import OptunaSearch

    class BudgetAwareOptunaSearch(OptunaSearch):
        def on_trial_complete(self, trial_id: str, result: dict | None = None, error=False):
            stopped_early = result is not None and not error and not result.get(FINAL, True)
            if stopped_early and trial_id not in self._completed_trials:
                from optuna.trial import TrialState

                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    return BudgetAwareOptunaSearch(**kwargs)
