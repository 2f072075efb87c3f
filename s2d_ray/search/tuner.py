"""The search driver: make sure the inputs exist, run one Ray Tune experiment (Optuna TPE with
the paper's point first, ASHA on the periodic evaluation), then re-judge and export the best.

    summary = run_search(SearchConfig(space="tune_spaces/embedded_ipc1_s2d-mtt.yaml",
                                      workdir="work"))

Inputs are reused when present and built when not (``search/inputs.py``); the best trial is
judged and exported by ``search/results.py``. Re-running the same command restores an
interrupted experiment (``Tuner.restore``) and reports a finished one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2d_ray import files
from s2d_ray.cluster import init_ray, run_with_resources
from s2d_ray.config import config_fingerprint
from s2d_ray.search import tune_fixes
from s2d_ray.search.config import SearchConfig, load_config_space
from s2d_ray.search.inputs import ensure_inputs
from s2d_ray.search.lines import TrialLines
from s2d_ray.search.results import (
    best_trial,
    export_best,
    judge_best,
    pareto_front,
    random_reference,
    trial_results,
)
from s2d_ray.search.searcher import (
    budget_aware_search,
    study_name,
    study_storage,
    unscored_points,
)
from s2d_ray.search.spaces import Choice, IntRange, LogUniform, SearchSpace
from s2d_ray.search.trial import SearchInputs, run_trial
from s2d_ray.synthetic.io import MANIFEST, TENSORS
from s2d_ray.tracking import (
    PARENT_RUN_TAG,
    Tracker,
    TrackingConfig,
    probe_http_store,
    shared_store,
)
from s2d_ray.tracking.config import experiment_for, is_http_uri


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT/SIGUSR1) stopped Tune; its state is saved and the same command resumes.

    A KeyboardInterrupt, so that the search's MLflow run ends KILLED rather than FAILED."""


@dataclass
class SearchSummary:
    name: str
    storage: str
    trials: int
    best_point: dict[str, Any]
    best_trial: str
    best_set: str
    rows: list = field(default_factory=list)
    parent_run_id: str | None = None
    seconds: float = 0.0
    pareto: list = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: inputs, trials, judging
    experiment: str = ""  # the MLflow experiment the search's runs are in


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """The space as Tune's sampling primitives (OptunaSearch converts them)."""
    from ray import tune

    dims: dict[str, Any] = {}
    for key, dim in space.space.items():
        if isinstance(dim, LogUniform):
            dims[key] = tune.loguniform(dim.low, dim.high)
        elif isinstance(dim, IntRange):
            dims[key] = (tune.lograndint if dim.log else tune.randint)(dim.low, dim.high + 1)
        elif isinstance(dim, Choice):
            dims[key] = tune.choice(dim.values)
    return dims


# -- the experiment ------------------------------------------------------------------------------
# Settings read only after the trials, by the judging of the best: changing them judges a
# finished search's best again (results.judge_best) instead of starting another search.
JUDGING_ONLY = {"budget": {"final_epochs", "final_repeats"}}


def experiment_name(space: SearchSpace) -> str:
    """Stable across re-runs of the same command (Tune and MLflow resume by it); another
    space or budget is another search. Resources stay in it: a resumed trial keeps the
    share it was created with, so a new share must be a new search to take effect."""
    identity = space.model_dump(mode="json", exclude=JUDGING_ONLY)
    return f"{space.name}-{config_fingerprint(identity)[:8]}"


def run_experiment(
    inputs: SearchInputs,
    storage: str,
    name: str,
    retries: int = 0,
    reference: Callable[[], float] | None = None,
):
    """Tune's results: a finished experiment's as they stand (its errored trials are results
    too, not work to redo), an interrupted one resumed, or a new one run. ``retries``: how
    often a failed trial starts again from its last checkpoint (on a cluster a node can go;
    on one machine a failure is a bug)."""
    from ray import tune

    path = f"{storage.rstrip('/')}/{name}"
    where, fs = files.ray_storage(path)
    restoring = tune.Tuner.can_restore(where, fs)  # before a new Tuner writes its state there
    budget = inputs.space.budget
    lines = TrialLines(budget.trials, budget.iterations)
    study = study_name(inputs.space)
    shared = inputs.space.searcher.shared_study
    keep = study_storage(storage, inputs.workdir, study) if shared else contextlib.nullcontext()
    with keep as optuna_storage:
        tuner = build_tuner(inputs, storage, name, retries, lines, optuna_storage)
        if restoring:
            try:
                grid = tuner.get_results()
            except RuntimeError:  # stopped before Tune saved any trial
                grid = None
            if grid is not None and _finished(grid, inputs.space.budget.trials):
                print(f"search: {path} is finished; reporting it", flush=True)
                return grid
            print(f"search: resuming {path}", flush=True)
        if reference is not None:  # only when trials run: a finished search needs none
            lines.reference = reference()
        return tuner.fit()


def _finished(grid, trials: int) -> bool:
    """Every trial of the budget has ended, errored ones included."""
    return len(grid) >= trials and grid.num_terminated + grid.num_errors == len(grid)


def build_tuner(
    inputs: SearchInputs,
    storage: str,
    name: str,
    retries: int = 0,
    lines: TrialLines | None = None,
    optuna_storage=None,
):
    """A new Tuner, or the interrupted one restored (same trials, same searcher state).
    ``optuna_storage``: where the study persists (``searcher.study_storage``); None keeps it
    in memory."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    space, budget = inputs.space, inputs.space.budget
    tune_fixes.apply()
    resources = {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, inputs=inputs), resources)
    where, fs = files.ray_storage(f"{storage.rstrip('/')}/{name}")
    # Every report carries the trial's checkpoint and Tune keeps one, so it snapshots its
    # state at every report, as resuming needs; its warning about that would repeat each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # TrialLines reports the trials; Tune's newer console output prints its configuration
    # and paths tables whatever the verbosity, its older one is silent at verbose=0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if tune.Tuner.can_restore(where, fs):
        return tune.Tuner.restore(
            where,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=fs,
        )
    objective = space.objective
    study = study_name(space)
    points = [dict(p) for p in space.paper]
    if optuna_storage is not None:
        points = unscored_points(points, optuna_storage, study)
    common = {"points_to_evaluate": points, "sampler": _sampler(space)}
    common |= {"storage": optuna_storage, "study_name": study}
    if objective.pareto_bytes:
        searcher = budget_aware_search(
            metric=[objective.metric, "stored_mib"], mode=[objective.mode, "min"], **common
        )
        scheduler, metric, mode = None, None, None  # the searcher holds both objectives
    else:
        searcher = budget_aware_search(metric=objective.metric, mode=objective.mode, **common)
        scheduler = _scheduler(space)
        metric, mode = objective.metric, objective.mode
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            scheduler=scheduler,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=budget.max_concurrent),
            num_samples=budget.trials,
            reuse_actors=True,  # the next trial skips a process start and its imports
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=files.ray_storage(storage)[0],
            storage_filesystem=fs,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=retries),
            verbose=0,  # TrialLines says what happens, a line per report
            callbacks=[lines or TrialLines(budget.trials, budget.iterations)],
        ),
    )


def _scheduler(space: SearchSpace):
    """ASHA counts reports (one per periodic evaluation, the last at the last iteration even
    when eval_every does not divide the iterations), or FIFO runs every trial to the end."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler.type == "fifo":
        return FIFOScheduler()
    budget = space.budget
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=-(-budget.iterations // budget.eval_every),
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def _sampler(space: SearchSpace):
    """Seeded, so that the same space proposes the same points."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created"
    seed = space.seed if space.searcher.seed is None else space.searcher.seed
    if space.searcher.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = space.searcher.startup(space.budget.trials)
    if space.searcher.type == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=startup, seed=seed)
    # Optuna 5 models the dimensions jointly (multivariate TPE) for one objective, as
    # lr_dynamic and lr_hal want; independently for accuracy against MiB.
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)


def run_search(config: SearchConfig, tracking: TrackingConfig) -> SearchSummary:
    """Inputs, the Tune experiment, the best trial judged with the full protocol and exported."""

    started = time.perf_counter()
    space = load_config_space(config)
    tracking = tracking.with_experiment(experiment_for(space.dataset, config.smoke))
    name = experiment_name(space)
    work = Path(config.workdir)
    if tracking.enabled and not is_http_uri(tracking.uri) and config.on_cluster:
        raise ValueError(
            f"trials on other nodes cannot reach the MLflow store {tracking.uri}: with "
            f"--storage {config.storage}, give --mlflow-uri a server every node reaches "
            "(ray_cluster.yaml starts one on the head), or --no-mlflow"
        )
    if tracking.enabled and is_http_uri(tracking.uri):  # before any work, not in trial 1
        try:
            probe_http_store(tracking.uri)
        except OSError as exc:
            raise ValueError(f"the MLflow server {tracking.uri} does not answer ({exc})") from None
    if not config.on_cluster:
        _check_gpus(max(space.resources.gpu, config.farm_gpus_per_worker or 0))
    data, experts, statics = ensure_inputs(config, space, tracking)
    phases = {"inputs": time.perf_counter() - started}
    tags = {"s2d.role": "search", "s2d.search": space.name, "s2d.method": space.method}
    tags |= {"s2d.dataset": space.dataset, "s2d.ipc": space.ipc, "s2d.seed": space.seed}
    with shared_store(tracking, space.budget.max_concurrent) as tracking:
        tracker = Tracker(tracking)
        with tracker.start_run(
            f"search-{space.name}", tags=tags, resume_key=f"search/{name}"
        ) as parent:
            parent.log_params(_flat(space.model_dump(mode="json", exclude=JUDGING_ONLY)))
            parent.log_dict(space.model_dump(mode="json"), "search_space.json")
            inputs = SearchInputs(
                space, data, str(work), tracking, experts, statics, parent.run_id, config.device
            )
            init_ray()

            def reference() -> float:
                resources = space.resources
                value = run_with_resources(
                    random_reference,
                    data,
                    space,
                    config.device,
                    cpu=resources.cpu,
                    gpu=resources.gpu,
                    remote=config.offload(space),
                )
                parent.log_metrics({"random_real_val_top1": value})
                return value

            storage = files.join(config.storage or str(work), "tune")
            trials_started = time.perf_counter()
            retries = 2 if config.on_cluster else 0
            grid = run_experiment(inputs, storage, name, retries, reference)
            phases["trials"] = time.perf_counter() - trials_started
            _close_stopped_trials(tracker, parent.run_id)
            if not _finished(grid, space.budget.trials):
                raise SearchInterrupted(
                    f"search {name} interrupted after {grid.num_terminated} of "
                    f"{space.budget.trials} trials; its state is in {storage}/{name}: "
                    "run the same command again to resume it"
                )
            results = trial_results(grid)
            best = best_trial(results, space)
            best_set = export_best(best["checkpoint"], work / "best" / name)
            judging_started = time.perf_counter()
            rows = judge_best(best_set, best["trial_id"], data, space, config, parent)
            phases["judging"] = time.perf_counter() - judging_started
            parent.set_tags(
                {"s2d.best_trial": best["trial_id"]}
                | {f"s2d.best.{k}": v for k, v in best["config"].items()}
            )
            for file in (MANIFEST, TENSORS):
                parent.log_artifact(Path(best_set) / file, "best")
            summary = SearchSummary(
                name,
                f"{storage}/{name}",
                len(results),
                best["config"],
                best["trial_id"],
                best_set,
                rows,
                parent.run_id,
            )
            if space.objective.pareto_bytes:
                summary.pareto = pareto_front(results)
            summary.seconds = time.perf_counter() - started
            summary.phases = phases
            summary.experiment = tracking.experiment
            parent.log_metrics(
                {"seconds": summary.seconds, "trials": len(results)}
                | {f"seconds_{phase}": s for phase, s in phases.items()}
            )
            return summary


def _check_gpus(wanted: float) -> None:
    """Where nothing adds nodes, work asking for a GPU the Ray instance lacks would wait
    forever (an autoscaling cluster, with --storage, may still start one)."""
    if wanted <= 0:
        return
    import ray

    init_ray()
    have = ray.cluster_resources().get("GPU", 0)
    if have < wanted:
        raise ValueError(
            f"the search asks for {wanted:g} GPU per trial or expert trainer but this Ray "
            f"instance has {have:g} GPUs: run where one is, or --set resources.gpu=0"
        )


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _close_stopped_trials(tracker: Tracker, parent_run_id: str | None) -> None:
    """Trials ASHA stopped were killed mid-run: their MLflow runs end KILLED, not RUNNING."""
    if parent_run_id is None:
        return

    def close(client) -> None:
        parent = client.get_run(parent_run_id)
        runs = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in runs:
            client.set_terminated(run.info.run_id, status="KILLED")

    tracker.call("close stopped trials", close)
