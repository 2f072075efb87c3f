"""Distil a video dataset into a tiny synthetic set with any registered method.

    s2d distill --method dm --data work/embedded --out work/dm --ipc 1
    s2d static --data work/embedded --out work/static --spc 1
    s2d distill --method s2d-dm --data work/embedded --out work/s2d --ipc 1 \\
        --static work/static --dpc 1
    s2d distill --method herding --data work/embedded --out work/herding --ipc 1
    s2d distill --method s2d-mtt --data work/embedded --out work/s2d-mtt --ipc 1 \\
        --static work/static --experts work/experts --syn-steps 10
    s2d distill --method frepo --data work/embedded --out work/frepo --ipc 1
    s2d distill --method dm --data work/embedded --out work/dm-t2 --ipc 1 \\
        --syn-frames 2 --segments 2 --network convnet_gru   # 2 stored frames per video,
                                                            # 2 segments matched pairwise

A method setting not given is the paper's for the dataset and ipc. Re-running the same
command resumes from the last checkpoint. The folder --out is the distilled set:
s2d_ray.load_distilled(out) reads it, `s2d evaluate` judges it.
"""

from __future__ import annotations

import argparse
import tempfile

from s2d_ray.commands.common import UsageError
from s2d_ray.commands.runs import add_common, common_config, distil, overrides
from s2d_ray.methods import METHODS, STATIC_METHODS
from s2d_ray.synthetic.integrators import INTEGRATORS

SUMMARY = "distil videos with a method (DM, MTT, FRePo, their S2D variants, coresets)"
PAPER = " (default: the paper's for the dataset and ipc)"

METHOD_FLAGS = [
    "lr_img",
    "lr_dynamic",
    "lr_hal",
    "batch_real",
    "dpc",
    "integrator",
    "integrator_init",
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="what distils")
    p.add_argument("--ipc", type=int, required=True, help="synthetic videos per class")
    p.add_argument(
        "--static", help="static memory folder from `s2d static` (S2D methods need one; no default)"
    )
    p.add_argument(
        "--spc",
        type=int,
        help="check that --static holds this many images per class (default: no check)",
    )
    p.add_argument("--dpc", type=int, help="S2D: dynamic maps per class; 0 = static only" + PAPER)
    p.add_argument(
        "--integrator",
        choices=sorted(INTEGRATORS),
        help="S2D integrator H (default: the paper's for the dataset and ipc: conv3d_tconv "
        "for S2D-DM on MiniUCF at ipc 1, conv3d elsewhere)",
    )
    p.add_argument(
        "--integrator-init",
        choices=["default", "identity"],
        help="S2D: how H starts: default (PyTorch's initialisation, the reference's and the "
        "default) or identity (it passes the still image through; docs/distillation.md)",
    )
    p.add_argument("--lr-img", type=float, help="learning rate of full synthetic videos" + PAPER)
    p.add_argument(
        "--lr-dynamic", type=float, help="S2D: learning rate of the dynamic memory" + PAPER
    )
    p.add_argument("--lr-hal", type=float, help="S2D: learning rate of the integrator H" + PAPER)
    p.add_argument(
        "--batch-real",
        type=int,
        help="real clips per class per iteration, capped at the clips a class has" + PAPER,
    )
    p.add_argument(
        "--features",
        choices=["random", "expert"],
        help="coresets' feature network (default: random)",
    )
    p.add_argument(
        "--experts",
        help="trajectory store from `s2d experts` (MTT methods need one; coresets' "
        "expert features; no default)",
    )
    p.add_argument("--syn-steps", type=int, help="MTT: student steps per iteration" + PAPER)
    p.add_argument("--batch-syn", type=int, help="MTT: synthetic videos per student step" + PAPER)
    p.add_argument(
        "--expert-epochs", type=int, help="MTT: expert epochs between start and target" + PAPER
    )
    p.add_argument("--max-start-epoch", type=int, help="MTT: start epochs drawn below this" + PAPER)
    p.add_argument(
        "--unroll",
        choices=["full", "constant"],
        help="MTT: one graph through all steps (default), or constant memory (~1.3x slower)",
    )
    p.add_argument("--lr-lr", type=float, help="MTT: learning rate of syn_lr (default: 1e-5)")
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
    p.add_argument("--pool-size", type=int, help="FRePo: networks trained online (default: 10)")
    p.add_argument(
        "--online-steps", type=int, help="FRePo: a network's life in steps (default: 100)"
    )
    p.add_argument(
        "--learn-labels",
        action=argparse.BooleanOptionalAction,
        help="FRePo: learn the label vectors (default: yes, as every FRePo script of the paper)",
    )
    p.add_argument("--lr-label", type=float, help="FRePo: Adam lr of learnt labels (default: 1e-3)")
    p.add_argument(
        "--syn-frames",
        type=int,
        help="temporal compression: frames per synthetic video (default: the clips' frames)",
    )
    p.add_argument(
        "--segments",
        type=segments,
        help="temporal compression: segment count, or the real segments' sizes (e.g. 2,6); "
        "DM and S2D-DM match each real segment with its synthetic one (default: 1)",
    )
    p.add_argument(
        "--interpolation",
        choices=["hold", "linear"],
        help="temporal compression: how a synthetic segment is expanded to its real length "
        "(default: hold)",
    )
    p.add_argument(
        "--network",
        help="DM, S2D-DM, FRePo: the matching network (default: convnet3d; segments shorter "
        "than ConvNet3D takes need convnet_gru)",
    )
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from s2d_ray.distill import DistillConfig
    from s2d_ray.methods import smoke_settings

    if METHODS[args.method].needs_static:
        if args.smoke_test and not args.static:
            args.static = smoke_static(args)
        check_spc(args)
    method_config = overrides(args, METHOD_FLAGS)
    if args.smoke_test:
        method_config = {**smoke_settings(METHODS[args.method].Config), **method_config}
    config = DistillConfig(
        method=args.method,
        ipc=args.ipc,
        static=args.static,
        method_config=method_config,
        **common_config(args),
    )
    return distil(args, config)


def check_spc(args: argparse.Namespace) -> None:
    from s2d_ray.synthetic import read_manifest

    if args.spc is None or not args.static:
        return
    have = read_manifest(args.static)["layout"]["per_class"]
    if have != args.spc:
        raise UsageError(
            f"--static {args.static} has {have} images per class, not --spc {args.spc}: "
            "pass the static memory made with that spc, or drop --spc"
        )


def smoke_static(args: argparse.Namespace) -> str:
    """A two-iteration static memory, so that --smoke-test runs S2D methods on its own."""
    from s2d_ray.distill import DistillConfig, run_distillation
    from s2d_ray.methods import smoke_settings
    from s2d_ray.tracking import TrackingConfig

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
