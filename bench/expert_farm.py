"""Expert farm benchmark: worker scaling, bytes per expert, and the cost of fetching a pair.

    python bench/expert_farm.py              # full run (~10 min on 2 cores)
    python bench/expert_farm.py --smoke-test # seconds

1. Scaling: expert-epochs per hour of the Ray Train farm with 1 and 2 workers, each worker
   training the same number of experts (weak scaling), so efficiency = rate(2) / (2 * rate(1)).
   Both the wall-clock rate (including Ray Train start-up) and the steady rate (from the
   experts' own per-epoch times, W workers running at once) are shown; the steady ratio is the
   compute slowdown two concurrent workers cause each other.
2. Bytes stored per expert (init + max_start_epoch + expert_epochs snapshots, safetensors)
   vs the reference's 51 fp32 snapshots per expert.
3. Fetching one (θ(t0), θ(t0+1)) pair from the store vs loading a whole 10-expert
   trajectory file as the reference did (torch.load of a list of snapshot lists), each in a
   fresh process: wall time and peak RSS above the process's baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from calibration import print_calibration

from s2d_ray.data import PrepareConfig, prepare
from s2d_ray.experts.farm import FarmConfig, run_farm
from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.experts.training import ExpertConfig
from s2d_ray.tracking import TrackingConfig

REFERENCE_SNAPSHOTS = 51  # the reference trained 50 epochs and kept init + every epoch


def make_shards(workdir: Path, videos_per_class: int) -> str:
    """A subset of the embedded dataset: enough clips to keep the network compute-bound."""
    out = workdir / "data"
    prepare(
        PrepareConfig(dataset="embedded", out=str(out), max_videos_per_class=videos_per_class),
        progress=False,
    )
    return str(out)


def farm_rate(
    data: str, workdir: Path, workers: int, experts_per_worker: int, epochs: int, batch: int
) -> dict:
    config = FarmConfig(
        data=data,
        out=str(workdir / f"store-{workers}w"),
        num_experts=workers * experts_per_worker,
        workers=workers,
        cpus_per_worker=1,
        max_failures=0,
        expert=ExpertConfig(epochs=epochs, batch_size=batch),
    )
    started = time.perf_counter()
    summary = run_farm(config, TrackingConfig.disabled(), progress=False)
    wall = time.perf_counter() - started
    expert_epochs = len(summary.experts) * epochs
    epoch_seconds = [s for e in summary.experts for s in e.metrics["epoch_seconds"][1:]]
    return {
        "workers": workers,
        "expert_epochs": expert_epochs,
        "wall_s": wall,
        "per_hour_wall": expert_epochs / wall * 3600,
        "per_hour_steady": workers * 3600 / float(np.mean(epoch_seconds)),
        "store": config.out,
    }


def bytes_per_expert(store_uri: str) -> tuple[int, int, int]:
    store = TrajectoryStore.open(store_uri)
    expert = store.experts()[0]
    files = sorted(Path(expert.path).glob("*"))
    stored = sum(f.stat().st_size for f in files)
    num_params = store.load_snapshot(expert.expert_id, 0).numel()
    return stored, num_params, expert.num_snapshots


_CHILD = r"""
import json, sys, time
import torch
from s2d_ray.experts.store import TrajectoryStore
def rss_mib():  # peak resident set (VmHWM), MiB
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
mode, path, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = rss_mib()
t = time.perf_counter()
if mode == "pair":
    store = TrajectoryStore.open(path)
    a, b = store.load_pair(0, t0, 1)
    total = float(a.sum() + b.sum())
else:
    buffers = torch.load(path, weights_only=True)
    a, b = buffers[0][t0], buffers[0][t0 + 1]
    total = float(a.sum() + b.sum())
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": rss_mib() - base}))
"""


def fetch_cost(mode: str, path: str, t0: int) -> dict:
    command = [sys.executable, "-c", _CHILD, mode, path, str(t0)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fetch ({mode}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_reference_file(path: Path, num_params: int, experts: int, snapshots: int) -> int:
    """The reference's layout: one file holding a list (experts) of lists (epochs) of tensors."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(num_params, generator=gen)
    buffers = [
        [base + 0.01 * (e * snapshots + s) for s in range(snapshots)] for e in range(experts)
    ]
    torch.save(buffers, path)
    del buffers
    return path.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--videos-per-class", type=int, default=12)
    p.add_argument("--experts-per-worker", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reference-experts", type=int, default=10)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    print_calibration()
    if args.smoke_test:
        args.videos_per_class, args.experts_per_worker, args.epochs = 1, 1, 1
        args.reference_experts = 2
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    with tempfile.TemporaryDirectory(prefix="s2d-bench-farm-") as tmp:
        workdir = Path(tmp)
        data = make_shards(workdir, args.videos_per_class)
        runs = [
            farm_rate(data, workdir, w, args.experts_per_worker, args.epochs, args.batch_size)
            for w in (1, 2)
        ]
        one, two = runs
        print(
            f"\n1. Scaling ({os.cpu_count()} CPUs, torch {torch.__version__}, convnet3d "
            f"8x64x64, {args.videos_per_class * 10} train videos (4 stored clips each, one "
            f"per epoch), {args.epochs} epochs, batch {args.batch_size}, 1 CPU thread per worker)"
        )
        print(
            f"{'workers':>8} {'expert-epochs':>14} {'wall s':>8} {'per hour (wall)':>16} "
            f"{'per hour (steady)':>18}"
        )
        for r in runs:
            print(
                f"{r['workers']:>8} {r['expert_epochs']:>14} {r['wall_s']:>8.1f} "
                f"{r['per_hour_wall']:>16.0f} {r['per_hour_steady']:>18.0f}"
            )
        eff_wall = two["per_hour_wall"] / (2 * one["per_hour_wall"])
        eff_steady = two["per_hour_steady"] / (2 * one["per_hour_steady"])
        verdict = "PASS" if eff_steady >= 0.9 else "MISS"
        print(
            f"scaling efficiency at 2 workers: steady {eff_steady:.2f} ({verdict}, target >= "
            f"0.9), wall-clock incl. Ray Train start-up {eff_wall:.2f}"
        )

        stored, num_params, snaps = bytes_per_expert(one["store"])
        reference = REFERENCE_SNAPSHOTS * num_params * 4
        default = ExpertConfig().num_epochs + 1  # what the paper's settings store per expert
        projected = stored / snaps * default
        print(f"\n2. Bytes per expert ({num_params:,} parameters)")
        print(f"{'layout':<52} {'MiB':>9} {'ratio':>7}")
        print(f"{'reference: 51 fp32 snapshots':<52} {reference / 2**20:>9.1f} {1.0:>7.2f}")
        label = f"s2d-ray, paper settings: {default} snapshots (projected)"
        print(f"{label:<52} {projected / 2**20:>9.1f} {projected / reference:>7.2f}")
        label = f"s2d-ray, this run: {snaps} snapshots + manifest (measured)"
        print(f"{label:<52} {stored / 2**20:>9.1f} {stored / reference:>7.2f}")

        ref_path = workdir / "reference_buffer.pt"
        ref_bytes = write_reference_file(
            ref_path, num_params, args.reference_experts, REFERENCE_SNAPSHOTS
        )
        t0 = args.epochs - 1  # the last pair the short experts have
        whole = fetch_cost("whole", str(ref_path), t0)
        pair = fetch_cost("pair", one["store"], t0)
        print(
            "\n3. Fetch one (theta(t0), theta(t0+1)) pair (fresh process each; RSS above the "
            "process's baseline)"
        )
        print(f"{'method':<52} {'seconds':>8} {'peak MiB':>9} {'memory ratio':>13}")
        gib = ref_bytes / 2**30
        label = f"reference: torch.load {args.reference_experts}-expert file ({gib:.1f} GiB)"
        print(f"{label:<52} {whole['seconds']:>8.2f} {whole['peak_mib']:>9.1f} {1.0:>13.1f}")
        ratio = whole["peak_mib"] / max(pair["peak_mib"], 1e-3)
        verdict = "PASS" if ratio >= 100 else "MISS"
        print(
            f"{'s2d-ray: TrajectoryStore.load_pair (mmap, verified)':<52} {pair['seconds']:>8.2f}"
            f" {pair['peak_mib']:>9.1f} {ratio:>12.0f}x  ({verdict}, target >= 100x less)"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
