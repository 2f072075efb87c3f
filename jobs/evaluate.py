"""Evaluate distilled sets with the paper's protocol, beside the same-size random real baseline.

    python jobs/evaluate.py work/s2d --data work/embedded
    python jobs/evaluate.py work/s2d work/dm --data work/embedded --arch convnet_gru --json r.json
    python jobs/evaluate.py --data work/embedded --full-data          # the upper bound row

Prints one row per set (top-1 mean ± std of the final epoch over R fresh networks, top-5,
static/dynamic class groups, stored MiB) and writes the same as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import sys

from s2d_ray.cli import MICRO_BATCH_HELP, micro_batch_arg
from s2d_ray.data.registry import get_dataset
from s2d_ray.distill import report_splits
from s2d_ray.evaluation import (
    EvalConfig,
    ResultRow,
    class_groups,
    evaluate_synthetic,
    format_table,
    full_data_baseline,
    random_baseline,
    with_own_settings,
)
from s2d_ray.methods import RealData
from s2d_ray.models import resolve_device
from s2d_ray.synthetic import NotADistilledSetError, load_set

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="*", help="distilled set folders (load_distilled reads them)")
    p.add_argument("--data", required=True, help="the clip shards the sets were distilled from")
    p.add_argument("--arch", default="convnet3d", help="convnet3d, convnet_gru, convnet_lstm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--epochs",
        type=int,
        help="default 500, the set's own (FRePo: 1000), or 100 on a cross-architecture network",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="default 0.01, the set's own (MTT: syn_lr; FRePo: 1e-4), or 0.01 on a "
        "cross-architecture network whatever the set's own",
    )
    p.add_argument("--no-standardize", action="store_true", help="skip per-batch standard.")
    p.add_argument("--micro-batch", type=micro_batch_arg, default="auto", help=MICRO_BATCH_HELP)
    p.add_argument("--full-data", action="store_true", help="add training on all real clips")
    p.add_argument("--no-baseline", action="store_true", help="skip the random real baseline")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--smoke-test", action="store_true", help="2 epochs, 1 repeat")
    args = p.parse_args(argv)
    if not args.paths and not args.full_data:
        p.error("give at least one distilled set, or --full-data")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = {"epochs": 2 if args.smoke_test else args.epochs, "lr": args.lr}
    try:
        config = EvalConfig(  # only what was given: the rest may be each set's own settings
            arch=args.arch,
            repeats=1 if args.smoke_test else args.repeats,
            standardize=not args.no_standardize,
            micro_batch=args.micro_batch,
            seed=args.seed,
            **{k: v for k, v in given.items() if v is not None},
        )
        device = resolve_device(args.device)
        real = RealData.open(args.data, device)
        test, also = report_splits(real)
        sets = [(path, *load_set(path)) for path in args.paths]
        for path, _, manifest in sets:
            check_same_data(path, manifest, real)
    except (ValueError, FileNotFoundError, NotADistilledSetError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    groups = class_groups(real.shards, seed=args.seed, device=device)
    rows, baselines = [], set()
    for path, synthetic, manifest in sets:
        own = with_own_settings(config, manifest.get("eval", {}))
        result = evaluate_synthetic(synthetic, test, own, device=device, also=also)
        rows.append(ResultRow(path, result, manifest["bytes"] / MIB, groups))
        baselines.add(int(manifest.get("ipc") or manifest["layout"].get("vpc", 1)))
    if not args.no_baseline:
        t, c, h, w = real.clip_shape
        for ipc in sorted(baselines):
            result = random_baseline(real, test, ipc, config, also)
            mib = 4 * real.num_classes * ipc * t * c * h * w / MIB
            rows.append(ResultRow(f"random real ipc {ipc}", result, mib, groups))
    if args.full_data:
        flip = get_dataset(real.shards.manifest["dataset"]).flip
        result = full_data_baseline(real, test, config, flip=flip, also=also)
        rows.append(ResultRow("full real data", result, None, groups))
    print(
        f"evaluation: {args.arch}, {config.epochs} epochs, {config.repeats} repeats, "
        f"final-epoch accuracy on {len(test)} test clips of {real.shards.uri}"
        + (f" (val: {len(also[0])} clips, the split choices were made on)" if also else "")
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": [r.to_dict() for r in rows], "groups": groups}, f, indent=2)
    return 0


def check_same_data(path: str, manifest: dict, real: RealData) -> None:
    made_on = manifest.get("dataset", {})
    if made_on.get("fingerprint") not in (None, real.shards.fingerprint):
        raise ValueError(
            f"{path} was distilled from dataset fingerprint {made_on.get('fingerprint')} "
            f"({made_on.get('source')}), not from {real.shards.uri} "
            f"({real.shards.fingerprint}); pass the shards it was made from with --data"
        )


if __name__ == "__main__":
    sys.exit(main())
