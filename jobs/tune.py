"""Search a method's hyperparameters with Ray Tune + Optuna (TPE, the paper's values first,
ASHA on the periodic evaluation), then judge and export the best distilled set.

    python jobs/tune.py --method s2d-mtt                      # embedded dataset, IPC 1
    python jobs/tune.py --method s2d-dm --dataset hmdb51 --ipc 5 --data work/hmdb51
    python jobs/tune.py --method s2d-mtt --set budget.trials=24 --num-samples 24
    ray job submit --working-dir . -- python jobs/tune_mtt.py --dataset hmdb51 \
        --storage s3://bucket/hmdb51 --data s3://bucket/hmdb51/data --workdir ~/work \
        --mlflow-uri http://HEAD_IP:5000

The space is tune_spaces/<dataset>_ipc<ipc>_<method>.yaml unless --space names another.
Missing inputs are built in --storage, the workdir unless given (shards of the embedded set,
experts, static memories); re-running the same command resumes an interrupted search and
reports a finished one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from s2d_ray.methods import METHODS
from s2d_ray.tracking import TrackingConfig

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


def parse_args(argv: list[str] | None = None, method: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    if method is None:
        p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--space", help="search-space YAML (default: tune_spaces/<dataset>_ipc<k>_...)")
    p.add_argument("--dataset", default="embedded", help="picks the default space")
    p.add_argument("--ipc", type=int, default=1, help="picks the default space")
    p.add_argument("--data", help="clip shards (default: <storage>/data, built if embedded)")
    p.add_argument("--experts", help="expert store (default: <storage>/experts, built if missing)")
    p.add_argument("--workdir", default="work/search", help="this node's files (MLflow, best)")
    p.add_argument(
        "--storage",
        help="storage every node reaches, for a cluster (s3://bucket/prefix or a shared mount): "
        "Tune's results, experts, static memories (default: the workdir)",
    )
    p.add_argument("--num-samples", type=int, help="trials (the space's budget.trials)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override any key of the space, e.g. budget.iterations=400",
    )
    p.add_argument("--num-experts", type=int, default=4, help="experts to train when missing")
    p.add_argument(
        "--farm-gpus-per-worker",
        type=float,
        help="GPUs per expert trainer, when experts are missing (default: resources.gpu)",
    )
    p.add_argument("--static-iterations", type=int, default=200, help="static memory, when missing")
    p.add_argument("--full-epochs", type=int, default=0, help="also train on all real clips")
    p.add_argument("--no-build", action="store_true", help="missing inputs are errors")
    p.add_argument("--device", default="auto")
    p.add_argument("--mlflow-uri", help="default: $MLFLOW_TRACKING_URI, else <workdir>/mlflow.db")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 tiny trials, every stage; tiny inputs built in <storage>/smoke",
    )
    args = p.parse_args(argv)
    if method is not None:
        args.method = method
    return args


def main(argv: list[str] | None = None, method: str | None = None) -> int:
    from s2d_ray.search.spaces import SpaceError
    from s2d_ray.search.tuner import SearchConfig, run_search

    args = parse_args(argv, method)
    space = args.space or str(SPACES / f"{args.dataset}_ipc{args.ipc}_{args.method}.yaml")
    overrides = list(args.overrides)
    if args.num_samples:
        overrides.append(f"budget.trials={args.num_samples}")
    try:
        config = SearchConfig(
            space=space,
            overrides=overrides,
            workdir=args.workdir,
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
            config.workdir,
            f"s2d/{args.dataset}",
            cli_uri=args.mlflow_uri,
            enabled=not args.no_mlflow,
        )
        summary = run_search(config, tracking)
    except KeyboardInterrupt as exc:  # Tune saved its state: the same command resumes
        print(f"tune: interrupted: {exc or 'before the search started'}", file=sys.stderr)
        return 130
    except (SpaceError, ValidationError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"tune: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary, tracking)
    return 0


def print_summary(summary, tracking: TrackingConfig) -> None:
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
    if summary.parent_run_id:
        print(
            f"MLflow: {tracking.uri}, search run {summary.parent_run_id} "
            "(browse with `make mlflow-ui`)"
        )


if __name__ == "__main__":
    sys.exit(main())
