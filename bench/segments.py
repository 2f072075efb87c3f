"""Temporal compression's K axis (issue §4): DM matched segment by segment.

1. Cost: seconds per DM iteration and the process's peak RSS with the real clips and the
   synthetic videos cut into K = 1, 2, 4 uniform segments (and a non-uniform cut), each
   matched through CNN+GRU (ConvNet3D cannot take short segments), ratios against K = 1,
   every configuration in a fresh process (bench/distill_step.py's worker).
2. Quality (``--quality``): supplementary Table 7's shape, uniform >= non-uniform. DM sets
   of 2 stored frames per video over 2 segments, cut uniformly ([4, 4]) and not ([2, 6],
   [6, 2]), distilled for ``--iterations`` and judged on test (val beside it) by
   ``--repeats`` ConvNet3D networks, beside random real clips of the same stored frames.

    python bench/segments.py [--sizes 8x64 16x112] [--iterations 3] [--quality | --quality-only]
                             [--smoke-test]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from calibration import print_calibration
from distill_step import prepare, run_worker

CUTS = {"8x64": [1, 2, 4, [2, 6]], "16x112": [1, 2, 4, [4, 12]]}


def cost(args, root: Path) -> None:
    real = 4 if args.smoke_test else 64
    print(f"\nDM, CNN+GRU matching network, {real} real clips per class, seconds per iteration")
    print("| clip | segments | s / iteration | ratio to K=1 | peak RSS MiB | ratio to K=1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        frames, pixels = (int(v) for v in size.split("x"))
        data = prepare(root, frames, pixels, videos=4 if args.smoke_test else 16)
        base = None
        for cut in CUTS[size]:
            extra = {"segments": cut, "network": "convnet_gru"}
            if args.smoke_test:
                extra["batch_real"] = 4
            r = run_worker(data, "dm", args.iterations, extra)
            base = base or r
            print(
                f"| {size} | {cut} | {r['seconds']:.2f} | {r['seconds'] / base['seconds']:.2f} "
                f"| {r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f} |",
                flush=True,
            )


def quality(args, root: Path) -> None:
    from s2d_ray.data import PrepareConfig
    from s2d_ray.data import prepare as build
    from s2d_ray.distill import DistillConfig, report_splits, run_distillation
    from s2d_ray.evaluation import EvalConfig, ResultRow, evaluate_synthetic, format_table
    from s2d_ray.methods import RealData
    from s2d_ray.synthetic import SyntheticVideos, load_set
    from s2d_ray.synthetic.temporal import TemporalConfig, initial_frames, temporal_layout
    from s2d_ray.tracking import TrackingConfig

    data = str(root / "quality")
    videos = 4 if args.smoke_test else None
    build(PrepareConfig(dataset="embedded", out=data, max_videos_per_class=videos), progress=False)
    real = RealData.open(data)
    test, also = report_splits(real)
    config = EvalConfig(epochs=args.epochs, repeats=args.repeats, seed=args.seed)
    rows = []
    for cut in ([4, 4], [2, 6], [6, 2]):
        compressed = {"syn_frames": 2, "segments": cut}
        random = TemporalConfig(**compressed)  # random real clips at the same stored frames
        clips, _ = real.random_videos(1, args.seed)
        layout = temporal_layout(real.clip_shape[0], random)
        keep = initial_frames(layout["frames"], layout["syn_frames"], layout["segments"])
        random_set = SyntheticVideos(clips[:, keep], real.num_classes, layout)
        out = root / f"dm-{cut[0]}-{cut[1]}"
        started = time.perf_counter()
        run_distillation(
            DistillConfig(
                method="dm",
                data=data,
                out=str(out),
                ipc=1,
                iterations=args.iterations,
                final_eval=False,
                seed=args.seed,
                method_config={
                    **compressed,
                    "network": "convnet_gru",
                    "batch_real": args.batch_real,
                },
            ),
            TrackingConfig.disabled(),
        )
        print(f"  distilled segments {cut} in {time.perf_counter() - started:.0f} s", flush=True)
        synthetic, manifest = load_set(out)
        for name, s, mib in (
            (f"dm, segments {cut}", synthetic, manifest["bytes"] / 2**20),
            (f"random real, segments {cut}", random_set, random_set.storage_bytes() / 2**20),
        ):
            result = evaluate_synthetic(s, test, config, device=real.device, also=also)
            rows.append(ResultRow(name, result, mib))
    print(
        f"\nembedded, ipc 1, 2 stored frames per video over 2 segments; {args.iterations} DM "
        f"iterations; {args.repeats} ConvNet3D networks x {args.epochs} epochs; test read "
        "once, val beside it"
    )
    print(format_table(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["8x64", "16x112"], choices=sorted(CUTS))
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--quality", action="store_true", help="also Table 7's shape (slow)")
    p.add_argument("--quality-only", action="store_true", help="Table 7's shape, no cost rows")
    p.add_argument("--quality-iterations", type=int, default=100)
    p.add_argument("--batch-real", type=int, default=16)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    if args.smoke_test:
        args.sizes, args.iterations, args.epochs, args.repeats = ["8x64"], 1, 1, 1
    print_calibration()
    with tempfile.TemporaryDirectory(prefix="s2d-bench-segments-") as tmp:
        if not args.quality_only:
            cost(args, Path(tmp))
        if args.quality or args.quality_only:
            args.iterations = 2 if args.smoke_test else args.quality_iterations
            quality(args, Path(tmp))


if __name__ == "__main__":
    main()
