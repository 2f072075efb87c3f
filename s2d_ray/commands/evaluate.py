"""Judge distilled sets with the paper's protocol, beside random real clips of the same size.

    s2d evaluate work/s2d --data work/embedded
    s2d evaluate work/s2d work/dm --data work/embedded --network convnet_gru --json r.json
    s2d evaluate --data work/embedded --full-data          # the upper-bound row

Prints one row per set (top-1 mean ± std of the final epoch over fresh networks, top-5,
static/dynamic class groups, stored MiB), scored on test with val beside it. A static memory
is judged as its stills repeated over time. A set that cannot be judged is named at the end
and the others are still reported (exit code 2). Logs one MLflow run, linked to each set's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from s2d_ray.commands.common import (
    UsageError,
    add_data,
    add_device_seed,
    add_earlier_spellings,
    add_eval,
    add_tracking,
    print_tracking,
    tracking_for,
)

# the flags of jobs/evaluate.py before the one `s2d` command (DESIGN.md: they keep working)
EARLIER_SPELLINGS = {
    "--arch": "--network",
    "--epochs": "--eval-epochs",
    "--lr": "--eval-lr",
    "--repeats": "--eval-repeats",
    "--micro-batch": "--eval-micro-batch",
}
SUMMARY = "judge distilled sets beside random real clips (and the full data)"
MIB = 2**20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="distilled set folders (`s2d distill --out`)")
    add_data(p)
    p.add_argument(
        "--network",
        default="convnet3d",
        help="the network trained on each set: convnet3d, convnet_gru, convnet_lstm",
    )
    add_eval(p)
    add_earlier_spellings(p, EARLIER_SPELLINGS)
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="skip the per-batch standardisation (FRePo sets never have it, as FRePo's own "
        "evaluation)",
    )
    p.add_argument("--full-data", action="store_true", help="add training on all real clips")
    p.add_argument("--no-baseline", action="store_true", help="skip the random real baseline")
    add_device_seed(p)
    p.add_argument("--json", help="also write the results to this JSON file (default: none)")
    add_tracking(p)
    p.add_argument("--smoke-test", action="store_true", help="2 epochs, 1 network")


def run(args: argparse.Namespace) -> int:
    from s2d_ray.distill import report_splits
    from s2d_ray.methods import RealData
    from s2d_ray.models import resolve_device

    if not args.paths and not args.full_data:
        raise UsageError("give at least one distilled set folder, or --full-data")
    config = protocol_from_args(args)
    device = resolve_device(args.device)
    real = RealData.open(args.data, device)
    test, also = report_splits(real)
    rows, failed = judge_all(args, config, real, test, also)
    print(
        f"evaluation: {args.network}, {config.epochs} epochs, {config.repeats} networks, "
        f"final-epoch accuracy on {len(test)} test clips of {real.shards.uri}"
        + (f" (val: {len(also[0])} clips, the split choices were made on)" if also else "")
    )
    if rows:
        from s2d_ray.evaluation import format_table

        print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": [r.to_dict() for r in rows], "failed": failed}, f, indent=2)
    for path, reason in failed.items():
        print(f"s2d evaluate: error: {path}: {reason}", file=sys.stderr)
    return 2 if failed else 0


def protocol_from_args(args: argparse.Namespace):
    """The protocol the flags ask for, holding only what was given: the rest may be each
    set's own settings (MTT's learnt lr, FRePo's whole protocol, unstandardised)."""
    from s2d_ray.evaluation import EvalConfig

    given = {
        "epochs": 2 if args.smoke_test else args.eval_epochs,
        "lr": args.eval_lr,
        "standardize": False if args.no_standardize else None,
    }
    return EvalConfig(
        arch=args.network,
        repeats=1 if args.smoke_test else args.eval_repeats,
        micro_batch=args.eval_micro_batch,
        max_grad_norm=args.eval_max_grad_norm,
        seed=args.seed,
        **{k: v for k, v in given.items() if v is not None},
    )


def judge_all(args, config, real, test, also):
    """Every set, then the baselines; a set that fails is recorded, not fatal."""
    from s2d_ray.data.registry import get_dataset
    from s2d_ray.evaluation import (
        ResultRow,
        class_groups,
        evaluate_synthetic,
        full_data_baseline,
        random_baseline,
        with_own_settings,
    )
    from s2d_ray.progress import scope
    from s2d_ray.synthetic import NotADistilledSetError, load_set
    from s2d_ray.tracking import Tracker

    tracking = tracking_for(args, real.shards.manifest["dataset"])
    groups = class_groups(real.shards, seed=args.seed, device=real.device)
    rows, failed, sizes, set_runs = [], {}, set(), []
    with Tracker(tracking).start_run("evaluate", tags={"s2d.role": "evaluate"}) as run:
        run.log_params(
            {f"eval.{k}": v for k, v in config.model_dump().items()}
            | {"data": args.data, "sets": ",".join(args.paths)}
        )
        for path in args.paths:
            try:
                synthetic, manifest = load_set(path)
                check_same_data(path, manifest, real)
                own = with_own_settings(config, manifest.get("eval", {}))
                with scope(f"judging {path}"):
                    result = evaluate_synthetic(synthetic, test, own, device=real.device, also=also)
            except (ValueError, FileNotFoundError, NotADistilledSetError) as exc:
                failed[path] = str(exc)
                continue
            rows.append(ResultRow(path, result, manifest["bytes"] / MIB, groups))
            sizes.add(videos_per_class(manifest))
            if manifest.get("mlflow_run_id"):
                set_runs.append(manifest["mlflow_run_id"])
        if not args.no_baseline:
            t, c, h, w = real.clip_shape
            for ipc in sorted(sizes):
                with scope(f"judging random real ipc {ipc}"):
                    result = random_baseline(real, test, ipc, config, also)
                mib = 4 * real.num_classes * ipc * t * c * h * w / MIB
                rows.append(ResultRow(f"random real ipc {ipc}", result, mib, groups))
        if args.full_data:
            flip = get_dataset(real.shards.manifest["dataset"]).flip
            with scope("judging the full real data"):
                result = full_data_baseline(real, test, config, flip=flip, also=also)
            rows.append(ResultRow("full real data", result, None, groups))
        log_results(run, rows, set_runs)
    print_tracking(tracking, run.run_id, "evaluation run")
    return rows, failed


def log_results(run, rows, set_runs: list[str]) -> None:
    from s2d_ray.evaluation import table_columns

    if set_runs:  # each set's own run is one click away
        run.set_tags({"s2d.set_runs": ",".join(set_runs)})
    if rows:
        run.log_table(table_columns(rows), "results/table.json")
    for row in rows:  # a set by its folder's name: "s2d/test_top1_mean", "random real ipc 1/..."
        name = re.sub(r"[^\w\-. ]", "_", Path(row.name).name if "/" in row.name else row.name)
        run.log_metrics(
            {f"{name}/{row.result.split}_top1_mean": row.result.mean}
            | {f"{name}/{s}_top1_mean": row.result.also_mean(s) for s in row.result.also}
        )


def videos_per_class(manifest: dict) -> int:
    """The random baseline's size: the set's videos per class (a static memory's stills)."""
    layout = manifest.get("layout", {})
    return int(manifest.get("ipc") or layout.get("vpc") or layout.get("per_class") or 1)


def check_same_data(path: str, manifest: dict, real) -> None:
    made_on = manifest.get("dataset", {})
    if made_on.get("fingerprint") not in (None, real.shards.fingerprint):
        raise ValueError(
            f"distilled from dataset fingerprint {made_on.get('fingerprint')} "
            f"({made_on.get('source')}), not from {real.shards.uri} "
            f"({real.shards.fingerprint}); pass the shards it was made from with --data"
        )
