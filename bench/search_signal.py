"""Does a trial's periodic evaluation rank trials as the final protocol does?

    python bench/search_signal.py                          # the quickstart's space (~30 min)
    python bench/search_signal.py --proxies 1x30 2x60      # other sizings, networks x epochs
    python bench/search_signal.py --smoke-test             # 2 tiny trials, every stage

A search stops and picks trials by their periodic evaluation (``budget.eval_repeats``
networks of ``budget.eval_epochs``), a cheap stand-in for the final protocol
(``budget.final_repeats`` networks of ``budget.final_epochs``). This runs ``--trials``
full-length trials at seeded uniform points of the space (FIFO: every trial ends), then
scores every trial's final set on **val** with each proxy sizing (the trial's own networks,
as the search's report) and with the final protocol (fresh networks), and prints, per proxy,
its Spearman rank correlation with the final protocol over the trials and its cost. Nothing
here reads test: the sizing chosen from this table is a choice.

Scores are cached in ``--workdir`` by set content and protocol: a re-run only reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from calibration import print_calibration
from search import rank_correlation, set_digest

from s2d_ray.distill import evaluate_items
from s2d_ray.evaluation import EvalConfig, with_own_settings
from s2d_ray.methods import RealData
from s2d_ray.models import resolve_device
from s2d_ray.search.config import SearchConfig, load_config_space
from s2d_ray.search.inputs import ensure_inputs
from s2d_ray.search.spaces import SPACES_DIR
from s2d_ray.search.trial import SearchInputs, final_protocol
from s2d_ray.search.tuner import experiment_name, run_experiment
from s2d_ray.synthetic import load_set
from s2d_ray.tracking import TrackingConfig

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = SPACES_DIR / "quickstart" / "embedded_ipc1_s2d-mtt.yaml"


def sizing(text: str) -> tuple[int, int]:
    """ "2x60": 2 networks of 60 epochs."""
    repeats, epochs = (int(v) for v in text.lower().split("x"))
    return repeats, epochs


def trials(args) -> tuple[list[str], SearchInputs]:
    """Run (or reuse) the random search; the ids of its trials that ran every iteration."""
    import ray

    config = SearchConfig(
        space=args.space,
        overrides=["paper=[]", "searcher.type=random", "scheduler.type=fifo",
                   "searcher.shared_study=false",
                   f"budget.trials={args.trials}", "budget.max_concurrent=1", *args.set],
        workdir=args.workdir,
        num_experts=args.num_experts,
        static_iterations=args.static_iterations,
        smoke=args.smoke_test,
    )  # fmt: skip
    space = load_config_space(config)
    tracking = TrackingConfig.create(config.workdir, "bench-signal", enabled=False)
    data, experts, statics = ensure_inputs(config, space, tracking)
    inputs = SearchInputs(space, data, config.workdir, tracking, experts, statics)
    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    grid = run_experiment(
        inputs, str(Path(config.workdir) / "tune"), f"signal-{experiment_name(space)}"
    )
    done = []
    for result in grid:
        metrics = result.metrics or {}
        if metrics.get("iteration") == space.budget.iterations and not metrics.get("diverged"):
            done.append(metrics["trial_id"])
    return sorted(done), inputs


def scores(inputs: SearchInputs, ids: list[str], protocols: dict[str, EvalConfig]):
    """Val top-1 of every trial's set under every protocol, and the seconds each took."""
    cache = Path(inputs.workdir) / "bench-signal-scores.json"
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    real = RealData.open(inputs.data, resolve_device(inputs.device))
    table: dict[str, dict[str, float]] = {name: {} for name in protocols}
    seconds: dict[str, list[float]] = {name: [] for name in protocols}
    for n, trial in enumerate(ids, 1):
        synthetic, manifest = load_set(str(inputs.trial_out(trial)))
        digest = set_digest(inputs.trial_out(trial))
        for name, protocol in protocols.items():
            config = with_own_settings(protocol, manifest.get("eval", {}))
            key = f"{digest}:{json.dumps(config.model_dump(mode='json'), sort_keys=True)}"
            if key not in saved:
                started = time.perf_counter()
                result = evaluate_items(synthetic, real, config, split="val")
                saved[key] = {"top1": result.mean, "seconds": time.perf_counter() - started}
                cache.write_text(json.dumps(saved))
            table[name][trial] = saved[key]["top1"]
            seconds[name].append(saved[key]["seconds"])
        print(
            f"trial {n}/{len(ids)} {trial}: "
            + ", ".join(f"{name} {100 * table[name][trial]:.1f}%" for name in protocols),
            flush=True,
        )
    return table, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default=str(QUICKSTART))
    p.add_argument("--workdir", default=str(ROOT / "work" / "bench-signal"))
    p.add_argument("--trials", type=int, default=8, help="full-length random trials")
    p.add_argument(
        "--proxies",
        nargs="+",
        default=["1x30", "1x60", "2x60"],
        help="periodic-evaluation sizings to compare, NETWORKSxEPOCHS",
    )
    p.add_argument("--num-experts", type=int, default=2)
    p.add_argument("--static-iterations", type=int, default=15)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.trials, args.proxies = 2, ["1x1"]
    print_calibration()
    started = time.perf_counter()
    ids, inputs = trials(args)
    space = inputs.space
    protocols = {
        f"proxy {r}x{e}": EvalConfig(epochs=e, repeats=r, seed=space.seed)
        for r, e in map(sizing, args.proxies)
    }
    final = final_protocol(space)
    protocols[f"final {final.repeats}x{final.epochs}"] = final
    table, seconds = scores(inputs, ids, protocols)
    final_name = list(protocols)[-1]
    print(
        f"\n{len(ids)} trials of {space.name} ({space.budget.iterations} iterations each, "
        f"seeded uniform points), scored on val; Spearman's rho against {final_name} "
        "(fresh networks):\n"
    )
    print("| protocol | network-epochs | seconds per set | rho vs final | mean val top-1 % |")
    print("| --- | --- | --- | --- | --- |")
    reference = [table[final_name][t] for t in ids]
    for name, protocol in protocols.items():
        values = [table[name][t] for t in ids]
        rho = rank_correlation(values, reference)
        print(
            f"| {name} | {protocol.repeats * protocol.epochs} | "
            f"{statistics.mean(seconds[name]):.1f} | {rho:.2f} | "
            f"{100 * statistics.mean(values):.1f} |"
        )
    print(f"\nthis run: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
