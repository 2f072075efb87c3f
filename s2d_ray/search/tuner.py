"""The search driver: make sure the inputs exist, run one Ray Tune experiment (Optuna TPE with
the paper's point first, ASHA on the periodic evaluation), then re-judge and export the best.

    summary = run_search(SearchConfig(space="tune_spaces/embedded_ipc1_s2d-mtt.yaml",
                                      workdir="work/search"))

Inputs are reused when present and built when not, in the order data flows: prepared shards
(the embedded dataset only; others need ``jobs/prepare_data.py`` first) → the expert store
(Ray Train farm) → one static memory per spc the space can ask for. Re-running the same
command restores an interrupted experiment (``Tuner.restore``) and reports a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from s2d_ray.cluster import init_ray
from s2d_ray.config import StrictConfig, absolute_uri
from s2d_ray.data import ArrowClipDataset, get_dataset
from s2d_ray.data.shards import MANIFEST as SHARDS_MANIFEST
from s2d_ray.distill import judged_rows, log_rows
from s2d_ray.evaluation import ResultRow, full_data_baseline
from s2d_ray.methods import METHODS, STATIC_METHODS, RealData, smoke_settings
from s2d_ray.models import resolve_device
from s2d_ray.search.spaces import Choice, IntRange, LogUniform, SearchSpace, load_space
from s2d_ray.search.trial import SearchInputs, final_protocol, run_trial
from s2d_ray.synthetic import load_set
from s2d_ray.synthetic.io import MANIFEST, TENSORS
from s2d_ray.tracking import (
    PARENT_RUN_TAG,
    Tracker,
    TrackingConfig,
    probe_http_store,
    start_local_server,
    stop_local_server,
)
from s2d_ray.tracking.config import is_http_uri

# --smoke-test: two short trials on a tiny embedded set, every stage exercised
SMOKE_OVERRIDES = [
    "budget.trials=2",
    "budget.iterations=2",
    "budget.eval_every=1",
    "budget.eval_epochs=1",
    "budget.final_epochs=1",
    "budget.final_repeats=1",
]


class SearchConfig(StrictConfig):
    space: str = Field(description="search-space YAML (tune_spaces/)")
    overrides: list[str] = Field(default_factory=list, description="--set section.key=value")
    workdir: str = "work/search"
    data: str | None = Field(default=None, description="clip shards; default <workdir>/data")
    experts: str | None = Field(default=None, description="expert store; <workdir>/experts")
    num_experts: int = Field(default=4, ge=1)
    farm_workers: int = Field(default=2, ge=1, description="parallel expert trainers")
    farm_gpus_per_worker: float | None = Field(
        default=None, ge=0, description="GPUs per expert trainer; None: a trial's resources.gpu"
    )
    static_iterations: int = Field(default=200, ge=1)
    build: bool = Field(default=True, description="False: missing inputs are errors")
    device: str = "auto"
    full_epochs: int = Field(default=0, ge=0, description="also train on all real clips; 0: no")
    smoke: bool = False

    _absolute = field_validator("workdir", "data", "experts")(absolute_uri)


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


def load_config_space(config: SearchConfig) -> SearchSpace:
    overrides = [*(SMOKE_OVERRIDES if config.smoke else []), *config.overrides]
    space = load_space(config.space, overrides)
    return smoke_space(space) if config.smoke else space


def smoke_space(space: SearchSpace) -> SearchSpace:
    """The space shrunk to seconds per trial: 1 or 2 student steps on one-epoch experts,
    and the smoke settings of what the space does not search."""
    dims, paper = dict(space.space), [dict(p) for p in space.paper]
    smoke = smoke_settings(METHODS[space.method].Config)
    fixed = {**space.fixed, **{k: v for k, v in smoke.items() if k not in dims}}
    if "syn_steps" in dims:
        dims["syn_steps"] = Choice(type="choice", values=[1, 2])
        for point in paper:
            point["syn_steps"] = 2
    return SearchSpace.model_validate(
        {**space.model_dump(), "space": dims, "fixed": fixed, "paper": paper}
    )


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


# -- inputs ------------------------------------------------------------------------------------
def ensure_inputs(
    config: SearchConfig, space: SearchSpace, tracking: TrackingConfig
) -> tuple[str, str | None, tuple[tuple[int, str], ...]]:
    """(shards, expert store or None, static memories by spc), built where missing."""
    work = Path(config.workdir)
    data = config.data or str(work / "data")
    if not (Path(data) / SHARDS_MANIFEST).exists() and "://" not in data:
        if not config.build or space.dataset != "embedded":
            raise FileNotFoundError(
                f"no clip shards at {data}: prepare them first with `python jobs/prepare_data.py "
                f"--dataset {space.dataset} --out {data} ...` and pass --data"
            )
        _prepare_embedded(data, config.smoke)
    method = METHODS[space.method]
    experts = None
    if "experts" in method.Config.model_fields:
        experts = config.experts or str(work / "experts")
        _ensure_experts(config, space, data, experts, tracking)
    statics = []
    if method.needs_static:
        for spc in _static_sizes(space):
            statics.append((spc, _ensure_static(config, space, data, spc, tracking)))
    return data, experts, tuple(statics)


def _prepare_embedded(out: str, smoke: bool) -> None:
    from s2d_ray.data import PrepareConfig, prepare

    print(f"search: preparing the embedded dataset in {out}", flush=True)
    prepare(
        PrepareConfig(dataset="embedded", out=out, max_videos_per_class=4 if smoke else None),
        progress=False,
    )


def _ensure_experts(config, space, data, out, tracking) -> None:
    from s2d_ray.experts.farm import FarmConfig, run_farm
    from s2d_ray.experts.store import TrajectoryStore
    from s2d_ray.experts.training import ExpertConfig

    defaults = METHODS[space.method].Config.model_fields
    points = [*space.paper, space.corner("low"), space.corner("high")]
    settings = [space.trial_settings(p)[0] for p in points]

    def most(key: str) -> int:  # what any trial may read of the trajectories
        return max(s.get(key, defaults[key].default) for s in settings)

    max_start, expert_epochs = most("max_start_epoch"), most("expert_epochs")
    count = 1 if config.smoke else config.num_experts
    complete = 0
    if Path(out, "store.json").exists() or "://" in out:
        complete = len(TrajectoryStore.open(out).experts(complete_only=True))
    if complete >= count:
        return
    if not config.build:
        raise FileNotFoundError(
            f"{out} holds {complete} complete experts, the search needs {count}; train them "
            f"with `python jobs/train_experts.py --data {data} --out {out} --num-experts "
            f"{count}` or drop --no-build"
        )
    expert = ExpertConfig(max_start_epoch=max_start, expert_epochs=expert_epochs)
    # An expert trainer is a trial's size of work: on a GPU box it gets a trial's GPU share.
    gpus = (
        space.resources.gpu if config.farm_gpus_per_worker is None else config.farm_gpus_per_worker
    )
    print(f"search: training {count - complete} experts into {out}", flush=True)
    run_farm(
        FarmConfig(
            data=data,
            out=out,
            num_experts=count,
            workers=min(config.farm_workers, count - complete),
            gpus_per_worker=gpus,
            expert=expert,
        ),
        tracking,
        progress=False,
    )


def _static_sizes(space: SearchSpace) -> list[int]:
    ratios = [space.fixed.get("spc:dpc")] if "spc:dpc" in space.fixed else []
    if "spc:dpc" in space.space:
        ratios += space.space["spc:dpc"].values
    if not ratios:
        return [space.ipc]  # the S2D methods' default: one still per video
    return sorted({space.trial_settings({**space.corner("low"), "spc:dpc": r})[1] for r in ratios})


def _ensure_static(config, space, data, spc, tracking) -> str:
    from s2d_ray.distill import DistillConfig, run_distillation

    out = str(Path(config.workdir) / f"static-spc{spc}")
    if Path(out, "manifest.json").exists():
        return out
    if not config.build:
        raise FileNotFoundError(
            f"no static memory at {out}: make it with `python jobs/distill_static.py --data "
            f"{data} --out {out} --spc {spc}` or drop --no-build"
        )
    print(f"search: distilling the static memory (spc {spc}) into {out}", flush=True)
    iterations = 2 if config.smoke else config.static_iterations
    run_distillation(
        DistillConfig(
            method="dm",
            stage="static",
            data=data,
            out=out,
            ipc=spc,
            iterations=iterations,
            method_config=smoke_settings(STATIC_METHODS["dm"].Config) if config.smoke else {},
            final_eval=False,
            seed=space.seed,
            device=config.device,
        ),
        tracking,
    )
    return out


# -- the experiment ------------------------------------------------------------------------------
def experiment_name(space: SearchSpace) -> str:
    """Stable across re-runs of the same command (Tune and MLflow resume by it); another
    space or budget is another search."""
    return f"{space.name}-{space.fingerprint()[:8]}"


def build_tuner(inputs: SearchInputs, storage: str, name: str):
    """A new Tuner, or the interrupted one restored (same trials, same searcher state)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    space, budget = inputs.space, inputs.space.budget
    resources = {"cpu": space.resources.cpu, "gpu": space.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, inputs=inputs), resources)
    path = f"{storage.rstrip('/')}/{name}"
    # Every report carries the trial's checkpoint and Tune keeps one, so it snapshots its
    # state at every report, as resuming needs; its warning about that would repeat each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if tune.Tuner.can_restore(path):
        print(f"search: resuming {path}", flush=True)
        return tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    objective = space.objective
    points = [dict(p) for p in space.paper]
    sampler = _sampler(space)
    if objective.pareto_bytes:
        searcher = OptunaSearch(
            metric=[objective.metric, "stored_mib"],
            mode=[objective.mode, "min"],
            points_to_evaluate=points,
            sampler=sampler,
        )
        scheduler, metric, mode = None, None, None  # the searcher holds both objectives
    else:
        searcher = OptunaSearch(
            metric=objective.metric, mode=objective.mode, points_to_evaluate=points, sampler=sampler
        )
        scheduler = FIFOScheduler()
        if space.scheduler.type == "asha":
            scheduler = ASHAScheduler(
                time_attr="training_iteration",  # one per periodic evaluation
                max_t=budget.iterations // budget.eval_every,
                grace_period=space.scheduler.grace_period,
                reduction_factor=space.scheduler.reduction_factor,
            )
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
            storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


def _sampler(space: SearchSpace):
    """Seeded, so that the same space proposes the same points."""
    import optuna

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
    tracking = tracking.with_experiment(f"s2d/{space.dataset}")  # one experiment per dataset
    name = experiment_name(space)
    work = Path(config.workdir)
    if tracking.enabled and is_http_uri(tracking.uri):  # before any work, not in trial 1
        try:
            probe_http_store(tracking.uri)
        except OSError as exc:
            raise ValueError(f"the MLflow server {tracking.uri} does not answer ({exc})") from None
    data, experts, statics = ensure_inputs(config, space, tracking)
    phases = {"inputs": time.perf_counter() - started}
    server = None
    if (
        space.budget.max_concurrent > 1
        and tracking.enabled
        and str(tracking.uri).startswith("sqlite")
    ):  # parallel trials never share one sqlite file: they log through a local server
        url, server = start_local_server(
            tracking.uri, work / "mlartifacts", log_file=work / "mlflow-server.log"
        )
        tracking = replace(tracking, uri=url, artifact_root=None)
    tracker = Tracker(tracking)
    tags = {"s2d.role": "search", "s2d.search": space.name, "s2d.method": space.method}
    tags |= {"s2d.dataset": space.dataset, "s2d.ipc": space.ipc, "s2d.seed": space.seed}
    try:
        with tracker.start_run(
            f"search-{space.name}", tags=tags, resume_key=f"search/{name}"
        ) as parent:
            parent.log_params(_flat(space.model_dump(mode="json")))
            parent.log_dict(space.model_dump(mode="json"), "search_space.json")
            inputs = SearchInputs(
                space, data, str(work), tracking, experts, statics, parent.run_id, config.device
            )
            init_ray()
            storage = str(work / "tune")
            trials_started = time.perf_counter()
            grid = build_tuner(inputs, storage, name).fit()
            phases["trials"] = time.perf_counter() - trials_started
            _close_stopped_trials(tracker, parent.run_id)
            if grid.num_terminated + grid.num_errors < space.budget.trials:
                raise SearchInterrupted(
                    f"search {name} interrupted after {grid.num_terminated} of "
                    f"{space.budget.trials} trials; its state is in {storage}/{name}: "
                    "run the same command again to resume it"
                )
            results = _trial_results(grid)
            best = best_trial(results, space)
            best_set = export_best(inputs.trial_out(best["trial_id"]), work / "best")
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
            parent.log_metrics(
                {"seconds": summary.seconds, "trials": len(results)}
                | {f"seconds_{phase}": s for phase, s in phases.items()}
            )
            return summary
    finally:
        if server is not None:
            stop_local_server(server)


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


def _trial_results(grid) -> list[dict[str, Any]]:
    """Each trial's last report with its point and id (errored trials have none)."""
    results = []
    for result in grid:
        metrics = dict(result.metrics or {})
        if "trial_id" in metrics:
            results.append({**metrics, "config": dict(result.config or {})})
    return results


def best_trial(results: list[dict[str, Any]], space: SearchSpace) -> dict[str, Any]:
    """The completed, finite trial with the best last evaluation."""
    done = [
        r
        for r in results
        if r.get("iteration") == space.budget.iterations and not r.get("diverged")
    ]
    if not done:
        raise RuntimeError(
            f"none of the {len(results)} trials ran its {space.budget.iterations} iterations "
            "without diverging; widen the space or lower the learning rates"
        )
    sign = 1 if space.objective.mode == "max" else -1
    done.sort(key=lambda r: r["trial_id"])  # ties go to the same trial on every re-run
    return max(done, key=lambda r: sign * r[space.objective.metric])


def pareto_front(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials no other beats on both accuracy (higher) and stored MiB (lower)."""
    done = [r for r in results if "stored_mib" in r and not r.get("diverged")]
    front = [
        r
        for r in done
        if not any(
            o["eval_top1"] >= r["eval_top1"]
            and o["stored_mib"] <= r["stored_mib"]
            and (o["eval_top1"], o["stored_mib"]) != (r["eval_top1"], r["stored_mib"])
            for o in done
        )
    ]
    return sorted(front, key=lambda r: r["stored_mib"])


def export_best(trial_out: Path, best: Path) -> str:
    """The best trial's distilled set, copied to ``best`` (``load_distilled(best)``)."""
    best.mkdir(parents=True, exist_ok=True)
    for file in (MANIFEST, TENSORS):
        shutil.copy2(trial_out / file, best / file)
    return str(best)


def judge_best(best_set, trial_id, data, space, config, run) -> list:
    """The full protocol on the best set (cached per trial and protocol: a finished search
    re-run reports, it does not re-evaluate)."""
    cache = Path(best_set) / "search_evaluation.json"
    eval_config = final_protocol(space)
    protocol = eval_config.model_dump(mode="json")
    key = {"trial_id": trial_id, "protocol": protocol, "full_epochs": config.full_epochs}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if all(saved.get(k) == v for k, v in key.items()):
            return [ResultRow.from_dict(d, saved["groups"]) for d in saved["rows"]]
    real = RealData.open(data, resolve_device(config.device))
    synthetic, manifest = load_set(best_set)
    name = f"best {space.method} ipc {space.ipc}"
    own = manifest.get("eval", {})
    rows = judged_rows(synthetic, own, real, space.ipc, eval_config, manifest["bytes"], name)
    if config.full_epochs:
        test = ArrowClipDataset(real.shards, "test")
        full = eval_config.model_copy(update={"epochs": config.full_epochs, "repeats": 1})
        flip = get_dataset(real.shards.manifest["dataset"]).flip
        result = full_data_baseline(real, test, full, flip=flip)
        rows.append(ResultRow("full real data", result, None, rows[0].groups))
    log_rows(rows, run)
    saved = {**key, "groups": rows[0].groups, "rows": [r.to_dict() for r in rows]}
    cache.write_text(json.dumps(saved))
    return rows
