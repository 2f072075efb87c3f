"""Train MTT's expert trajectories with a Ray Train farm (MTT and S2D-MTT read them).

    s2d experts --data work/embedded --out work/experts --num-experts 4 --workers 2
    s2d experts --data s3://bucket/miniucf --out s3://bucket/experts --num-experts 30 \\
        --workers 8 --gpus-per-worker 1

Re-running the same command resumes: complete experts are kept, partial ones continue.
"""

from __future__ import annotations

import argparse

from s2d_ray.commands.common import (
    MICRO_BATCH_HELP,
    UsageError,
    add_data,
    add_tracking,
    dataset_name,
    micro_batch_arg,
    print_tracking,
    tracking_for,
)

SUMMARY = "train expert trajectories (for MTT and S2D-MTT)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data(p)
    p.add_argument("--out", required=True, help="trajectory store folder (path or URI)")
    p.add_argument("--num-experts", type=int, help="experts to train (required, no default)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (parallel experts)")
    p.add_argument(
        "--min-workers",
        type=int,
        help="elastic: when a node is lost, go on with as few as this many workers instead of "
        "waiting for a replacement node (default: always --workers)",
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker holds")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="0: CPU workers")
    p.add_argument(
        "--epochs",
        type=int,
        help="epochs per expert (default: max-start-epoch - 1 + expert-epochs, all that MTT "
        "reads; more extends a store)",
    )
    p.add_argument(
        "--max-start-epoch", type=int, default=10, help="MTT draws start epochs below this"
    )
    p.add_argument(
        "--expert-epochs", type=int, default=1, help="MTT's epochs between start and target"
    )
    p.add_argument("--lr-teacher", type=float, default=0.01, help="the experts' SGD lr")
    p.add_argument("--batch-size", type=int, default=256, help="clips per expert step")
    p.add_argument("--micro-batch", type=micro_batch_arg, default="auto", help=MICRO_BATCH_HELP)
    p.add_argument("--network", default="convnet3d", help="the experts' network")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flip per clip (default: the dataset's: on for ucf101, miniucf "
        "and hmdb51, as the paper; off for kinetics400, ssv2, embedded and video-folder)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        default="tf32",
        help="on CUDA: tf32 (as the reference's convolutions), fp32 (IEEE) or bf16 autocast; "
        "a CPU computes fp32 whatever is set",
    )
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="skip the reference's per-batch standardisation",
    )
    p.add_argument("--max-failures", type=int, default=3, help="worker-group restarts allowed")
    p.add_argument("--seed", type=int, default=0, help="the same seed trains the same experts")
    add_tracking(p)
    p.add_argument("--smoke-test", action="store_true", help="2 experts, 1 epoch, 1 worker")


def run(args: argparse.Namespace) -> int:
    from s2d_ray.experts.farm import FarmConfig, run_farm
    from s2d_ray.experts.training import ExpertConfig

    if args.smoke_test:
        args.num_experts, args.epochs, args.workers = 2, 1, 1
    if args.num_experts is None:
        raise UsageError("--num-experts is required (how many experts to train), or --smoke-test")
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
        min_workers=args.min_workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        max_failures=args.max_failures,
        expert=expert,
    )
    tracking = tracking_for(args, dataset_name(args.data))
    summary = run_farm(config, tracking)
    print(
        f"store {summary.store}: {len(summary.experts)} complete experts "
        f"({len(summary.trained)} trained now, {summary.seconds:.0f} s)"
    )
    for e in summary.experts:
        acc = " ".join(f"{a:.3f}" for a in e.metrics.get("test_acc", []))
        print(
            f"  expert {e.expert_id}: {e.epochs_completed} epochs ({e.precision}), "
            f"test_acc per epoch: {acc}"
        )
    print_tracking(tracking, summary.parent_run_id, "farm run")
    return 0
