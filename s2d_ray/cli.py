"""Argument plumbing shared by the distillation jobs: common flags, tracking, errors, summary."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from s2d_ray.methods.hyperparameters import ITERATIONS
from s2d_ray.tracking import TrackingConfig

SMOKE_ITERATIONS, SMOKE_EVAL_EPOCHS = 2, 2


MICRO_BATCH_HELP = "clips per forward/backward: auto (by clip size), all, or a number"


def micro_batch_arg(value: str) -> int | str | None:
    """``--micro-batch`` values: "auto", "all" (None: never split) or a clip count."""
    if value in ("auto", "all"):
        return None if value == "all" else value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, all or a number: {value!r}") from None


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="clip shards from prepare_data.py")
    p.add_argument("--out", required=True, help="output folder: the distilled set")
    budgets = ", ".join(f"{m} {n}" for m, n in ITERATIONS.items())
    p.add_argument(
        "--iterations",
        type=int,
        help=f"default: the paper's budget per method ({budgets})",
    )
    p.add_argument("--checkpoint-every", type=int, default=50, help="default %(default)s")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="iterations between evaluations on the val split; 0 (default): at the end only",
    )
    p.add_argument(
        "--eval-epochs", type=int, help="evaluation epochs (500; FRePo sets 1000, SPEC §6)"
    )
    p.add_argument("--eval-lr", type=float, help="evaluation lr (0.01; MTT: syn_lr; FRePo 1e-4)")
    p.add_argument("--eval-repeats", type=int, default=3, help="fresh networks per evaluation")
    p.add_argument(
        "--eval-micro-batch", type=micro_batch_arg, default="auto", help=MICRO_BATCH_HELP
    )
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--storage-dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlflow-uri", help="default: $MLFLOW_TRACKING_URI, else <out>/../mlflow.db")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 iterations at the smallest settings (methods.hyperparameters.SMOKE), "
        "a 2-epoch evaluation",
    )


def common_config(args: argparse.Namespace) -> dict:
    """The DistillConfig fields every distillation job sets from its common flags."""
    from s2d_ray.evaluation import EvalConfig

    smoke = args.smoke_test
    given = {"epochs": SMOKE_EVAL_EPOCHS if smoke else args.eval_epochs, "lr": args.eval_lr}
    return {
        "data": args.data,
        "out": args.out,
        "iterations": SMOKE_ITERATIONS if smoke else args.iterations,
        "checkpoint_every": args.checkpoint_every,
        "eval_every": args.eval_every,
        "eval": EvalConfig(  # only what was given: the rest may be the set's own settings
            repeats=1 if smoke else args.eval_repeats,
            micro_batch=args.eval_micro_batch,
            seed=args.seed,
            **{k: v for k, v in given.items() if v is not None},
        ),
        "final_eval": not args.no_eval,
        "storage_dtype": args.storage_dtype,
        "device": args.device,
        "seed": args.seed,
    }


def overrides(args: argparse.Namespace, names: list[str]) -> dict:
    """Method settings given on the command line (None: not given, keep the default)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def dataset_name(data: str) -> str:
    from s2d_ray.data.stream import ClipShards

    return ClipShards(data).manifest["dataset"]


def tracking_for(args: argparse.Namespace, dataset: str) -> TrackingConfig:
    workdir = Path(args.out).resolve().parent if "://" not in args.out else Path.cwd()
    return TrackingConfig.create(
        workdir, f"s2d/{dataset}", cli_uri=args.mlflow_uri, enabled=not args.no_mlflow
    )


def run_job(prog: str, args: argparse.Namespace, make_config: Callable) -> int:
    """Build the config, run the distillation, print the summary; bad input exits 2 with
    one clear line."""
    from s2d_ray.distill import DivergedError, run_distillation
    from s2d_ray.methods.checkpoint import CheckpointMismatchError
    from s2d_ray.synthetic import NotADistilledSetError

    errors = (
        ValidationError,
        ValueError,
        FileNotFoundError,
        NotADistilledSetError,
        CheckpointMismatchError,
        DivergedError,
    )
    try:
        config = make_config()
        summary = run_distillation(config, tracking_for(args, dataset_name(args.data)))
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


def print_summary(summary) -> None:
    from s2d_ray.evaluation import format_table

    resumed = (
        ""
        if summary.resumed_from is None
        else (f", resumed after iteration {summary.resumed_from + 1}")
    )
    print(
        f"{summary.method}: {summary.iterations_run} iterations in {summary.seconds:.0f} s"
        f"{resumed}; stored {summary.storage_bytes / 2**20:.3f} MiB -> {summary.out}"
    )
    if summary.rows:
        print(format_table(summary.rows))
    if summary.run_id:
        print(f"MLflow run {summary.run_id}")
