"""Memory bounded whatever the dataset's size: every reader of real clips, measured.

Builds shard directories of incompressible clips (random bytes: zstd cannot shrink them, so
bytes on disk are bytes in memory) of 0.25, 1 and 4 GiB of train clips at 8x64² and one of
1 GiB at 16x112², 10 classes, 4 train clips per video, test one eighth of train. Then, each in
a fresh process, three consumers of the product's own code:

- expert epoch: ``experts.training.train_epoch`` (one jittered clip per video, shuffled,
  batches of 256, flips, the per-batch standardisation);
- DM real batches: 10 iterations x every class x ``RealData.class_batch(c, 64)`` (distinct
  videos, one random clip each: random access);
- test pass: ``evaluation.protocol.test_networks`` over the test split in batches of 64;

each under three readers: ``memory`` (the split decoded into memory first, what every
consumer did before), ``stream`` (row groups through the node cache, the default) and, for
the epoch and the test pass, ``ray`` (the same plan read by Ray Data tasks). The network is a
linear probe on frame means, so that the figure is the data path's, not a 3-D convolution's:
a real network only hides the reader behind its own cost.

Per row: peak anonymous RSS of the process (``RssAnon``, sampled every 5 ms; page cache and
the node cache's files excluded, as the kernel reclaims them) and its growth over the process
before the reader opened; clips/s of the second pass (warm node cache) and of the first
(cold: row groups decompressed and cached). Targets: peak RSS from 0.25 to 4 GiB grows by at
most 64 MiB; the whole process under 1 GiB on the 4 GiB set; stream >= 0.9x memory's clips/s.

    python bench/streaming.py [--sizes 0.25 1 4] [--big 1] [--workloads epoch dm test]
                              [--readers memory stream ray] [--workdir DIR] [--json FILE]
                              [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CLASSES = 10
CLIPS_PER_VIDEO = 4
VIDEOS_PER_SHARD = 64
WORKLOADS = ("epoch", "dm", "test")
READERS = {"epoch": ("memory", "stream", "ray"), "dm": ("memory", "stream"),
           "test": ("memory", "stream", "ray")}  # fmt: skip


def build(out: Path, shape: tuple[int, ...], gib: float, seed: int = 0) -> str:
    """A shard directory of ``gib`` GiB of random train clips (and one eighth of test)."""
    from s2d_ray.data import shards as sh

    clip_bytes = int(np.prod(shape))
    rng = np.random.default_rng(seed)

    def parts():
        for split, size, clips in (("train", gib, CLIPS_PER_VIDEO), ("test", gib / 8, 3)):
            videos = max(CLASSES, int(size * 2**30) // (clip_bytes * clips))
            for label in range(CLASSES):
                mine = range(label, videos, CLASSES)
                for start in range(0, len(mine), VIDEOS_PER_SHARD):
                    rows = sh.ClipRows.empty()
                    for v in mine[start : start + VIDEOS_PER_SHARD]:
                        for k in range(clips):
                            frames = np.frombuffer(rng.bytes(clip_bytes), np.uint8).reshape(shape)
                            rows.add(frames, label, f"c{label}", f"v{v:07d}", split, k, [])
                    yield split, label, rows

    names = [f"c{c}" for c in range(CLASSES)]
    return sh.write_directory(str(out), names, shape, parts(), dataset="random-clips")


class PeakAnon:
    """The process's peak RssAnon (MiB), sampled in a thread."""

    def __init__(self) -> None:
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def worker(data: str, workload: str, reader: str) -> dict:
    import torch

    from s2d_ray.data import ClipDataset
    from s2d_ray.evaluation import EvalConfig
    from s2d_ray.evaluation.protocol import test_networks
    from s2d_ray.experts.training import ExpertConfig, train_epoch
    from s2d_ray.methods import RealData
    from s2d_ray.models import resolve_device
    from s2d_ray.seeding import torch_generator

    if reader == "ray":
        from s2d_ray.cluster import init_ray

        init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)

    class Probe(torch.nn.Module):  # a linear probe on frame means: the data path's cost
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, CLASSES)

        def forward(self, x):  # (B, T, 3, H, W)
            return self.head(x.mean(dim=(1, 3, 4)))

    probe = Probe()
    device = resolve_device("cpu")  # as every job does: large tensors from the heap
    base = PeakAnon.now()
    monitor = PeakAnon()
    started = time.perf_counter()
    split = "test" if workload == "test" else "train"
    memory = "all" if reader == "memory" else "stream"
    backend = "ray" if reader == "ray" else "local"
    clips = ClipDataset(data, split, memory=memory, backend=backend)
    opened = time.perf_counter() - started

    def once() -> int:
        if workload == "epoch":
            config = ExpertConfig(batch_size=256, flip=True, precision="fp32", micro_batch=None)
            train_epoch(probe, clips, config, 0, 1, torch_generator(0, "epoch"), device)
            return clips.num_videos
        if workload == "dm":
            real = RealData(clips.shards, clips, device)
            generator = torch_generator(0, "dm")
            for _ in range(10):
                for c in range(CLASSES):
                    probe(real.class_batch(c, 64, generator)).mean(0)
            return 10 * CLASSES * 64
        test_networks([probe], clips, EvalConfig(), device)
        return len(clips)

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        n = once()
        times.append(time.perf_counter() - t0)
    peak = monitor.stop()
    return {"clips": n, "cold_s": times[0], "warm_s": times[1], "open_s": opened,
            "peak_mib": peak, "growth_mib": peak - base, "base_mib": base}  # fmt: skip


def run_worker(data: str, workload: str, reader: str, cache: Path) -> dict:
    env = {**os.environ, "S2D_CACHE_DIR": str(cache), "S2D_CACHE_GIB": "64"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", data, workload, reader],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=float, default=[0.25, 1.0, 4.0], help="GiB, 8x64²")
    p.add_argument("--big", type=float, default=1.0, help="GiB at 16x112² (0: none)")
    p.add_argument("--workdir", help="where the shards and the node cache go (default: temp)")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--readers", nargs="+", choices=("memory", "stream", "ray"),
                   default=["memory", "stream", "ray"])  # fmt: skip
    p.add_argument(
        "--ray-max-gib",
        type=float,
        default=1.0,
        help="the Ray Data reader only on sets up to this size (it is the slow one here)",
    )
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--smoke-test", action="store_true", help="tiny sets, to check it runs")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from calibration import print_calibration

    print_calibration()
    if args.smoke_test:
        args.sizes, args.big = [0.01, 0.02], 0.01
    work = Path(args.workdir or tempfile.mkdtemp(prefix="s2d-bench-streaming-"))
    sets = [((8, 64, 64, 3), g) for g in args.sizes] + (
        [((16, 112, 112, 3), args.big)] if args.big else []
    )
    rows = []
    try:
        for shape, gib in sets:
            t0 = time.perf_counter()
            data = build(work / f"{shape[0]}x{shape[1]}-{gib}", shape, gib)
            print(f"built {gib} GiB at {shape[0]}x{shape[1]}² in {time.perf_counter() - t0:.0f} s",
                  flush=True)  # fmt: skip
            for workload in args.workloads:
                readers = [r for r in READERS[workload] if r in args.readers]
                for reader in [r for r in readers if r != "ray" or gib <= args.ray_max_gib]:
                    r = run_worker(data, workload, reader, work / "cache")
                    rows.append({"shape": f"{shape[0]}x{shape[1]}", "gib": gib,
                                 "workload": workload, "reader": reader, **r})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(work / "cache", ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows, args.sizes)


def report(rows: list[dict], sizes: list[float]) -> None:
    print("\n| clips | GiB | workload | reader | peak RssAnon MiB | growth MiB | clips/s warm "
          "| x memory | clips/s cold | open s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    memory = {(r["shape"], r["gib"], r["workload"]): r for r in rows if r["reader"] == "memory"}
    for r in rows:
        base = memory.get((r["shape"], r["gib"], r["workload"]))
        warm = r["clips"] / r["warm_s"]
        ratio = f"{warm * base['warm_s'] / base['clips']:.2f}" if base else "-"
        print(f"| {r['shape']} | {r['gib']} | {r['workload']} | {r['reader']} | "
              f"{r['peak_mib']:.0f} | {r['growth_mib']:.0f} | {warm:.0f} | {ratio} | "
              f"{r['clips'] / r['cold_s']:.0f} | {r['open_s']:.2f} |")  # fmt: skip
    small, large = min(sizes), max(sizes)
    print(
        f"\ntargets, 8x64², peak RssAnon growth from {small} to {large} GiB (<= 64 MiB), "
        f"whole process at {large} GiB (< 1024 MiB), stream / memory clips/s (>= 0.9):"
    )
    for workload in WORKLOADS:
        for reader in READERS[workload][1:]:
            pick = {r["gib"]: r for r in rows if r["shape"] == "8x64" and r["workload"] == workload
                    and r["reader"] == reader}  # fmt: skip
            if small in pick and large in pick:
                growth = pick[large]["peak_mib"] - pick[small]["peak_mib"]
                print(f"  {workload:<6} {reader:<7} growth {growth:+.0f} MiB "
                      f"({'PASS' if growth <= 64 else 'MISS'}), peak {pick[large]['peak_mib']:.0f}"
                      f" MiB ({'PASS' if pick[large]['peak_mib'] < 1024 else 'MISS'})")  # fmt: skip


if __name__ == "__main__":
    main()
