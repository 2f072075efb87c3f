"""S2D stage 1: distil still images per class (the static memory) from single frames.

    s2d static --data work/embedded --out work/static --spc 1

The result is a distilled set of images; pass it to `s2d distill --method s2d-dm --static`.
With --eval it is judged at the end: networks trained on the stills repeated over time (the
paper's spc:dpc = 1:0 row) beside random real clips; without, the videos made from it judge it.
Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse

from s2d_ray.commands.runs import add_common, common_config, distil, overrides
from s2d_ray.methods import STATIC_METHODS

SUMMARY = "distil the static memory: still images per class (S2D stage 1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spc", type=int, required=True, help="still images per class")
    p.add_argument(
        "--method", choices=sorted(STATIC_METHODS), default="dc", help="image distillation"
    )
    p.add_argument("--lr-img", type=float, help="learning rate of the images (default: 0.1)")
    p.add_argument(
        "--batch-real",
        type=int,
        help="real frames per class per iteration (default: the paper's, capped at the "
        "frames a class has)",
    )
    add_common(p, judge=False)


def run(args: argparse.Namespace) -> int:
    from s2d_ray.distill import DistillConfig
    from s2d_ray.methods import smoke_settings

    method_config = overrides(args, ["lr_img", "batch_real"])
    if args.smoke_test:
        method_config = {**smoke_settings(STATIC_METHODS[args.method].Config), **method_config}
    config = DistillConfig(
        method=args.method,
        stage="static",
        ipc=args.spc,
        method_config=method_config,
        **common_config(args),
    )
    return distil(args, config)
