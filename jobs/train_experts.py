"""Train MTT expert trajectories with a Ray Train farm, tracked in MLflow.

    python jobs/train_experts.py --data work/embedded --out work/experts --num-experts 4 --workers 2
    python jobs/train_experts.py --data shards/miniucf --out experts/miniucf --num-experts 30 \\
        --workers 8 --gpus-per-worker 1

Re-running the same command resumes: complete experts are kept, partial ones continue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from s2d_ray.cli import MICRO_BATCH_HELP, micro_batch_arg
from s2d_ray.experts.farm import FarmConfig, run_farm
from s2d_ray.experts.store import StoreMismatchError
from s2d_ray.experts.training import ExpertConfig
from s2d_ray.tracking import TrackingConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="clip shard directory from prepare_data.py")
    p.add_argument("--out", required=True, help="trajectory store (path or URI)")
    p.add_argument("--num-experts", type=int, help="required unless --smoke-test")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="0 = CPU workers")
    p.add_argument(
        "--epochs",
        type=int,
        help="default: max_start_epoch - 1 + expert_epochs, all MTT reads; more extends a store",
    )
    p.add_argument("--max-start-epoch", type=int, default=10)
    p.add_argument("--expert-epochs", type=int, default=1)
    p.add_argument("--lr-teacher", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--micro-batch", type=micro_batch_arg, default="auto", help=MICRO_BATCH_HELP)
    p.add_argument("--network", default="convnet3d")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flip per clip; default: the dataset's (on for ucf101, miniucf "
        "and hmdb51, as the paper; off for kinetics400, ssv2, embedded and video-folder)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        default="tf32",
        help="on CUDA: tf32 (as the reference's convolutions), fp32 (IEEE) or bf16 autocast",
    )
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="skip the reference's per-batch standardisation",
    )
    p.add_argument("--max-failures", type=int, default=3, help="worker-group restarts allowed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mlflow-uri",
        help="tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<out's parent>/mlflow.db)",
    )
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--smoke-test", action="store_true", help="2 experts, 1 epoch, 1 worker")
    args = p.parse_args(argv)
    if args.num_experts is None and not args.smoke_test:
        p.error("--num-experts is required (or --smoke-test)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke_test:
        args.num_experts, args.epochs, args.workers = 2, 1, 1
    try:
        expert = ExpertConfig(
            network=args.network,
            lr_teacher=args.lr_teacher,
            batch_size=args.batch_size,
            micro_batch=args.micro_batch,
            max_start_epoch=args.max_start_epoch,
            expert_epochs=args.expert_epochs,
            epochs=args.epochs,
            flip=args.flip,
            precision=args.precision,
            standardize=not args.no_standardize,
            seed=args.seed,
        )
        config = FarmConfig(
            data=args.data,
            out=args.out,
            num_experts=args.num_experts,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            max_failures=args.max_failures,
            expert=expert,
        )
        workdir = Path(args.out).resolve().parent if "://" not in args.out else Path.cwd()
        dataset = _dataset_name(args.data)
        tracking = TrackingConfig.create(
            workdir, f"s2d/{dataset}", cli_uri=args.mlflow_uri, enabled=not args.no_mlflow
        )
        summary = run_farm(config, tracking)
    except (ValidationError, ValueError, FileNotFoundError, StoreMismatchError) as exc:
        print(f"train_experts: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"store {summary.store}: {len(summary.experts)} complete experts "
        f"({len(summary.trained)} trained now, {summary.seconds:.0f} s)"
    )
    for e in summary.experts:
        acc = e.metrics.get("test_acc", [])
        shown = " ".join(f"{a:.3f}" for a in acc)
        print(
            f"  expert {e.expert_id}: {e.epochs_completed} epochs ({e.precision}), "
            f"test_acc per epoch: {shown}"
        )
    if tracking.enabled:
        print(
            f"MLflow: {tracking.uri} (experiment {tracking.experiment}, "
            f"parent run {summary.parent_run_id})"
        )
    return 0


def _dataset_name(data: str) -> str:
    from s2d_ray.data.stream import ClipShards

    return ClipShards(data).manifest["dataset"]


if __name__ == "__main__":
    sys.exit(main())
