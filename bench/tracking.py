"""What logging the loss to MLflow as it happens costs a distillation.

The loss of every iteration is buffered and sent in one request every few seconds
(``distill.LOSS_FLUSH_SECONDS``) and at each checkpoint. The bench runs a short DM
distillation on the embedded set into a fresh sqlite store, times every flush, and prints
their share of the loop; then the flush alone for the rows a fast loop gathers, against the
flush interval, which bounds the share whatever an iteration costs.

    python bench/tracking.py [--iterations 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from calibration import print_calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    print_calibration()

    from s2d_ray.data import PrepareConfig, prepare
    from s2d_ray.distill import LOSS_FLUSH_SECONDS, DistillConfig, run_distillation
    from s2d_ray.tracking import RunHandle, Tracker, TrackingConfig

    flushes: list[tuple[int, float]] = []
    original = RunHandle.log_metric_steps

    def timed(self, rows):
        started = time.perf_counter()
        original(self, rows)
        flushes.append((len(rows), time.perf_counter() - started))

    RunHandle.log_metric_steps = timed
    with tempfile.TemporaryDirectory(prefix="s2d-bench-tracking-") as tmp:
        work = Path(tmp)
        data = str(work / "data")
        prepare(PrepareConfig(dataset="embedded", out=data), progress=False)
        tracking = TrackingConfig.create(work, "bench/tracking")
        config = DistillConfig(
            method="dm",
            data=data,
            out=str(work / "dm"),
            ipc=1,
            iterations=args.iterations,
            checkpoint_every=10**6,
            final_eval=False,
        )
        started = time.perf_counter()
        run_distillation(config, tracking)
        loop = time.perf_counter() - started
        sent = sum(s for _, s in flushes)
        print(f"\nDM ipc 1 on the embedded set, {args.iterations} iterations, sqlite store")
        print("| what | seconds | share of the run |")
        print("| --- | --- | --- |")
        print(f"| the run (build, loop, save, previews) | {loop:.1f} | 1.000 |")
        print(
            f"| loss flushes ({len(flushes)}, {sum(n for n, _ in flushes)} rows) | "
            f"{sent:.3f} | {sent / loop:.4f} |"
        )

        with Tracker(tracking).start_run("flush-only") as run:
            print(
                f"\none flush of the rows gathered in {LOSS_FLUSH_SECONDS:.0f} s, "
                "against that interval (the bound on its share)"
            )
            print("| rows per flush | ms per flush | share of the interval |")
            print("| --- | --- | --- |")
            for rows in (1, 10, 100, 1000):
                flushes.clear()
                batch = [(i, {"loss": 1.0 / (i + 1)}, time.time()) for i in range(rows)]
                for _ in range(5):
                    run.log_metric_steps(batch)
                best = min(s for _, s in flushes)
                print(f"| {rows} | {1000 * best:.1f} | {best / LOSS_FLUSH_SECONDS:.4f} |")


if __name__ == "__main__":
    main()
