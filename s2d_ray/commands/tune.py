"""Search a method's hyperparameters with Ray Tune + Optuna (TPE, the paper's values first,
ASHA on the periodic val evaluation), then judge and export the best distilled set.

    s2d tune                                       # S2D-MTT on the embedded set, IPC 1
    s2d tune --smoke-test                          # two tiny trials through every stage
    s2d tune --method s2d-dm --data work/mine      # your own shards (`s2d prepare`)
    s2d tune --space my_space.yaml --set budget.trials=24
    ray job submit --working-dir . -- s2d tune --data s3://bucket/hmdb51/data \\
        --storage s3://bucket/hmdb51 --mlflow-uri http://HEAD_IP:5000

The space: --space (a file, or a shipped name from `s2d spaces ls`), else the one shipped for
the data's dataset, ipc and method, else one derived for your data from a shipped one (written
into <workdir>/spaces to read and edit). Missing inputs are built in --storage (the workdir
unless given): shards of the embedded set, experts, static memories. Re-running the same
command resumes an interrupted search and reports a finished one.
"""

from __future__ import annotations

import argparse

from s2d_ray.commands.common import UsageError, add_tracking, print_tracking, workdir_of
from s2d_ray.methods import METHODS

SUMMARY = "search hyperparameters (Ray Tune + Optuna), judge and export the best set"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="s2d-mtt", choices=sorted(METHODS), help="what distils")
    p.add_argument(
        "--space",
        help="search-space YAML, or a shipped space's name (`s2d spaces ls`); default: the "
        "one for the data's dataset, --ipc and --method, derived for your data if none ships",
    )
    p.add_argument(
        "--data",
        help="clip shards from `s2d prepare` (default: <storage>/data, built for the embedded set)",
    )
    p.add_argument(
        "--dataset",
        help="the dataset whose shipped space and data to use when --data is not given "
        "(default: embedded)",
    )
    p.add_argument("--ipc", type=int, default=1, help="synthetic videos per class")
    p.add_argument(
        "--experts", help="expert store (default: <storage>/experts, trained if missing)"
    )
    add_tracking(p)
    p.add_argument(
        "--storage",
        help="storage every node reaches, for a cluster (s3://bucket/prefix or a shared mount): "
        "Tune's results, experts, static memories (default: the workdir)",
    )
    p.add_argument("--num-samples", type=int, help="trials (default: the space's budget.trials)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a key of the space, e.g. budget.iterations=400 (repeatable; default: "
        "the space as written)",
    )
    p.add_argument("--num-experts", type=int, default=4, help="experts to train when missing")
    p.add_argument(
        "--farm-gpus-per-worker",
        type=float,
        help="GPUs per expert trainer, when experts are missing (default: resources.gpu)",
    )
    p.add_argument(
        "--static-iterations", type=int, default=200, help="static memory's, when missing"
    )
    p.add_argument(
        "--full-epochs",
        type=int,
        default=0,
        help="also train on all real clips this many epochs for the table; 0: no",
    )
    p.add_argument("--no-build", action="store_true", help="missing inputs are errors")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 tiny trials through every stage; tiny inputs built in <storage>/smoke; "
        "logged to the dataset's smoke experiment",
    )


def run(args: argparse.Namespace) -> int:
    from s2d_ray.search.config import SearchConfig
    from s2d_ray.search.tuner import run_search
    from s2d_ray.tracking import TrackingConfig

    space = choose_space(args)
    overrides = list(args.overrides)
    if args.num_samples:
        overrides.append(f"budget.trials={args.num_samples}")
    config = SearchConfig(
        space=str(space),
        overrides=overrides,
        workdir=str(workdir_of(args)),
        storage=args.storage,
        data=args.data,
        experts=args.experts,
        num_experts=args.num_experts,
        farm_gpus_per_worker=args.farm_gpus_per_worker,
        static_iterations=args.static_iterations,
        build=not args.no_build,
        device=args.device,
        full_epochs=args.full_epochs,
        smoke=args.smoke_test,
    )
    tracking = TrackingConfig.create(
        config.workdir, "s2d", cli_uri=args.mlflow_uri, enabled=not args.no_mlflow
    )  # the search names the experiment after the space's dataset
    summary = run_search(config, tracking)
    print_summary(summary)
    print_tracking(
        tracking.with_experiment(summary.experiment), summary.parent_run_id, "search run"
    )
    return 0


def choose_space(args: argparse.Namespace) -> str:
    """The space as given, shipped for the data, or derived for it."""
    from s2d_ray.data import DATASETS
    from s2d_ray.search.spaces import find_space, shipped_spaces, space_for_data, space_name

    if args.space:
        return str(find_space(args.space))
    if args.data is None:
        dataset = args.dataset or "embedded"
        name = space_name(dataset, args.ipc, args.method)
        if name not in shipped_spaces() and dataset in DATASETS:
            raise UsageError(
                f"no search space ships for {dataset} at ipc {args.ipc} with {args.method}: "
                "pass --data with its shards (a space is derived from them) or --space FILE"
            )
        return str(find_space(name))
    from s2d_ray.data.stream import ClipShards

    manifest = ClipShards(args.data).manifest
    if args.dataset and args.dataset != manifest["dataset"]:
        raise UsageError(
            f"--data {args.data} holds {manifest['dataset']}, not --dataset {args.dataset}: "
            "drop --dataset (the data's is used) or pass that dataset's shards"
        )
    path, derived = space_for_data(args.ipc, args.method, manifest, workdir_of(args) / "spaces")
    if derived:
        print(f"tune: no space ships for {manifest['dataset']}; using {path}, from {derived}")
    return str(path)


def print_summary(summary) -> None:
    from s2d_ray.evaluation import format_table

    phases = ", ".join(f"{phase} {s:.0f} s" for phase, s in summary.phases.items())
    print(
        f"\nsearch {summary.name}: {summary.trials} trials in {summary.seconds:.0f} s "
        f"({phases}; Tune results: {summary.storage})"
    )
    print(f"best trial (by val top-1) {summary.best_trial}: {summary.best_point}")
    print(format_table(summary.rows))
    for trial in summary.pareto:
        print(
            f"  Pareto: val top-1 {100 * trial['val_top1']:.1f}% at {trial['stored_mib']:.3f} MiB "
            f"{trial['config']}"
        )
    print(f"best set: {summary.best_set}  (s2d_ray.load_distilled(path) loads it)")
