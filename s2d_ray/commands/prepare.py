"""Convert a video dataset into Parquet clip shards, the input of every other command.

    s2d prepare --dataset embedded --out work/embedded
    s2d prepare --dataset video-folder --root ~/videos --out work/mine --size 64
    s2d prepare --dataset miniucf --root /data/ucf101 --out s3://bucket/shards/miniucf

A video-folder dataset is a folder per class holding its videos. Re-running the same command
resumes: complete shards are kept. Bad videos are listed in <out>/skipped.csv.
"""

from __future__ import annotations

import argparse

from s2d_ray.data import DATASETS
from s2d_ray.data.validation import VAL_FRACTION, VAL_MIN_PER_CLASS

SUMMARY = "convert videos into clip shards (start here)"
# a test share this far above --test-fraction is worth a word (small classes round up)
TEST_SHARE_SLACK = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset kind")
    p.add_argument(
        "--root",
        help="folder holding the dataset's videos or frame folders (every dataset but "
        "embedded needs one; no default)",
    )
    p.add_argument("--out", required=True, help="output shard folder (path or s3://... URI)")
    p.add_argument(
        "--split-file",
        help="split CSV/list file or the folder holding them (default: the dataset's own "
        "place under --root)",
    )
    p.add_argument("--frames", type=int, help="frames per clip (default: the dataset's)")
    p.add_argument("--size", type=int, help="frame size S of the SxS crop (default: the dataset's)")
    p.add_argument(
        "--sampling",
        choices=["stride", "centred", "segments"],
        help="where a clip's frames come from (default: the dataset's)",
    )
    p.add_argument("--stride", type=int, help="frame step of the stride policy (default: 4)")
    p.add_argument(
        "--short",
        choices=["pad", "loop", "reject"],
        help="what to do with a video shorter than a clip (default: the dataset's)",
    )
    p.add_argument(
        "--clips-per-video",
        type=int,
        help="train clips per video at stratified starts; expert epochs pick one per video "
        "per epoch (temporal jitter). Default: the dataset's (4)",
    )
    p.add_argument("--test-clips", type=int, default=3, help="clips per test (and val) video")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each class's videos kept for test, for datasets without a split file "
        "(video-folder); a class keeps at least one",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help="share of each class's training videos carved into the validation split, which "
        "every choice (periodic evaluation, the search, the best set) reads instead of test; "
        "whole groups where the dataset has them (UCF101's gNN)",
    )
    p.add_argument(
        "--val-min-per-class",
        type=int,
        default=VAL_MIN_PER_CLASS,
        help="validation videos per class at least",
    )
    p.add_argument("--videos-per-shard", type=int, default=64, help="videos per Parquet file")
    p.add_argument(
        "--row-group-mib",
        type=float,
        default=4.0,
        help="uncompressed clip MiB per Parquet row group, the unit readers fetch",
    )
    p.add_argument(
        "--max-videos-per-class",
        type=int,
        help="keep a subset: at most this many videos per class and split (default: all)",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first bad video")
    p.add_argument("--seed", type=int, default=0, help="split and subset draws")
    p.add_argument("--local", action="store_true", help="run in this process, without Ray")
    p.add_argument("--smoke-test", action="store_true", help="a tiny run: 4 videos per class")


def run(args: argparse.Namespace) -> int:
    from s2d_ray.data import PrepareConfig
    from s2d_ray.data.prepare import prepare, run_local, run_ray

    options = {k: v for k, v in vars(args).items() if k in PrepareConfig.model_fields}
    if args.smoke_test:
        options["max_videos_per_class"] = 4
    config = PrepareConfig(**options)
    summary = prepare(config, runner=run_local if args.local else run_ray)
    print_summary(summary, config)
    return 0


def print_summary(summary, config) -> None:
    m = summary.manifest
    print(
        f"dataset {m['dataset']}: {len(m['classes'])} classes, clips {m['clip_shape']} "
        f"-> {summary.out}"
    )
    videos = sum(c["videos"] for c in m["counts"].values()) or 1
    for split, c in sorted(m["counts"].items()):
        share = 100 * c["videos"] / videos
        print(f"  {split:5s}: {c['videos']} videos ({share:.0f}%), {c['clips']} clips")
    test_share = m["counts"].get("test", {}).get("videos", 0) / videos
    if config.dataset == "video-folder" and test_share > config.test_fraction + TEST_SHARE_SLACK:
        print(
            f"  note: test holds {100 * test_share:.0f}% of the videos, more than "
            f"--test-fraction {config.test_fraction}: every class keeps at least one test "
            "video, a large share where classes have few. Add videos per class for a "
            "steadier score."
        )
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


def _reasons(problems) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for p in problems:
        key = p.reason.split(" (")[0][:80]
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:5]
