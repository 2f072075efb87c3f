"""Search benchmark: TPE + ASHA against random search with full-length trials, at equal compute.

    python bench/search.py                 # embedded, the quickstart's S2D-MTT space (~25 min)
    python bench/search.py --smoke-test    # 2 + 2 tiny trials, every stage (~2 min)

Both searches run the same space (tune_spaces/quickstart/embedded_ipc1_s2d-mtt.yaml unless
--space), the same inputs (built once in --workdir) and the same seed. Neither gets the
paper's point first: the table measures the searcher and the scheduler, not prior knowledge.
Random search runs ``--random-trials`` trials to the end (uniform sampler, FIFO); TPE + ASHA
runs ``--tpe-trials`` trials under the same total compute or less.

Compute is counted in distillation iterations (each trial's last reported iteration; a
trial that diverged counts the iterations up to its next evaluation) and, as a check, in
trial-seconds. "Best" is the best periodic evaluation of a trial that ran all its
iterations: the set a search would hand over. The target is TPE + ASHA reaching random
search's final best in at most half of random search's compute.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from calibration import print_calibration

from s2d_ray.search.spaces import Budget
from s2d_ray.search.trial import SearchInputs
from s2d_ray.search.tuner import (
    SearchConfig,
    build_tuner,
    ensure_inputs,
    experiment_name,
    load_config_space,
)
from s2d_ray.tracking import TrackingConfig

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "tune_spaces" / "quickstart" / "embedded_ipc1_s2d-mtt.yaml"


def run(args, label: str, overrides: list[str]) -> tuple[list[dict], Budget]:
    """One Tune experiment; every report of every trial, in the order they arrived."""
    import ray

    config = SearchConfig(
        space=args.space,
        overrides=["paper=[]", "budget.max_concurrent=1", *overrides],
        workdir=args.workdir,
        num_experts=args.num_experts,
        static_iterations=args.static_iterations,
        smoke=args.smoke_test,
    )
    space = load_config_space(config)
    tracking = TrackingConfig.create(config.workdir, "bench-search", enabled=False)
    data, experts, statics = ensure_inputs(config, space, tracking)
    inputs = SearchInputs(space, data, config.workdir, tracking, experts, statics)
    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    name = f"bench-{label}-{experiment_name(space)}"
    grid = build_tuner(inputs, str(Path(config.workdir) / "tune"), name).fit()
    reports = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None:
            continue
        for row in frame.to_dict("records"):
            reports.append(row | {"full": space.budget.iterations})
    reports.sort(key=lambda r: r["timestamp"])
    return reports, space.budget


def curve(reports: list[dict], eval_every: int) -> list[tuple[int, float, float]]:
    """(compute spent, trial-seconds spent, best complete trial so far) after each report."""
    done: dict[str, int] = {}
    seconds: dict[str, float] = {}
    best, points = -math.inf, []
    for r in reports:
        trial = r["trial_id"]
        iteration = r.get("iteration")
        if iteration is None or (isinstance(iteration, float) and math.isnan(iteration)):
            iteration = done.get(trial, 0) + eval_every  # diverged before its next evaluation
        done[trial] = int(iteration)
        seconds[trial] = float(r.get("time_total_s", 0.0))
        if done[trial] == r["full"] and not r.get("diverged"):
            best = max(best, float(r["eval_top1"]))
        points.append((sum(done.values()), sum(seconds.values()), best))
    return points


def reached(points, target: float) -> tuple[int, float] | None:
    for compute, secs, best in points:
        if best >= target:
            return compute, secs
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default=str(QUICKSTART))
    p.add_argument("--workdir", default=str(ROOT / "work" / "bench-search"))
    p.add_argument("--random-trials", type=int, default=8)
    p.add_argument("--tpe-trials", type=int, default=16)
    p.add_argument("--num-experts", type=int, default=2)
    p.add_argument("--static-iterations", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.random_trials, args.tpe_trials = 2, 2
    print_calibration()

    common = [f"seed={args.seed}"]
    random_reports, budget = run(
        args,
        "random",
        [
            *common,
            "searcher.type=random",
            "scheduler.type=fifo",
            f"budget.trials={args.random_trials}",
        ],
    )
    tpe_reports, _ = run(
        args,
        "tpe-asha",
        [*common, "searcher.type=tpe", "scheduler.type=asha", f"budget.trials={args.tpe_trials}"],
    )
    random_curve = curve(random_reports, budget.eval_every)
    tpe_curve = curve(tpe_reports, budget.eval_every)
    total, total_s, target = random_curve[-1]

    print(
        f"\nembedded S2D-MTT search, {budget.iterations} iterations per full trial, evaluation "
        f"every {budget.eval_every} ({budget.eval_epochs} epochs), seed {args.seed}"
    )
    print("| search | trials | compute (iterations) | trial-s | best top-1 % "
          "| compute to reach random's best | of random's compute |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, points, reports in (
        ("random, full trials", random_curve, random_reports),
        ("TPE + ASHA", tpe_curve, tpe_reports),
    ):
        compute, secs, best = points[-1]
        hit = reached(points, target)
        to_reach = f"{hit[0]} its, {hit[1]:.0f} s" if hit else "not reached"
        share = f"{hit[0] / total:.0%} ({hit[1] / total_s:.0%} of trial-s)" if hit else "-"
        trials = len({r["trial_id"] for r in reports})
        print(
            f"| {label} | {trials} | {compute} | {secs:.0f} | {100 * best:.1f} "
            f"| {to_reach} | {share} |"
        )
    print("\nbest complete trial so far, by share of random search's compute:")
    print("| compute | random | TPE + ASHA |")
    print("| --- | --- | --- |")
    for share in (0.25, 0.5, 0.75, 1.0):
        row = [f"{share:.0%}"]
        for points in (random_curve, tpe_curve):
            best = max((b for c, _, b in points if c <= share * total), default=-math.inf)
            row.append("-" if best == -math.inf else f"{100 * best:.1f}")
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
