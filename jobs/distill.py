"""Distil a video dataset into a tiny synthetic set with any registered method.

    python jobs/distill.py --method dm --data work/embedded --out work/dm --ipc 1
    python jobs/distill_static.py --data work/embedded --out work/static --spc 1
    python jobs/distill.py --method s2d-dm --data work/embedded --out work/s2d --ipc 1 \\
        --static work/static --dpc 1
    python jobs/distill.py --method herding --data work/embedded --out work/herding --ipc 1
    python jobs/distill.py --method s2d-mtt --data work/embedded --out work/s2d-mtt --ipc 1 \\
        --static work/static --experts work/experts --syn-steps 10
    python jobs/distill.py --method frepo --data work/embedded --out work/frepo --ipc 1
    python jobs/distill.py --method dm --data work/embedded --out work/dm-t2 --ipc 1 \\
        --syn-frames 2 --segments 2 --network convnet_gru   # 2 stored frames per video, 2
                                                            # segments matched pairwise

Defaults are the paper's hyperparameters for the dataset and ipc (SPEC §6). Re-running the
same command resumes from the last checkpoint. The folder --out is the distilled set:
s2d_ray.load_distilled(out) reads it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from s2d_ray.cli import add_common, common_config, overrides, run_job
from s2d_ray.distill import DistillConfig, run_distillation
from s2d_ray.methods import METHODS, STATIC_METHODS, smoke_settings
from s2d_ray.synthetic import read_manifest
from s2d_ray.tracking import TrackingConfig

METHOD_FLAGS = [
    "lr_img",
    "lr_dynamic",
    "lr_hal",
    "batch_real",
    "dpc",
    "integrator",
    "features",
    "experts",
    "syn_steps",
    "batch_syn",
    "expert_epochs",
    "max_start_epoch",
    "unroll",
    "lr_lr",
    "learn_syn_lr",
    "student_standardize",
    "syn_frames",
    "segments",
    "interpolation",
    "network",
    "pool_size",
    "online_steps",
    "learn_labels",
    "lr_label",
]


def segments(text: str) -> int | list[int]:
    """``--segments 2`` (uniform) or ``--segments 2,6`` (the real segments' sizes)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N1,N2,..., got {text!r}") from None
    return parts[0] if len(parts) == 1 and "," not in text else parts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--ipc", type=int, required=True, help="synthetic videos per class")
    p.add_argument("--static", help="static memory folder (S2D methods)")
    p.add_argument("--spc", type=int, help="check: static images per class of --static")
    p.add_argument("--dpc", type=int, help="dynamic maps per class (S2D; 0 = static only)")
    p.add_argument("--integrator", help="S2D integrator H: conv3d (default) or conv3d_tconv")
    p.add_argument("--lr-img", type=float, help="learning rate of full synthetic videos")
    p.add_argument("--lr-dynamic", type=float, help="S2D: learning rate of the dynamic memory")
    p.add_argument("--lr-hal", type=float, help="S2D: learning rate of the integrator H")
    p.add_argument("--batch-real", type=int, help="real clips per class per iteration")
    p.add_argument("--features", choices=["random", "expert"], help="coresets' feature network")
    p.add_argument("--experts", help="trajectory store (MTT methods; coreset expert features)")
    p.add_argument("--syn-steps", type=int, help="MTT: student steps per iteration")
    p.add_argument("--batch-syn", type=int, help="MTT: synthetic videos per student step")
    p.add_argument("--expert-epochs", type=int, help="MTT: epochs between start and target")
    p.add_argument("--max-start-epoch", type=int, help="MTT: start epochs drawn below this")
    p.add_argument(
        "--unroll",
        choices=["full", "constant"],
        help="MTT: one graph through all steps (default), or constant memory (~1.3x slower)",
    )
    p.add_argument("--lr-lr", type=float, help="MTT: learning rate of syn_lr (1e-5)")
    p.add_argument(
        "--learn-syn-lr",
        action=argparse.BooleanOptionalAction,
        help="MTT: learn the student's step size, or freeze it at lr_teacher 0.01 and evaluate "
        "the set at 0.01. Default: the paper's per dataset and ipc (frozen for MTT on MiniUCF "
        "ipc 1, S2D-MTT at ipc 5 and on Kinetics-400 and SSv2)",
    )
    p.add_argument(
        "--student-standardize",
        action=argparse.BooleanOptionalAction,
        help="MTT: standardise the student's batches per batch as the experts' were "
        "(default: no, as the reference)",
    )
    p.add_argument("--pool-size", type=int, help="FRePo: networks trained online (10)")
    p.add_argument("--online-steps", type=int, help="FRePo: a network's life in steps (100)")
    p.add_argument(
        "--learn-labels",
        action=argparse.BooleanOptionalAction,
        help="FRePo: learn the label vectors (default: yes, as every FRePo script of the paper)",
    )
    p.add_argument("--lr-label", type=float, help="FRePo: Adam lr of learnt labels (1e-3)")
    p.add_argument(
        "--syn-frames", type=int, help="temporal compression: frames per synthetic video"
    )
    p.add_argument(
        "--segments",
        type=segments,
        help="temporal compression: segment count, or the real segments' sizes (e.g. 2,6); "
        "DM and S2D-DM match each real segment with its synthetic one",
    )
    p.add_argument(
        "--interpolation",
        choices=["hold", "linear"],
        help="temporal compression: how a synthetic segment is expanded to its real length "
        "(default hold)",
    )
    p.add_argument(
        "--network",
        help="DM, S2D-DM, FRePo: the matching network (default convnet3d; segments shorter "
        "than ConvNet3D takes need convnet_gru)",
    )
    add_common(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def config() -> DistillConfig:
        if METHODS[args.method].needs_static:
            if args.smoke_test and not args.static:
                args.static = smoke_static(args)
            check_spc(args)
        method_config = overrides(args, METHOD_FLAGS)
        if args.smoke_test:
            method_config = {**smoke_settings(METHODS[args.method].Config), **method_config}
        return DistillConfig(
            method=args.method,
            ipc=args.ipc,
            static=args.static,
            method_config=method_config,
            **common_config(args),
        )

    return run_job("distill", args, config)


def check_spc(args: argparse.Namespace) -> None:
    if args.spc is None or not args.static:
        return
    have = read_manifest(args.static)["layout"]["per_class"]
    if have != args.spc:
        raise ValueError(f"--static {args.static} has {have} images per class; --spc {args.spc}")


def smoke_static(args: argparse.Namespace) -> str:
    """A two-iteration static memory, so that --smoke-test runs S2D methods on its own."""
    out = tempfile.mkdtemp(prefix="s2d-smoke-static-")
    config = DistillConfig(
        method="dm",
        stage="static",
        data=args.data,
        out=out,
        ipc=args.spc or 1,
        iterations=2,
        method_config=smoke_settings(STATIC_METHODS["dm"].Config),
        final_eval=False,
        seed=args.seed,
    )
    run_distillation(config, TrackingConfig.disabled())
    return out


if __name__ == "__main__":
    sys.exit(main())
