"""Search benchmark: TPE + ASHA against random search with full-length trials.

    python bench/search.py                      # the quickstart's S2D-MTT space (~20 min)
    python bench/search.py --tpe-seeds 1 2 3    # TPE + ASHA from 3 searcher seeds (~35 min)
    python bench/search.py --set scheduler.reduction_factor=3   # another TPE + ASHA setting
    python bench/search.py --smoke-test         # 2 + 2 tiny trials, every stage

Both run the same space (tune_spaces/quickstart/embedded_ipc1_s2d-mtt.yaml unless --space)
on the same inputs (built once in --workdir). Neither gets the paper's point first: the
table measures the searcher and the scheduler, not prior knowledge.

Random search: ``--random-trials`` full-length trials from a seeded uniform sampler (FIFO).
The order of i.i.d. draws is luck, so its curve is the exact expectation over orderings: after
k trials, E[best of k of the N] = sum_i v_(i) C(i-1, k-1) / C(N, k) over the sorted pool.
Its final best is the pool's best. TPE + ASHA: ``--tpe-trials`` trials per searcher seed in
``--tpe-seeds`` (not the pool's: Optuna's TPE starts with the same random points). Every trial
of both keeps the seed ``--seed`` (its initialisations, batches and evaluation network), so the
same point scores the same in both: the searches differ only in the points they chose.

Compute is counted in distillation iterations (each trial's last reported iteration; a
diverged trial counts the iterations up to its next evaluation) and, as a check, in
trial-seconds. "Best" is the best last evaluation of a trial that ran all its iterations:
the set a search hands over. Target: TPE + ASHA reaches random search's final best within
half of random search's compute. Each evaluation trains ``--eval-repeats`` networks in both
searches (budget.eval_repeats; one, the spaces' default, leaves differences of a few points
within its noise).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from calibration import print_calibration

from s2d_ray.search.spaces import SearchSpace
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


def run(args, label: str, overrides: list[str]) -> tuple[list[dict], SearchSpace]:
    """One Tune experiment; every report of every trial, in the order they arrived."""
    import ray

    config = SearchConfig(
        space=args.space,
        overrides=[
            "paper=[]",
            "budget.max_concurrent=1",
            f"budget.eval_repeats={args.eval_repeats}",
            *overrides,
        ],
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
    return reports, space


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


def expected_best(pool: list[float], k: int) -> float:
    """E[max of k draws without replacement from ``pool``], exactly."""
    values, n = sorted(pool), len(pool)
    return sum(v * math.comb(i, k - 1) for i, v in enumerate(values)) / math.comb(n, k)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default=str(QUICKSTART))
    p.add_argument("--workdir", default=str(ROOT / "work" / "bench-search"))
    p.add_argument("--random-trials", type=int, default=8)
    p.add_argument("--tpe-trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0, help="every trial's seed; the pool's sampler's")
    p.add_argument("--tpe-seeds", type=int, nargs="+", default=[1], help="TPE's sampler seeds")
    p.add_argument(
        "--eval-repeats", type=int, default=1, help="networks per evaluation, in both searches"
    )
    p.add_argument("--num-experts", type=int, default=2)
    p.add_argument("--static-iterations", type=int, default=30)
    p.add_argument(
        "--set",
        dest="tpe_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a space override for the TPE + ASHA searches only (the pool stays comparable), "
        "e.g. scheduler.reduction_factor=3",
    )
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.random_trials, args.tpe_trials = 2, 2
    print_calibration()

    reports, pool_space = run(
        args,
        "random",
        [f"seed={args.seed}", "searcher.type=random", "scheduler.type=fifo",
         f"budget.trials={args.random_trials}"],
    )  # fmt: skip
    budget = pool_space.budget
    full = budget.iterations
    finals = {}
    for r in reports:
        if r.get("iteration") == full and not r.get("diverged"):
            finals[r["trial_id"]] = float(r["eval_top1"])
    pool = list(finals.values())
    total = full * args.random_trials
    target = max(pool)
    random_s = sum(
        max(float(r.get("time_total_s", 0.0)) for r in reports if r["trial_id"] == t)
        for t in {r["trial_id"] for r in reports}
    )
    tpe, tpe_space = {}, pool_space
    for seed in args.tpe_seeds:
        found, tpe_space = run(
            args,
            f"tpe-asha-{seed}",
            [f"seed={args.seed}", f"searcher.seed={seed}", "searcher.type=tpe",
             "scheduler.type=asha", f"budget.trials={args.tpe_trials}", *args.tpe_set],
        )  # fmt: skip
        tpe[seed] = (curve(found, budget.eval_every), len({r["trial_id"] for r in found}))

    print(
        f"\nembedded S2D-MTT search, {full} iterations per full trial, evaluation every "
        f"{budget.eval_every} ({budget.eval_epochs} epochs, {budget.eval_repeats} network(s)); "
        f"TPE with {tpe_space.searcher.tpe_startup(args.tpe_trials)} random start-up trials, "
        f"ASHA with grace period {tpe_space.scheduler.grace_period} and reduction factor "
        f"{tpe_space.scheduler.reduction_factor:g}"
    )
    print("| search | trials | compute (iterations) | trial-s | best top-1 % "
          "| compute to reach random's best | share of random's compute |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| random, full trials (seed {args.seed}) | {len(pool)} | {total} | {random_s:.0f} "
        f"| {100 * target:.1f} | {total} its (expected, all trials) | 100% |"
    )
    for seed, (points, trials) in tpe.items():
        compute, secs, best = points[-1]
        hit = reached(points, target)
        to_reach = f"{hit[0]} its, {hit[1]:.0f} s" if hit else "not reached"
        share = f"{hit[0] / total:.0%} ({hit[1] / random_s:.0%} of trial-s)" if hit else "-"
        print(
            f"| TPE + ASHA (seed {seed}) | {trials} | {compute} | {secs:.0f} | {100 * best:.1f} "
            f"| {to_reach} | {share} |"
        )
    shares = sorted(
        hit[0] / total if (hit := reached(points, target)) else math.inf
        for points, _ in tpe.values()
    )
    median = statistics.median(shares)
    print(
        f"target, random's best within 50% of its compute: {sum(x <= 0.5 for x in shares)} of "
        f"{len(shares)} searcher seeds; median share "
        f"{'not reached' if median == math.inf else f'{median:.0%}'}: "
        f"{'PASS' if median <= 0.5 else 'MISS'}"
    )
    print("\nbest complete trial so far, by share of random search's compute:")
    print(
        "| compute | random (expected) | " + " | ".join(f"TPE + ASHA seed {s}" for s in tpe) + " |"
    )
    print("| --- | --- |" + " --- |" * len(tpe))
    for share in (0.25, 0.5, 0.75, 1.0):
        k = max(1, int(share * len(pool)))
        row = [f"{share:.0%}", f"{100 * expected_best(pool, k):.1f}"]
        for points, _ in tpe.values():
            best = max((b for c, _, b in points if c <= share * total), default=-math.inf)
            row.append("-" if best == -math.inf else f"{100 * best:.1f}")
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
