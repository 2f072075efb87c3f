"""Every training loop against the machine's limit. The limit rows: ConvNet3D forward +
backward + update per clip, and the forward alone, on random clips in memory, at several
micro-batch sizes (--limit-micro; the fastest is the limit). Then expert training (bare
loop, and through the Ray Train farm), the experts' test evaluation, an evaluation epoch and
a DM / S2D-MTT iteration, at --micro (auto: the product's default, models/step.py), each
with its ratio to its own floor: training clips to the limit, test clips to the forward
alone, an epoch with its evaluation to both, a DM / MTT iteration to its network work alone
on random tensors. The farm runs once more without its workers' environment
(s2d_ray/cluster.py), which measures what that buys. The farm's fixed costs (Ray's start,
the Train run's own, the initial evaluation, the first epoch's warm-up) follow in a table of
their own, in seconds and in steady epochs: a farm pays them once, not per clip.

    python bench/train_loops.py                    # 16x112², 200 training clips (~35 min)
    python bench/train_loops.py --sizes 8x64       # the small clips (~10 min)
    python bench/train_loops.py --smoke-test       # every row, tiny (~1 min)

Reference (quoted in issue 10; 2-core AMD EPYC, 110-140 GFLOP/s, 16x112², 200 clips, batch
256): expert epoch with its test evaluation 0.532 s per clip-epoch (0.0937 at 8x64²), the
training epoch alone 0.384, a test evaluation of 240 clips 29.7 s, peak RSS 8.64 GiB. Our
epoch trains 200 clips too, but tests 300: the epoch rows compare with the reference's
train part plus its evaluation rescaled to 300 clips.
Targets: farm epoch with evaluation <= 0.8x the reference, evaluation <= 0.8x, every loop
within 1.3x of the limit row. Every row runs in a fresh process, so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from calibration import print_calibration
from distill_step import fake_experts, prepare
from distill_step import run_worker as distill_worker

from s2d_ray.commands.common import micro_batch_arg
from s2d_ray.experts.training import ExpertConfig

REFERENCE = {  # s per clip-epoch (train + eval, train only), eval of 240 clips s, peak GiB
    "16x112": {"epoch": 0.532, "train": 0.384, "eval240": 29.7, "peak_gib": 8.64},
    "8x64": {"epoch": 0.0937},
}
REFERENCE_EVAL_SHARE = 29.7 / (0.532 * 200)  # of an epoch with its evaluation, at 16x112²


def reference_epoch(spec: str, test_clips: int) -> float | None:
    """The reference's s per clip-epoch (200 clips) had its test split held ``test_clips``
    clips, not 240: its own train and eval parts, the eval part rescaled (at 8x64² the
    16x112² split of the two is assumed)."""
    if spec not in REFERENCE:
        return None
    total = REFERENCE[spec]["epoch"]
    return total * (1 - REFERENCE_EVAL_SHARE) + total * REFERENCE_EVAL_SHARE * test_clips / 240


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the rows, each run by `--worker NAME JSON` in its own process ---------------------------
def limit_row(a: dict) -> dict:
    """Pure forward + backward + SGD update on random clips already in memory, no data path;
    and the forward alone (evaluation mode), the floor of the test evaluations."""
    from s2d_ray.models import create, resolve_device
    from s2d_ray.models.step import predict, train_step

    resolve_device("cpu")
    t, c, h, w = a["clip"]
    model = create("convnet3d", num_classes=10, clip_shape=(t, c, h, w), seed=0).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(a["clips"], t, c, h, w), torch.randint(0, 10, (a["clips"],))
    train_step(
        model, optimizer, x[: a["warm"]], y[: a["warm"]], micro_batch=micro_batch_arg(a["micro"])
    )
    started = time.perf_counter()
    train_step(model, optimizer, x, y, micro_batch=micro_batch_arg(a["micro"]))
    trained = time.perf_counter()
    predict(model.eval(), x, micro_batch=micro_batch_arg(a["micro"]))
    return {
        "s_per_clip": (trained - started) / a["clips"],
        "forward_s_per_clip": (time.perf_counter() - trained) / a["clips"],
        "peak_mib": peak_mib(),
    }


def expert_row(a: dict) -> dict:
    """``train_epoch`` then ``evaluate`` on the test split, in one process, no Ray: the
    second epoch, as the farm's steady rows (the first pays the process's warm-up)."""
    from s2d_ray.data.clips import ClipDataset
    from s2d_ray.experts.training import (
        ExpertConfig,
        build_network,
        evaluate,
        train_epoch,
        trajectory_settings,
    )
    from s2d_ray.methods import RealData
    from s2d_ray.models import resolve_device

    device = resolve_device("cpu")
    real = RealData.open(a["data"], device)
    config = ExpertConfig(batch_size=a["batch"], micro_batch=micro_batch_arg(a["micro"])).for_data(
        real.shards
    )
    model = build_network(trajectory_settings(config, real.shards), 0, device)
    train, test = real.train, ClipDataset(real.shards, "test")
    clips = len(train.epoch_rows(0, 1))  # an epoch trains one clip per video
    generator = torch.Generator().manual_seed(0)
    train_epoch(model, train, config, 0, 1, generator, device)
    evaluate(model, test, config, device)
    started = time.perf_counter()
    train_epoch(model, train, config, 0, 2, generator, device)
    trained = time.perf_counter()
    evaluate(model, test, config, device)
    done = time.perf_counter()
    return {
        "train_s_per_clip": (trained - started) / clips,
        "eval_s_per_clip": (done - trained) / len(test),
        "epoch_s_per_clip": (done - started) / clips,
        "clips": clips,
        "test_clips": len(test),
        "peak_mib": peak_mib(),
    }


def farm_row(a: dict) -> dict:
    """One expert, ``epochs`` epochs, through the Ray Train farm (1 worker with both CPUs);
    ``bare_env``: without the workers' environment (s2d_ray/cluster.py), to measure it.

    Steady: the epochs after the first, as the bare row (the first pays the worker
    process's warm-up). The fixed costs of a farm, paid once whatever its epochs: Ray's
    start, the Train run's own (controller, worker group, teardown: the farm's wall less
    every epoch's seconds), the initial evaluation (epoch 0) and the first epoch's warm-up."""
    from s2d_ray import cluster
    from s2d_ray.experts.farm import FarmConfig, run_farm
    from s2d_ray.methods import RealData
    from s2d_ray.tracking import TrackingConfig

    config = FarmConfig(
        data=a["data"],
        out=a["out"],
        num_experts=1,
        workers=1,
        cpus_per_worker=2,
        max_failures=0,
        expert=ExpertConfig(
            epochs=a["epochs"], batch_size=a["batch"], micro_batch=micro_batch_arg(a["micro"])
        ),
    )
    if a.get("bare_env"):
        cluster.WORKER_ENV_VARS.clear()
    started = time.perf_counter()
    cluster.init_ray()
    ray_up = time.perf_counter()
    summary = run_farm(config, TrackingConfig.disabled(), progress=False)
    done = time.perf_counter()
    clips = len(RealData.open(a["data"]).train.epoch_rows(0, 1))
    seconds = summary.experts[0].metrics["epoch_seconds"]  # [0]: the initial evaluation
    steady = sum(seconds[2:]) / len(seconds[2:]) if len(seconds) > 2 else seconds[1]
    return {
        "steady_s_per_clip": steady / clips,
        "wall_s_per_clip": (done - started) / (a["epochs"] * clips),
        "steady_epoch_s": steady,
        "clips": clips,
        "fixed_s": {
            "Ray's start (ray.init)": ray_up - started,
            "the Train run (controller, worker group, teardown)": done - ray_up - sum(seconds),
            "the initial evaluation (epoch 0)": seconds[0],
            "the first epoch's warm-up": seconds[1] - steady,
        },
    }


def evaluation_row(a: dict) -> dict:
    """The protocol's training on an ipc-1 synthetic set (10 clips, one step per epoch)."""
    from s2d_ray.evaluation import EvalConfig
    from s2d_ray.evaluation.protocol import draw_batches, train_network
    from s2d_ray.models import create, resolve_device

    device = resolve_device("cpu")
    t, c, h, w = a["clip"]
    items, labels = torch.randn(10, t, c, h, w), torch.arange(10)
    config = EvalConfig(epochs=a["epochs"], micro_batch=micro_batch_arg(a["micro"]))
    model = create("convnet3d", num_classes=10, clip_shape=(t, c, h, w), seed=0)
    batches = draw_batches(lambda epoch: (items, labels), config)
    train_network(model, batches, config.model_copy(update={"epochs": 1}), 0, device)  # warm
    started = time.perf_counter()
    train_network(model, batches, config, 0, device)
    seconds = (time.perf_counter() - started) / a["epochs"]
    return {"s_per_clip": seconds / len(labels), "peak_mib": peak_mib()}


def network_work_row(a: dict) -> dict:
    """The network work alone of one DM or (S2D-)MTT iteration of ``distill_rows``, on random
    tensors already in memory (10 classes, ipc 1): the floor their rows are compared with.
    DM: the real clips' embeddings without a graph, in the method's chunks, then the
    synthetic clips' forward and backward. MTT: the constant-memory unroll (syn_steps
    student steps without a graph, then each step again with its graph and the
    Hessian-vector product), at ``batch_syn`` clips per step."""
    import torch.nn.functional as F

    from s2d_ray.methods.dm import REAL_CHUNK
    from s2d_ray.models import create, flatten_params, functional_forward, resolve_device

    resolve_device("cpu")
    t, c, h, w, classes = *a["clip"], 10
    net = create("convnet3d", num_classes=classes, clip_shape=(t, c, h, w), seed=0)
    syn = torch.randn(classes, t, c, h, w, requires_grad=True)
    real = torch.randn(classes * a["batch_real"], t, c, h, w)
    labels = torch.arange(classes)[: a["batch_syn"]]

    def dm() -> None:
        net.eval().requires_grad_(False)
        with torch.no_grad():
            for chunk in real.split(REAL_CHUNK):
                net.embed(chunk)
        net.embed(syn).square().sum().backward()

    def student_grad(theta, x, create_graph):
        loss = F.cross_entropy(functional_forward(net, theta, x[: a["batch_syn"]]), labels)
        return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]

    def mtt(lr: float = 0.01) -> None:
        net.train()
        thetas = [flatten_params(net)]
        for _ in range(a["syn_steps"]):
            theta = thetas[-1].detach().requires_grad_(True)
            thetas.append((theta - lr * student_grad(theta, syn.detach(), False)).detach())
        v = torch.ones_like(thetas[0])  # the distance's gradient: any vector costs the same
        for step in reversed(range(a["syn_steps"])):
            theta = thetas[step].detach().requires_grad_(True)
            dot = (student_grad(theta, syn, True) * v).sum()
            h_v, _ = torch.autograd.grad(dot, [theta, syn])
            v = v - lr * h_v

    seconds = {}
    for name, work in (("dm", dm), ("mtt", mtt)):
        work()  # warm
        started = time.perf_counter()
        work()
        seconds[name] = time.perf_counter() - started
    return seconds


WORKERS = {
    "limit": limit_row,
    "expert": expert_row,
    "farm": farm_row,
    "eval": evaluation_row,
    "work": network_work_row,
}


def run_worker(name: str, args: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


DISTILL = {"batch_real": 64, "batch_syn": 10, "syn_steps": 10}  # bench/distill_step.py's


def distill_rows(data: str, clip: list[int]) -> dict[str, tuple[float, float]]:
    """DM and S2D-MTT seconds per iteration (bench/distill_step.py's worker), each with the
    seconds of its network work alone (``network_work_row``)."""
    work = run_worker("work", {"clip": clip, **DISTILL})
    rows = {"dm": (distill_worker(data, "dm", 1, {})["seconds"], work["dm"])}
    with tempfile.TemporaryDirectory(prefix="s2d-bench-loops-") as tmp:
        experts = fake_experts(data, str(Path(tmp) / "experts"))
        extra = {"experts": experts, "unroll": "constant", "syn_steps": DISTILL["syn_steps"]}
        mtt = distill_worker(data, "s2d-mtt", 1, extra)["seconds"]
        rows["s2d-mtt"] = (mtt, work["mtt"])
    return rows


def table(spec: str, data: str, args) -> None:
    frames, size = (int(v) for v in spec.split("x"))
    clip = [frames, 3, size, size]
    ref = REFERENCE.get(spec, {})
    print(f"\n{spec}²: batch {args.batch}, micro-batches {args.micro}")
    print("| row | micro | s per clip | x its limit | peak MiB | vs reference |")
    print("| --- | --- | --- | --- | --- | --- |")

    def line(row, m, s, peak=None, versus="-", floor=None):
        ratio = s / (floor or limit)
        peak = "-" if peak is None else f"{peak:.0f}"
        print(f"| {row} | {m} | {s:.4f} | {ratio:.2f}x | {peak} | {versus} |", flush=True)

    def vs(value, reference):
        if reference is None:
            return "-"
        r = value / reference
        return f"{r:.2f}x {'PASS' if r <= 0.8 else 'MISS'} (ref {reference:.4g})"

    limits = {}
    for m in dict.fromkeys(args.limit_micro + args.micro):  # warm: one whole step first
        point = {"clip": clip, "clips": args.clips, "warm": args.clips, "micro": m}
        limits[m] = run_worker("limit", point)
    limit = min(r["s_per_clip"] for r in limits.values())
    forward = min(r["forward_s_per_clip"] for r in limits.values())
    for m, r in limits.items():
        line("limit: forward+backward+update", m, r["s_per_clip"], r["peak_mib"])
    for m, r in limits.items():
        line("limit: forward only", m, r["forward_s_per_clip"], floor=forward)
    for m in args.micro:
        r = run_worker("expert", {"data": data, "batch": args.batch, "micro": m})
        line("expert training epoch (bare loop)", m, r["train_s_per_clip"], r["peak_mib"],
             vs(r["train_s_per_clip"], ref.get("train")))  # fmt: skip
        if "peak_gib" in ref:
            print(f"|   peak RSS vs the reference's {ref['peak_gib']} GiB | {m} | - | - | "
                  f"{r['peak_mib'] / 1024 / ref['peak_gib']:.2f}x | - |")  # fmt: skip
        epoch_ref = reference_epoch(spec, r["test_clips"])
        # an epoch's floor: its training clips at the limit, its test clips' forward alone
        epoch_floor = limit + forward * r["test_clips"] / r["clips"]
        line("expert test evaluation (s per test clip)", m, r["eval_s_per_clip"], None,
             vs(r["eval_s_per_clip"] * 240, ref.get("eval240")), forward)  # fmt: skip
        line("expert epoch + evaluation (bare)", m, r["epoch_s_per_clip"], None,
             vs(r["epoch_s_per_clip"], epoch_ref), epoch_floor)  # fmt: skip
    fixed = {}
    with tempfile.TemporaryDirectory(prefix="s2d-bench-loops-") as tmp:
        for m in args.micro:
            out = str(Path(tmp) / f"store-{m}")
            farm = {"data": data, "out": out, "epochs": args.farm_epochs, "batch": args.batch}
            r = run_worker("farm", farm | {"micro": m})
            line("expert epoch + evaluation (farm, steady)", m, r["steady_s_per_clip"], None,
                 vs(r["steady_s_per_clip"], epoch_ref), epoch_floor)  # fmt: skip
            line(f"expert epoch + evaluation (farm, wall of {args.farm_epochs} epochs)", m,
                 r["wall_s_per_clip"], None, vs(r["wall_s_per_clip"], epoch_ref),
                 epoch_floor)  # fmt: skip
            fixed[m] = r
        if args.farm_ablation:
            m = args.micro[0]
            farm = {"data": data, "out": str(Path(tmp) / "store-bare-env"), "bare_env": True,
                    "epochs": args.farm_epochs, "batch": args.batch, "micro": m}  # fmt: skip
            r = run_worker("farm", farm)
            line("  same, workers without MALLOC_ARENA_MAX=1", m, r["steady_s_per_clip"], None,
                 vs(r["steady_s_per_clip"], epoch_ref), epoch_floor)  # fmt: skip
    for m in args.micro:
        r = run_worker("eval", {"clip": clip, "epochs": args.eval_epochs, "micro": m})
        line("evaluation epoch (ipc 1, 10 clips)", m, r["s_per_clip"], r["peak_mib"])
    if args.distill:
        for method, (seconds, floor) in distill_rows(data, clip).items():
            print(f"| {method} iteration, s (its network work alone: {floor:.2f} s) | - "
                  f"| {seconds:.2f} | {seconds / floor:.2f}x work | - | - |")  # fmt: skip
    print(f"\n{spec}²: the farm's fixed costs, paid once per farm whatever its epochs")
    print("| cost | micro | s | in steady epochs |")
    print("| --- | --- | --- | --- |")
    for m, r in fixed.items():
        for what, seconds in [*r["fixed_s"].items(), ("all", sum(r["fixed_s"].values()))]:
            print(f"| {what} | {m} | {seconds:.1f} | {seconds / r['steady_epoch_s']:.2f} |")
    epochs = ExpertConfig().num_epochs
    for m, r in fixed.items():  # derived from the rows above, not timed on its own
        per_clip = r["steady_s_per_clip"] + sum(r["fixed_s"].values()) / (epochs * r["clips"])
        print(f"a default expert ({epochs} epochs) alone through the farm, every fixed cost "
              f"included ({m}): {per_clip:.4f} s per clip-epoch, {per_clip / epoch_floor:.2f}x "
              f"its floor, {vs(per_clip, epoch_ref)}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["16x112"])
    p.add_argument("--micro", nargs="+", default=["auto", "all"], help="auto, all or clips")
    p.add_argument("--limit-micro", nargs="+", default=["all", "128", "32", "8"])
    p.add_argument("--no-farm-ablation", dest="farm_ablation", action="store_false")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--clips", type=int, default=200, help="clips of the limit row's batch")
    p.add_argument("--farm-epochs", type=int, default=3)
    p.add_argument("--eval-epochs", type=int, default=20)
    p.add_argument("--no-distill", dest="distill", action="store_false")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        name, payload = args.worker
        print(json.dumps(WORKERS[name](json.loads(payload))))
        return
    print_calibration()
    videos = 20  # 200 training clips per epoch; 300 test clips
    if args.smoke_test:
        args.sizes, args.micro, args.limit_micro = ["8x64"], ["auto", "8"], []
        args.clips, args.farm_epochs, args.eval_epochs = 16, 1, 2
        videos = 1
    with tempfile.TemporaryDirectory(prefix="s2d-bench-loops-") as tmp:
        for spec in args.sizes:
            frames, size = (int(v) for v in spec.split("x"))
            # one clip per video: an expert epoch trains 10 x videos clips in one batch,
            # as the reference's 200 (the test split is the embedded set's 10 x 10 x 3)
            table(spec, prepare(Path(tmp), frames, size, videos, clips_per_video=1), args)


if __name__ == "__main__":
    main()
