"""What the evaluation's gradient cap (``EvalConfig.max_grad_norm``) does to healthy sets.

    python bench/eval_grad_cap.py --data work/data --sets work/best/*   # val, 3 x 60 epochs
    python bench/eval_grad_cap.py --data work/data --cap 10 20 --ipc 1 5
    python bench/eval_grad_cap.py --smoke-test

On a few clips (one full-batch step an epoch) the reference's unbounded SGD can run away to
NaN (issue 38, item 6; ``evaluation/protocol.py``). A cap is a no-op, to the bit, for a step
whose gradient norm is under it, so its cost on a healthy set is the steps it acts on. For
each set (distilled sets given, and random real clips at each ``--ipc``) this trains the same
networks unbounded and under each cap, and prints val top-1 with the largest gradient norm
seen and the share of steps the cap acted on. The unbounded run records its norms through a
cap of +inf (a factor of exactly 1.0: the same weights). Nothing here reads test.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

from calibration import print_calibration

import s2d_ray.models.step as step
from s2d_ray.data.clips import ClipDataset
from s2d_ray.evaluation import EvalConfig, with_own_settings
from s2d_ray.evaluation.protocol import evaluate_set, evaluate_synthetic
from s2d_ray.methods import RealData
from s2d_ray.synthetic import load_set


class NormLog:
    """Every update's gradient norm, as the cap saw it (per repeat when stacked)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self._clip = step.clip_grad_norm_

    def __enter__(self) -> NormLog:
        def logged(params, max_norm, *, stacked=False):
            norm = self._clip(params, max_norm, stacked=stacked)
            self.norms.extend(float(n) for n in norm.reshape(-1))
            return norm

        step.clip_grad_norm_ = logged
        return self

    def __exit__(self, *exc) -> None:
        step.clip_grad_norm_ = self._clip


def judged(name: str, train, protocol: EvalConfig, caps: list[float]) -> list[str]:
    """Rows of one set: unbounded, then each cap, the same networks each time."""
    rows = []
    for cap in [math.inf, *caps]:
        with NormLog() as log:
            started = time.perf_counter()
            result = train(protocol.model_copy(update={"max_grad_norm": cap}))
            seconds = time.perf_counter() - started
        over = sum(n > cap for n in log.norms)
        top1 = [100 * v for v in result.top1]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        label = "unbounded (reference)" if cap == math.inf else f"{cap:g}"
        rows.append(
            f"| {name} | {label} | {statistics.mean(top1):.1f} ± {spread:.1f} | "
            f"{' / '.join(f'{v:.1f}' for v in top1)} | {max(log.norms):.1f} | "
            f"{100 * over / max(1, len(log.norms)):.1f} % of {len(log.norms)} | {seconds:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="clip shards (default: a tiny embedded set for --smoke-test)")
    p.add_argument("--sets", nargs="*", default=[], help="distilled sets to judge")
    p.add_argument("--ipc", nargs="*", type=int, default=[1], help="random real clips per class")
    p.add_argument("--cap", nargs="+", type=float, default=[20.0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        from s2d_ray.data import PrepareConfig, prepare
        from s2d_ray.data.shards import MANIFEST

        if not args.data:
            args.data = str(Path("work") / "bench-grad-cap-smoke")
            if not (Path(args.data) / MANIFEST).exists():
                config = PrepareConfig(dataset="embedded", out=args.data, max_videos_per_class=4)
                prepare(config, progress=False)
        args.epochs, args.repeats = 2, 2
    if not args.data:
        p.error("--data is required (clip shards, e.g. work/data after `make quickstart`)")
    os.environ.setdefault("S2D_PROGRESS", "0")  # a table, not progress bars between its rows
    print_calibration()
    real = RealData.open(args.data)
    val = ClipDataset(real.shards, "val")
    protocol = EvalConfig(epochs=args.epochs, repeats=args.repeats, seed=args.seed)
    print(
        f"\nval top-1 % ({args.repeats} networks x {args.epochs} epochs, the same networks "
        "under each cap)\n"
    )
    print("| set | max_grad_norm | val top-1 % | per network | largest norm | steps capped | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ipc in args.ipc:
        clips, labels = real.random_videos(ipc, args.seed)
        judged(
            f"random real ipc {ipc}",
            lambda c, clips=clips, labels=labels: evaluate_set(
                clips, labels, val, c, device=real.device
            ),
            protocol,
            args.cap,
        )
    for path in args.sets:
        synthetic, manifest = load_set(path)
        own = with_own_settings(protocol, manifest.get("eval", {}))
        judged(
            Path(path).name,
            lambda c, s=synthetic: evaluate_synthetic(s, val, c, device=real.device),
            own,
            args.cap,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
