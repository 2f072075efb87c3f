"""Every training loop on a CUDA GPU: precision, torch.compile, and several experts or
evaluation repeats on one GPU. CPU figures are bench/train_loops.py's.

1. The limit: ConvNet3D forward + backward + SGD update per clip on random clips already on
   the GPU, and the forward alone, for each precision (models/precision.py: IEEE fp32, TF32,
   bf16 autocast), eager and under ``torch.compile``; with each one's gradient of one batch
   against IEEE fp32 (relative L2 error; dropout off so that only arithmetic differs) and
   whether every loss stayed finite.
2. Expert training (``train_epoch`` then ``evaluate`` on the test split, the product's data
   path from Arrow shards) per precision, each row against its limit.
3. Several experts on one GPU: N processes training at once (what ``gpus_per_worker`` 1/N
   gives a farm), their summed clips per second against one alone.
4. Evaluation: R repeats of the protocol one after another vs one stacked model (vmap); and
   N ipc-1 evaluations at once on one GPU (``share-eval``: N trials of 1/N GPU each).
5. One DM and one S2D-MTT iteration (constant-memory unroll) per precision, the matching
   loss of the same iteration beside each; and N S2D-MTT distillations at once on one GPU
   (``share-distill``: N search trials of 1/N GPU each).

    python bench/gpu_loops.py                 # 16x112², 200 training clips (~10 min on an H100)
    python bench/gpu_loops.py --smoke-test    # every row, tiny

Every row runs in a fresh process, so its compile cache and peak GPU memory are its own.
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

import torch
from calibration import print_calibration, print_gpu_calibration
from distill_step import METHODS, fake_experts, prepare

PRECISIONS = ["fp32", "tf32", "bf16"]
# cuda; `--device cpu` runs the smoke test's code paths on a machine without a GPU
DEVICE = torch.device(os.environ.get("S2D_BENCH_DEVICE", "cuda"))


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else 0.0


def timed(work, repeats: int) -> float:
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - started) / repeats


# -- the rows, each run by `--worker NAME JSON` in its own process ---------------------------
def limit_row(a: dict) -> dict:
    from s2d_ray.models import create
    from s2d_ray.models.step import predict, train_step

    t, c, h, w = a["clip"]
    model = create("convnet3d", num_classes=10, clip_shape=(t, c, h, w), seed=0).to(DEVICE)
    forward = torch.compile(model) if a["compile"] else model
    generator = torch.Generator(DEVICE).manual_seed(0)
    x = torch.randn(a["clips"], t, c, h, w, device=DEVICE, generator=generator)
    y = torch.randint(0, 10, (a["clips"],), device=DEVICE, generator=generator)

    def gradient(precision: str) -> torch.Tensor:
        model.eval()  # dropout off: only the arithmetic differs
        frozen = torch.optim.SGD(model.parameters(), lr=0.0)
        train_step(forward, frozen, x, y, precision=precision)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    reference = gradient("fp32")
    error = float((gradient(a["precision"]) - reference).norm() / reference.norm())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []

    def step() -> None:
        losses.append(train_step(forward, optimizer, x, y, precision=a["precision"]))

    started = time.perf_counter()
    for _ in range(a["warm"]):
        step()
    sync()
    warm_s = time.perf_counter() - started
    step_s = timed(step, a["steps"])
    model.eval()  # a compiled forward compiles again in evaluation mode: warm it first
    predict(forward, x, precision=a["precision"])
    forward_s = timed(lambda: predict(forward, x, precision=a["precision"]), a["steps"])
    return {
        "s_per_clip": step_s / a["clips"],
        "forward_s_per_clip": forward_s / a["clips"],
        "warm_s": warm_s,
        "grad_rel_error": error,
        "finite": bool(torch.isfinite(torch.stack(losses)).all()),
        "peak_gib": peak_gib(),
    }


def expert_row(a: dict) -> dict:
    """``epochs`` epochs of ``train_epoch`` + ``evaluate``; steady: every epoch after the
    first. ``start_at``: a wall-clock time to begin at, so concurrent workers overlap."""
    from s2d_ray.data.clips import ClipDataset
    from s2d_ray.experts.training import (
        ExpertConfig,
        build_network,
        evaluate,
        train_epoch,
        trajectory_settings,
    )
    from s2d_ray.methods import RealData

    device = DEVICE
    real = RealData.open(a["data"], device)
    config = ExpertConfig(batch_size=a["batch"], precision=a["precision"]).for_data(real.shards)
    model = build_network(trajectory_settings(config, real.shards), a.get("seed", 0), device)
    train, test = real.train, ClipDataset(real.shards, "test")
    clips = len(train.epoch_rows(0, 1))
    generator = torch.Generator().manual_seed(0)
    time.sleep(max(0.0, a.get("start_at", 0) - time.time()))
    seconds, train_seconds = [], []
    for epoch in range(1, a["epochs"] + 1):
        started = time.perf_counter()
        train_epoch(model, train, config, 0, epoch, generator, device)
        sync()
        trained = time.perf_counter()
        evaluate(model, test, config, device)
        sync()
        seconds.append(time.perf_counter() - started)
        train_seconds.append(trained - started)
    steady, steady_train = (sum(s[1:]) / len(s[1:]) for s in (seconds, train_seconds))
    return {
        "epoch_s_per_clip": steady / clips,
        "train_s_per_clip": steady_train / clips,
        "eval_s_per_clip": (steady - steady_train) / len(test),
        "clips": clips,
        "test_clips": len(test),
        "per_s": clips / steady,  # clips per second
        "peak_gib": peak_gib(),
    }


def eval_row(a: dict) -> dict:
    """The protocol's training of ``repeats`` networks on an ipc-``ipc`` set, s per
    repeat-epoch, one after another or stacked (evaluation/protocol.py)."""
    from s2d_ray.evaluation import EvalConfig
    from s2d_ray.evaluation.protocol import draw_batches, train_network, train_stacked
    from s2d_ray.models import create
    from s2d_ray.seeding import derive_seed

    device = DEVICE
    t, c, h, w = a["clip"]
    n = 10 * a["ipc"]
    items = torch.randn(n, t, c, h, w, device=device)
    labels = torch.arange(n, device=device) % 10
    config = EvalConfig(epochs=a["epochs"], repeats=a["repeats"], precision=a["precision"])

    def models():
        return [
            create("convnet3d", num_classes=10, clip_shape=(t, c, h, w), seed=r).to(device)
            for r in range(a["repeats"])
        ]

    def run(cfg):
        if a["mode"] == "vmap":
            train_stacked(models(), lambda epoch: (items, labels), cfg, device)
            return
        batches = draw_batches(lambda epoch: (items, labels), cfg)
        for r, model in enumerate(models()):
            train_network(model, batches, cfg, derive_seed(cfg.seed, "eval", r), device)

    run(config.model_copy(update={"epochs": 2}))  # warm
    time.sleep(max(0.0, a.get("start_at", 0) - time.time()))
    seconds = timed(lambda: run(config), 1) / (a["repeats"] * a["epochs"])
    return {"s_per_repeat_epoch": seconds, "per_s": 1 / seconds, "peak_gib": peak_gib()}


def distill_row(a: dict) -> dict:
    """``iterations`` iterations after a warm-up one; the matching loss of iteration 0."""
    from s2d_ray.methods import DistillContext, RealData, get_method
    from s2d_ray.synthetic import SyntheticImages

    real = RealData.open(a["data"], DEVICE)
    size = real.clip_shape[2]
    generator = torch.Generator().manual_seed(0)
    static = SyntheticImages(
        torch.randn(real.num_classes * 2, 3, size, size, generator=generator), real.num_classes
    )
    cls = get_method(a["method"])
    settings = a["settings"] | ({"precision": a["precision"]} if "precision" in a else {})
    instance = cls(cls.Config(**settings), DistillContext(real, 1, 0, static))
    first = instance.step(0)
    time.sleep(max(0.0, a.get("start_at", 0) - time.time()))
    seconds = timed(lambda: instance.step(1), a["iterations"])
    return {
        "seconds": seconds,
        "per_s": 1 / seconds,
        "loss0": first["loss"],
        "peak_gib": peak_gib(),
    }


WORKERS = {"limit": limit_row, "expert": expert_row, "eval": eval_row, "distill": distill_row}


def start_worker(name: str, args: dict, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, __file__, "--worker", name, json.dumps(args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"worker failed with exit code {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def run_worker(name: str, args: dict) -> dict:
    return result(start_worker(name, args))


# -- the tables -------------------------------------------------------------------------------
def limit_table(clip: list[int], args) -> dict[str, dict]:
    print("\n1. The limit: forward + backward + update per clip, random clips on the GPU")
    print("| precision | compile | s per clip | x fp32 eager | forward s per clip | "
          "warm-up s | grad error vs IEEE | finite | peak GiB |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = {}
    for compiled in args.compile:
        for precision in PRECISIONS:
            point = {"clip": clip, "clips": args.clips, "precision": precision,
                     "compile": compiled, "warm": args.warm, "steps": args.steps}  # fmt: skip
            r = rows[precision, compiled] = run_worker("limit", point)
            base = rows.get(("fp32", False), rows["fp32", compiled])["s_per_clip"]
            print(f"| {precision} | {'yes' if compiled else 'no'} | {r['s_per_clip']:.2e} | "
                  f"{r['s_per_clip'] / base:.2f}x | {r['forward_s_per_clip']:.2e} | "
                  f"{r['warm_s']:.1f} | {r['grad_rel_error']:.1e} | {r['finite']} | "
                  f"{r['peak_gib']:.1f} |", flush=True)  # fmt: skip
    return rows


def expert_table(data: str, limits: dict, args) -> None:
    print("\n2. Expert training through the data path (train_epoch + evaluate), steady epochs")
    print("| precision | s per clip-epoch (train + test) | train s per clip | x its limit | "
          "test s per clip | x its forward | clips per s | peak GiB |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for precision in PRECISIONS:
        point = {"data": data, "batch": args.batch, "precision": precision, "epochs": args.epochs}
        r = run_worker("expert", point)
        limit = limits.get((precision, False)) or limits[precision, True]
        print(f"| {precision} | {r['epoch_s_per_clip']:.2e} | {r['train_s_per_clip']:.2e} | "
              f"{r['train_s_per_clip'] / limit['s_per_clip']:.2f}x | {r['eval_s_per_clip']:.2e}"
              f" | {r['eval_s_per_clip'] / limit['forward_s_per_clip']:.2f}x | "
              f"{r['per_s']:.0f} | {r['peak_gib']:.1f} |", flush=True)  # fmt: skip


def sharing_table(name: str, point: dict, args) -> None:
    """N ``name`` workers at once, as N trials or farm workers of 1/N GPU each; they start
    their timed work together (``start_at``) once every process is up."""
    what = {"expert": "clips", "eval": "repeat-epochs", "distill": "iterations"}[name]
    print(f"\n3. Sharing one GPU ({args.share_precision}), {name} rows: N processes at once, "
          f"{os.cpu_count()} CPUs split between them")  # fmt: skip
    print(f"| at once | together: {what} per s | x one alone |")
    print("| --- | --- | --- |")
    alone = None
    for n in args.share:
        at = point | {"precision": args.share_precision, "start_at": time.time() + 20}
        threads = max(1, (os.cpu_count() or 1) // n)
        workers = [start_worker(name, at | {"seed": i}, threads) for i in range(n)]
        together = sum(result(w)["per_s"] for w in workers)
        alone = alone or together
        print(f"| {n} | {together:.3g} | {together / alone:.2f}x |", flush=True)


def eval_table(clip: list[int], args) -> None:
    print(f"\n4. Evaluation: {args.repeats} repeats of the protocol ({args.eval_epochs} epochs), "
          f"one after another vs one stacked model")  # fmt: skip
    print("| ipc | precision | sequential s per repeat-epoch | stacked (vmap) | stacked x seq. |")
    print("| --- | --- | --- | --- | --- |")
    for ipc in args.ipcs:
        for precision in args.eval_precisions:
            point = {"clip": clip, "ipc": ipc, "repeats": args.repeats,
                     "epochs": args.eval_epochs, "precision": precision}  # fmt: skip
            seq = run_worker("eval", point | {"mode": "sequential"})["s_per_repeat_epoch"]
            stacked = run_worker("eval", point | {"mode": "vmap"})["s_per_repeat_epoch"]
            print(f"| {ipc} | {precision} | {seq:.4f} | {stacked:.4f} | {stacked / seq:.2f}x |",
                  flush=True)  # fmt: skip


def distill_table(data: str, mtt: dict, args) -> None:
    print("\n5. One distillation iteration (10 classes, ipc 1), s, and iteration 0's loss")
    print("| method | precision | s per iteration | x fp32 | loss of iteration 0 | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, settings, precisions in (
        ("dm", METHODS["dm"], ["fp32"]),
        ("s2d-mtt", mtt, PRECISIONS),
    ):
        base = None
        for precision in precisions:
            point = {"data": data, "method": method, "settings": settings,
                     "iterations": args.iterations}  # fmt: skip
            r = run_worker("distill", point | ({"precision": precision} if method != "dm" else {}))
            base = base or r["seconds"]
            print(f"| {method} | {precision} | {r['seconds']:.3f} | {r['seconds'] / base:.2f}x | "
                  f"{r['loss0']:.4f} | {r['peak_gib']:.1f} |", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="16x112")
    p.add_argument("--clips", type=int, default=256, help="clips of the limit row's batch")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", nargs="+", type=int, default=[0, 1], help="0: eager, 1: compiled")
    p.add_argument("--epochs", type=int, default=4, help="expert epochs per row (1 is warm-up)")
    p.add_argument("--share", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--share-precision", default="tf32", choices=PRECISIONS)
    p.add_argument("--ipcs", nargs="+", type=int, default=[1, 5])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-epochs", type=int, default=50)
    p.add_argument("--eval-precisions", nargs="+", default=PRECISIONS)
    p.add_argument("--iterations", type=int, default=3)
    parts = ["limit", "expert", "share", "eval", "share-eval", "distill", "share-distill"]
    p.add_argument("--parts", nargs="+", default=parts, choices=parts)
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--device", default="cuda", help="cpu: check the code paths, no figures")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        name, payload = args.worker
        print(json.dumps(WORKERS[name](json.loads(payload))))
        return
    os.environ["S2D_BENCH_DEVICE"] = args.device  # for the workers
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_loops.py: no CUDA GPU here, nothing to measure (bench/train_loops.py")
        print("measures the CPU; --device cpu runs these rows' code for a check)")
        return
    videos = 20  # 200 training clips per epoch (one per video), 300 test clips
    if args.smoke_test:
        args.size, args.clips, args.warm, args.steps, args.epochs = "8x64", 16, 1, 2, 2
        args.share, args.ipcs, args.eval_epochs, args.iterations = [1, 2], [1], 2, 1
        videos = 2
    print_calibration()
    if args.device == "cuda":
        print_gpu_calibration()
    frames, size = (int(v) for v in args.size.split("x"))
    clip = [frames, 3, size, size]
    print(f"\n{args.size}²: batch {args.batch}; limit rows on {args.clips} clips")
    with tempfile.TemporaryDirectory(prefix="s2d-bench-gpu-") as tmp:
        data = prepare(Path(tmp), frames, size, videos, clips_per_video=1)
        needs_limits = {"limit", "expert"} & set(args.parts)  # expert rows are read against it
        limits = limit_table(clip, args) if needs_limits else {}
        expert_point = {"data": data, "batch": args.batch, "epochs": args.epochs}
        experts = fake_experts(data, str(Path(tmp) / "experts"))
        mtt = {**METHODS["s2d-mtt"], "experts": experts, "unroll": "constant", "syn_steps": 10}
        mtt_point = {"data": data, "method": "s2d-mtt", "settings": mtt,
                     "iterations": args.iterations}  # fmt: skip
        eval_point = {"clip": clip, "ipc": 1, "repeats": args.repeats, "mode": "sequential",
                      "epochs": args.eval_epochs}  # fmt: skip
        parts = {
            "expert": lambda: expert_table(data, limits, args),
            "share": lambda: sharing_table("expert", expert_point, args),
            "share-eval": lambda: sharing_table("eval", eval_point, args),
            "share-distill": lambda: sharing_table("distill", mtt_point, args),
            "eval": lambda: eval_table(clip, args),
            "distill": lambda: distill_table(data, mtt, args),
        }
        for part in args.parts:  # in the order given
            if part != "limit":
                parts[part]()


if __name__ == "__main__":
    main()
