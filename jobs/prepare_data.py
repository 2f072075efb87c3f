"""Convert a video dataset into Parquet clip shards.

    python jobs/prepare_data.py --dataset embedded --out work/embedded
    python jobs/prepare_data.py --dataset video-folder --root ~/videos --out work/mine --size 64
    python jobs/prepare_data.py --dataset miniucf --root /data/ucf101 --out /data/shards/miniucf

Re-running resumes: complete shards are kept. Bad videos are listed in <out>/skipped.csv.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from s2d_ray.data import DATASETS, BadVideoError, PrepareConfig, SplitFileError
from s2d_ray.data.prepare import prepare, run_local, run_ray
from s2d_ray.data.validation import VAL_FRACTION, VAL_MIN_PER_CLASS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--root", help="folder holding the dataset's videos or frame folders")
    p.add_argument("--out", required=True, help="output shard directory (path or URI)")
    p.add_argument("--split-file", help="split CSV/list file or the folder holding them")
    p.add_argument("--frames", type=int, help="frames per clip (default: the dataset's)")
    p.add_argument("--size", type=int, help="frame size S of the S×S crop (default: the dataset's)")
    p.add_argument("--sampling", choices=["stride", "centred", "segments"])
    p.add_argument("--stride", type=int, help="frame step of the stride policy (default 4)")
    p.add_argument("--short", choices=["pad", "loop", "reject"], help="short-video policy")
    p.add_argument(
        "--clips-per-video",
        type=int,
        help="train clips per video, drawn at stratified starts; expert epochs pick one per "
        "video per epoch (temporal jitter). Default: the dataset's (4)",
    )
    p.add_argument("--test-clips", type=int, default=3, help="test clips per video")
    p.add_argument("--test-fraction", type=float, default=0.2, help="video-folder test share")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help="share of each class's training videos carved into the validation split, which "
        "every choice (periodic evaluation, the search, the best set) reads instead of test; "
        "whole groups where the dataset has them (UCF101's gNN). Default %(default)s",
    )
    p.add_argument(
        "--val-min-per-class",
        type=int,
        default=VAL_MIN_PER_CLASS,
        help="validation videos per class at least (default %(default)s)",
    )
    p.add_argument("--videos-per-shard", type=int, default=64)
    p.add_argument(
        "--row-group-mib",
        type=float,
        default=4.0,
        help="uncompressed clip MiB per Parquet row group, the unit readers fetch "
        "(default %(default)s)",
    )
    p.add_argument("--max-videos-per-class", type=int, help="keep a subset (per class and split)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local", action="store_true", help="run in this process, without Ray")
    p.add_argument("--smoke-test", action="store_true", help="tiny run: 4 videos per class")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("local", "smoke_test")}
    if args.smoke_test:
        options["max_videos_per_class"] = 4
    try:
        config = PrepareConfig(**options)
        runner = run_local if args.local else run_ray
        summary = prepare(config, runner=runner)
    except (ValidationError, ValueError, FileNotFoundError, FileExistsError) as exc:
        kind = "bad video" if isinstance(exc, BadVideoError) else "error"
        kind = "split file" if isinstance(exc, SplitFileError) else kind
        print(f"prepare_data: {kind}: {exc}", file=sys.stderr)
        return 2
    m = summary.manifest
    print(
        f"dataset {m['dataset']}: {len(m['classes'])} classes, clips {m['clip_shape']} "
        f"-> {summary.out}"
    )
    for split, c in sorted(m["counts"].items()):
        print(f"  {split:5s}: {c['videos']} videos, {c['clips']} clips")
    total = sum(s["bytes"] for s in m["shards"])
    print(
        f"  shards: {len(m['shards'])} ({total / 2**20:.1f} MiB), {summary.built} built, "
        f"{summary.reused} kept from an earlier run"
    )
    print(f"  skipped: {len(summary.problems)} (see {summary.out}/skipped.csv)")
    for reason, count in _reasons(summary.problems):
        print(f"    {count} x {reason}")
    print(f"  time: {summary.seconds:.1f} s, {summary.seconds_per_video * 1000:.1f} ms per video")
    print(f"  fingerprint: {m['fingerprint']}")
    return 0


def _reasons(problems) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for p in problems:
        key = p.reason.split(" (")[0][:80]
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:5]


if __name__ == "__main__":
    sys.exit(main())
