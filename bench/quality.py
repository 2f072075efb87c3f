"""Distillation quality on the embedded dataset at ipc 1: does S2D keep what DM keeps, for fewer
bytes, and does the dynamic memory help the classes that differ only in motion?

Rows (each evaluated with the same protocol, R repeats, mean ± std of the final epoch; MTT
sets at their learned lr, SPEC §5), by group (``--groups``):

* ``baselines``: full real data, random real, herding, k-center;
* ``dm``: DM, and S2D-DM with spc:dpc 1:0 (static only), 1:1 and 2:2 on a static memory
  learnt by static DM, and the 1:1 set stored in fp16;
* ``mtt``: MTT, S2D-MTT 1:1 and 2:2 (``--mtt-iterations``, on ``--experts`` experts trained
  here for max_start_epoch + expert_epochs epochs);
* ``frepo``: FRePo and S2D-FRePo 1:1 (evaluated with the common protocol, not FRePo's own
  lr 1e-4 x 1000 epochs, so that the rows compare);
* ``temporal``: DM and S2D-DM 1:1 with 2 stored frames per video in 2 segments.

Columns: top-1, top-5, the static and dynamic class groups, stored MiB, and ratios to the
random row (always run: it is the same-size baseline).

CPU budget: the defaults (200 iterations at 16 real clips per class, 100 evaluation epochs,
full data 20 epochs x 1 repeat) take about half an hour per group on 2 cores; the paper's
budget (1000 iterations, 500 epochs) is --iterations 1000 --epochs 500 --full-epochs 500.

    python bench/quality.py [--groups dm mtt] [--iterations 200] [--epochs 100] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from calibration import print_calibration

from s2d_ray.data import ArrowClipDataset, PrepareConfig, prepare
from s2d_ray.distill import DistillConfig, DivergedError, as_videos, run_distillation
from s2d_ray.evaluation import (
    EvalConfig,
    ResultRow,
    class_groups,
    evaluate_real,
    evaluate_set,
    format_table,
)
from s2d_ray.methods import RealData
from s2d_ray.synthetic import load_set, save_set
from s2d_ray.tracking import TrackingConfig

MIB = 2**20


def distil(data, out, method, iterations, batch_real, seed, **kw) -> str | None:
    stage = kw.pop("stage", "video")
    if method in ("random", "herding", "kcenter"):
        iterations, batch_real = 0, None
    method_config = {"batch_real": batch_real} if batch_real else {}
    config = DistillConfig(
        method=method,
        stage=stage,
        data=data,
        out=str(out),
        ipc=kw.pop("ipc", 1),
        iterations=iterations,
        final_eval=False,
        seed=seed,
        method_config={**method_config, **kw.pop("mc", {})},
        **kw,
    )
    started = time.perf_counter()
    try:
        run_distillation(config, TrackingConfig.disabled())
    except DivergedError as exc:  # a row of the table, not the end of the benchmark
        print(f"  {out.name}: {exc}", flush=True)
        return None
    print(f"  distilled {out.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return str(out)


def train_experts(data: str, out: Path, count: int, epochs: int, seed: int) -> str:
    """``count`` experts trained in this process (the farm's per-worker function)."""
    from s2d_ray.experts.store import TrajectoryStore
    from s2d_ray.experts.training import ExpertConfig, train_expert, trajectory_settings

    shards = RealData.open(data).shards
    config = ExpertConfig(epochs=epochs, seed=seed).for_data(shards)
    settings = trajectory_settings(config, shards)
    store = TrajectoryStore(str(out), settings=settings, dataset_fingerprint=shards.fingerprint)
    train, test = ArrowClipDataset(shards, "train"), ArrowClipDataset(shards, "test")
    started = time.perf_counter()
    for expert_id in range(count):
        train_expert(expert_id, config, train, test, store)
    print(f"  trained {count} experts x {epochs} epochs in {time.perf_counter() - started:.0f} s")
    return str(out)


GROUPS = ("baselines", "dm", "mtt", "frepo", "temporal")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--mtt-iterations", type=int, default=100)
    p.add_argument("--experts", type=int, default=4, help="MTT experts trained here")
    p.add_argument("--batch-real", type=int, default=16)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-epochs", type=int, default=20)
    p.add_argument("--full-repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    print_calibration()
    videos = None
    mtt = {}  # the method's defaults: max_start_epoch 10, expert_epochs 1, syn_steps 10
    if args.smoke_test:
        args.iterations, args.epochs, args.repeats, args.full_epochs, videos = 2, 2, 1, 1, 4
        args.mtt_iterations, args.experts = 2, 1
        mtt = {"max_start_epoch": 1, "syn_steps": 2}
    with tempfile.TemporaryDirectory(prefix="s2d-bench-quality-") as tmp:
        work = Path(tmp)
        data = str(work / "data")
        prepare(
            PrepareConfig(dataset="embedded", out=data, max_videos_per_class=videos), progress=False
        )
        real = RealData.open(data)
        test = ArrowClipDataset(real.shards, "test")
        groups = class_groups(real.shards, seed=args.seed)
        it, br, seed = args.iterations, args.batch_real, args.seed
        print(f"distilling ({it} iterations, {br} real clips per class per iteration)")
        sets = {"random": distil(data, work / "random", "random", it, br, seed)}
        groups_run = set(args.groups)

        def s2d(name, method, spc, dpc, iterations=it, **mc):
            static = work / f"static{spc}"
            if not static.exists():
                distil(data, static, "dm", it, br, seed, stage="static", ipc=spc)
            sets[name] = distil(
                data,
                work / name.replace(" ", "-").replace(":", "-"),
                method,
                iterations,
                None if method.endswith("mtt") else br,
                seed,
                static=str(static),
                mc={"dpc": dpc, **mc},
            )

        if "baselines" in groups_run:
            for method in ("herding", "kcenter"):
                sets[method] = distil(data, work / method, method, it, br, seed)
        if "dm" in groups_run:
            sets["dm"] = distil(data, work / "dm", "dm", it, br, seed)
            for spc, dpc in ((1, 0), (1, 1), (2, 2)):
                s2d(f"s2d-dm {spc}:{dpc}", "s2d-dm", spc, dpc)
            if sets["s2d-dm 1:1"]:  # fp16 storage: the same S2D 1:1 set in half precision
                synthetic, manifest = load_set(sets["s2d-dm 1:1"])
                save_set(synthetic, work / "s2d-1-1-fp16", manifest, dtype="float16")
                sets["s2d-dm 1:1 fp16"] = str(work / "s2d-1-1-fp16")
        if "mtt" in groups_run:
            epochs = mtt.get("max_start_epoch", 10) + mtt.get("expert_epochs", 1) - 1
            experts = train_experts(data, work / "experts", args.experts, epochs, seed)
            mit = args.mtt_iterations
            sets["mtt"] = distil(
                data, work / "mtt", "mtt", mit, None, seed, mc={"experts": experts, **mtt}
            )
            for spc, dpc in ((1, 1), (2, 2)):
                s2d(f"s2d-mtt {spc}:{dpc}", "s2d-mtt", spc, dpc, mit, experts=experts, **mtt)
        if "frepo" in groups_run:
            sets["frepo"] = distil(data, work / "frepo", "frepo", it, br, seed)
            s2d("s2d-frepo 1:1", "s2d-frepo", 1, 1)
        if "temporal" in groups_run:
            short = {"syn_frames": 2, "segments": 2}
            sets["dm 2 frames"] = distil(data, work / "dm-t2", "dm", it, br, seed, mc=short)
            s2d("s2d-dm 1:1 2 frames", "s2d-dm", 1, 1, **short)
        config = EvalConfig(epochs=args.epochs, repeats=args.repeats, seed=seed)
        rows = []
        for name, path in sets.items():
            if path is None:
                print(f"  {name}: diverged, no row", flush=True)
                continue
            started = time.perf_counter()
            synthetic, manifest = load_set(path)
            items, labels = as_videos(synthetic, real.clip_shape[0])
            own = manifest.get("eval", {}) if name.startswith(("mtt", "s2d-mtt")) else {}
            result = evaluate_set(items, labels, test, config.model_copy(update=own))
            rows.append(ResultRow(name, result, manifest["bytes"] / MIB, groups))
            print(f"  evaluated {name} in {time.perf_counter() - started:.0f} s", flush=True)
        if "baselines" in groups_run:
            full = {"epochs": args.full_epochs, "repeats": args.full_repeats}
            result = evaluate_real(real.train, test, config.model_copy(update=full))
            rows.insert(0, ResultRow("full real data", result, None, groups))
    random_row = next(r for r in rows if r.name == "random")
    print(
        f"\nembedded dataset, ipc 1: {args.repeats} repeats x {args.epochs} epochs "
        f"(full data: {args.full_repeats} x {args.full_epochs}), "
        f"{len(test)} test clips; static classes {groups['static']}, dynamic {groups['dynamic']}"
    )
    print(format_table(rows))
    print("\nratios to the random row (accuracy, MiB):")
    for row in rows:
        mib = "-" if row.mib is None else f"{row.mib / random_row.mib:.3f}"
        print(f"  {row.name:<20} top-1 {row.result.mean / random_row.result.mean:5.2f}x  MiB {mib}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in rows], indent=2))


if __name__ == "__main__":
    main()
