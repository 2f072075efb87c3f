"""What `s2d static` and `s2d distill` share: their common flags, the DistillConfig fields those
set, and the end of a run (the summary, the table, where MLflow shows it)."""

from __future__ import annotations

import argparse

from s2d_ray.commands.common import (
    add_data,
    add_device_seed,
    add_eval,
    add_tracking,
    dataset_name,
    print_tracking,
    tracking_for,
)
from s2d_ray.methods.hyperparameters import ITERATIONS

SMOKE_ITERATIONS, SMOKE_EVAL_EPOCHS = 2, 2


def add_common(p: argparse.ArgumentParser, *, judge: bool = True) -> None:
    """``judge``: whether the set is evaluated at the end unless told not to (videos), or
    only when asked (the static memory, whose worth shows in the videos made from it)."""
    add_data(p)
    p.add_argument("--out", required=True, help="output folder: the distilled set")
    budgets = ", ".join(f"{m} {n}" for m, n in ITERATIONS.items())
    p.add_argument(
        "--iterations",
        type=int,
        help=f"default: the paper's budget per method ({budgets})",
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=50, help="iterations between checkpoints"
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="iterations between evaluations on the val split; 0: at the end only",
    )
    add_eval(p)
    p.add_argument(
        "--eval",
        dest="final_eval",
        action=argparse.BooleanOptionalAction,
        default=judge,
        help="judge the set at the end, beside random real clips, on test (default: "
        + ("yes; --no-eval skips it)" if judge else "no)"),
    )
    p.add_argument(
        "--storage-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="dtype the set is stored in (float16 halves its MiB)",
    )
    add_device_seed(p)
    add_tracking(p)
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 iterations at the smallest settings, a 2-epoch evaluation on 1 network; "
        "logged to the dataset's smoke experiment",
    )


def common_config(args: argparse.Namespace) -> dict:
    """The DistillConfig fields every distillation command sets from its common flags."""
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
            max_grad_norm=args.eval_max_grad_norm,
            seed=args.seed,
            **{k: v for k, v in given.items() if v is not None},
        ),
        "final_eval": args.final_eval,
        "storage_dtype": args.storage_dtype,
        "device": args.device,
        "seed": args.seed,
    }


def overrides(args: argparse.Namespace, names: list[str]) -> dict:
    """Method settings given on the command line (None: not given, keep the default)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def distil(args: argparse.Namespace, config) -> int:
    """Run the distillation, print its summary and where MLflow shows it."""
    from s2d_ray.distill import run_distillation

    tracking = tracking_for(args, dataset_name(args.data))
    summary = run_distillation(config, tracking)
    print_summary(summary)
    print_tracking(tracking, summary.run_id)
    return 0


def print_summary(summary) -> None:
    from s2d_ray.evaluation import format_table

    resumed = (
        ""
        if summary.resumed_from is None
        else f", resumed after iteration {summary.resumed_from + 1}"
    )
    print(
        f"{summary.method}: {summary.iterations_run} iterations in {summary.seconds:.0f} s"
        f"{resumed}; stored {summary.storage_bytes / 2**20:.3f} MiB -> {summary.out}"
    )
    if summary.rows:
        print(format_table(summary.rows))
