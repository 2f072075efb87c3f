"""S2D stage 1: distil spc still images per class (the static memory) from single frames.

    python jobs/distill_static.py --data work/embedded --out work/static --spc 1 --method dc

The result is a distilled set of images; pass it to `jobs/distill.py --method s2d-dm --static`.
Its final evaluation trains on the stills repeated over time (the paper's spc:dpc = 1:0 row).
Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from s2d_ray.cli import add_common, common_config, overrides, run_job
from s2d_ray.distill import DistillConfig
from s2d_ray.methods import STATIC_METHODS, smoke_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spc", type=int, required=True, help="still images per class")
    p.add_argument("--method", choices=sorted(STATIC_METHODS), default="dc")
    p.add_argument("--lr-img", type=float, help="learning rate of the images (default 0.1)")
    p.add_argument("--batch-real", type=int, help="real frames per class per iteration")
    add_common(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    method_config = overrides(args, ["lr_img", "batch_real"])
    if args.smoke_test:
        method_config = {**smoke_settings(STATIC_METHODS[args.method].Config), **method_config}
    return run_job(
        "distill_static",
        args,
        lambda: DistillConfig(
            method=args.method,
            stage="static",
            ipc=args.spc,
            method_config=method_config,
            **common_config(args),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
