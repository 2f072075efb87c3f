"""Seconds per distillation iteration and peak memory, at the settings the reference was measured
at: 10 classes, ipc 1, spc 2, dpc 2, 64 real clips per class, at 8x64² and 16x112².

Each (method, size) runs in a fresh process, so its peak RSS is its own. The real clips are
the embedded dataset rendered at that size (16 videos per class, 4 stored clips each = 64).
The reference's S2D-DM iteration took 28.2 s on a machine of this kind (2048² fp32 matmul
about 110-140 GFLOP/s, see the calibration line); target <= 0.9x.

    python bench/distill_step.py [--iterations 3] [--sizes 8x64 16x112] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from calibration import print_calibration

REFERENCE_S2D_DM_SECONDS = 28.2  # per iteration, 16x112², quoted in the issue
METHODS = {
    "dm": {"batch_real": 64},
    "s2d-dm": {"batch_real": 64, "dpc": 2, "lr_dynamic": 100.0, "lr_hal": 1e-3},
}


def worker(data: str, method: str, iterations: int) -> dict:
    """Time ``iterations`` steps after one warm-up step; this process's peak RSS."""
    from s2d_ray.methods import DistillContext, RealData, get_method
    from s2d_ray.synthetic import SyntheticImages

    real = RealData.open(data)
    size = real.clip_shape[2]
    static = SyntheticImages(torch.randn(real.num_classes * 2, 3, size, size), real.num_classes)
    cls = get_method(method)
    instance = cls(cls.Config(**METHODS[method]), DistillContext(real, 1, 0, static))
    instance.step(0)
    started = time.perf_counter()
    for i in range(1, iterations + 1):
        instance.step(i)
    seconds = (time.perf_counter() - started) / iterations
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak_mib}


def prepare(root: Path, frames: int, size: int, videos: int) -> str:
    from s2d_ray.data import PrepareConfig
    from s2d_ray.data import prepare as build

    out = root / f"embedded-{frames}x{size}"
    build(
        PrepareConfig(
            dataset="embedded",
            out=str(out),
            frames=frames,
            size=size,
            max_videos_per_class=videos,
            clips_per_video=4,
        ),
        progress=False,
    )
    return str(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--sizes", nargs="+", default=["8x64", "16x112"])
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument(
        "--worker", nargs=3, metavar=("DATA", "METHOD", "ITERATIONS"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.worker:
        data, method, iterations = args.worker
        print(json.dumps(worker(data, method, int(iterations))))
        return
    print_calibration()
    videos = 16
    if args.smoke_test:
        args.iterations, args.sizes, videos = 1, ["8x64"], 2
    with tempfile.TemporaryDirectory(prefix="s2d-bench-step-") as tmp:
        print(
            f"\nDM and S2D-DM iterations: 10 classes, ipc 1, spc 2, dpc 2, "
            f"{4 * videos} real clips per class, mean of {args.iterations} after a warm-up"
        )
        print(
            f"{'method':<8} {'clip':<8} {'s/iteration':>12} {'peak RSS MiB':>13} "
            f"{'vs reference':>13}"
        )
        for spec in args.sizes:
            frames, size = (int(v) for v in spec.split("x"))
            data = prepare(Path(tmp), frames, size, videos)
            for method in METHODS:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", data, method, str(args.iterations)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                versus = "-"
                if method == "s2d-dm" and spec == "16x112":
                    ratio = r["seconds"] / REFERENCE_S2D_DM_SECONDS
                    versus = f"{ratio:.2f}x {'PASS' if ratio <= 0.9 else 'MISS'}"
                print(
                    f"{method:<8} {spec:<8} {r['seconds']:>12.2f} {r['peak_mib']:>13.0f} "
                    f"{versus:>13}",
                    flush=True,
                )
        print(
            f"reference S2D-DM at 16x112² (quoted, a machine of this kind): "
            f"{REFERENCE_S2D_DM_SECONDS} s per iteration; target <= 0.9x"
        )


if __name__ == "__main__":
    main()
