"""Evaluation cost: an S2D set vs a plain set of the same size, and batched vs sequential repeats.

1. Seconds per evaluation epoch (ConvNet3D, 10 classes, ipc 1, batch 256 = one step per
   epoch) when training on: (a) plain synthetic videos; (b) an S2D memory (spc 1, dpc 1)
   materialised once, as s2d-ray does; (c) the same memory with H run per item on every
   access, as the reference's Dataset.__getitem__ did; (d) a 2:2 memory (spc 2, dpc 2) whose
   pair per slot is re-drawn every epoch with H run once over all slots (the protocol's
   default for S2D sets, ``evaluation.items``). Target: (b) and (d) <= 1.05x (a); the
   reference paid 2.2x.
2. R = 3 repeats trained one after another vs as one stacked model (torch.func.vmap).

    python bench/evaluate.py [--epochs 20] [--sizes 8x64 16x112] [--smoke-test]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from calibration import print_calibration
from torch.utils.data import DataLoader, Dataset

from s2d_ray.data.stream import standardize
from s2d_ray.evaluation import EvalConfig, epoch_draw
from s2d_ray.evaluation.protocol import draw_batches, train_network, train_stacked
from s2d_ray.models import create
from s2d_ray.synthetic import S2DMemory, SyntheticVideos

CLASSES = 10


class PerItemIntegrator(Dataset):
    """The reference's pattern: H runs inside __getitem__, once per item per epoch."""

    def __init__(self, memory: S2DMemory) -> None:
        self.memory = memory
        self.static_idx, self.dynamic_idx, self.labels, _ = memory.pairs()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        m = self.memory
        static = m.static[self.static_idx[i]].unsqueeze(0)
        dynamic = m.dynamic.flatten(0, 1)[self.dynamic_idx[i]].unsqueeze(0)
        with torch.no_grad():
            return m.integrator(static, dynamic)[0], self.labels[i]


def epoch_seconds(run_epochs, epochs: int) -> float:
    run_epochs(1)  # warm-up
    started = time.perf_counter()
    run_epochs(epochs)
    return (time.perf_counter() - started) / epochs


def bench_size(frames: int, size: int, epochs: int) -> None:
    gen = torch.Generator().manual_seed(0)
    memory = S2DMemory(
        torch.randn(CLASSES, 3, size, size, generator=gen),
        CLASSES,
        frames=frames,
        vpc=1,
        dpc=1,
        generator=gen,
    )
    with torch.no_grad():
        s2d_items, labels = memory.materialize()
    plain = SyntheticVideos(torch.randn_like(s2d_items), CLASSES)
    clip_shape = (frames, 3, size, size)
    config = EvalConfig(epochs=10**6, repeats=1)  # the lr schedule never triggers here

    def network():
        return create("convnet3d", num_classes=CLASSES, clip_shape=clip_shape, seed=0)

    def protocol(items):
        def run(n):
            train_network(
                network(),
                draw_batches(lambda epoch: (items, labels), config),
                config.model_copy(update={"epochs": n}),
                0,
                torch.device("cpu"),
            )

        return run

    def materialise_then_protocol(n):
        with torch.no_grad():
            items, _ = memory.materialize()
        protocol(items)(n)

    def per_item(n):
        net = network().train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loader = DataLoader(PerItemIntegrator(memory), batch_size=256, shuffle=True)
        for _ in range(n):
            for x, y in loader:
                loss = F.cross_entropy(net(standardize(x)), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    plain_s = epoch_seconds(protocol(plain.items.detach()), epochs)
    ours_s = epoch_seconds(materialise_then_protocol, epochs)
    ref_s = epoch_seconds(per_item, epochs)
    two_by_two = S2DMemory(
        torch.randn(2 * CLASSES, 3, size, size, generator=gen),
        CLASSES,
        frames=frames,
        vpc=1,
        dpc=2,
        generator=gen,
    )
    draw, _ = epoch_draw(two_by_two, frames, pairs="redraw")

    def redraw_protocol(n):
        run = config.model_copy(update={"epochs": n})
        train_network(network(), draw_batches(draw, run), run, 0, torch.device("cpu"))

    redraw_s = epoch_seconds(redraw_protocol, epochs)
    print(f"\n1. Seconds per evaluation epoch, {frames}x{size}², {CLASSES} videos, {epochs} epochs")
    print(f"{'set':<58} {'s/epoch':>8} {'ratio':>6}")
    print(f"{'(a) plain synthetic videos (baseline)':<58} {plain_s:>8.4f} {1.0:>6.2f}")
    verdict = "PASS" if ours_s / plain_s <= 1.05 else "MISS"
    print(
        f"{'(b) S2D memory, materialised once (s2d-ray)':<58} {ours_s:>8.4f} "
        f"{ours_s / plain_s:>6.2f}  {verdict} (target <= 1.05)"
    )
    print(
        f"{'(c) S2D memory, H per item per access (reference)':<58} {ref_s:>8.4f} "
        f"{ref_s / plain_s:>6.2f}"
    )
    verdict = "PASS" if redraw_s / plain_s <= 1.05 else "MISS"
    print(
        f"{'(d) S2D 2:2 memory, pairs re-drawn per epoch, H once':<58} {redraw_s:>8.4f} "
        f"{redraw_s / plain_s:>6.2f}  {verdict} (target <= 1.05)"
    )

    repeats = 3
    rconfig = EvalConfig(epochs=epochs, repeats=repeats, lr=0.01)
    items = plain.items.detach()

    def sequential():
        for r in range(repeats):
            net = create("convnet3d", num_classes=CLASSES, clip_shape=clip_shape, seed=r)
            train_network(
                net,
                draw_batches(lambda epoch: (items, labels), rconfig),
                rconfig,
                r,
                torch.device("cpu"),
            )

    def stacked():
        nets = [
            create("convnet3d", num_classes=CLASSES, clip_shape=clip_shape, seed=r)
            for r in range(repeats)
        ]
        train_stacked(nets, lambda epoch: (items, labels), rconfig, torch.device("cpu"))

    seq_s, stack_s = timed(sequential), timed(stacked)
    print(f"\n2. R = {repeats} repeats x {epochs} epochs, {frames}x{size}²")
    print(f"{'mode':<58} {'seconds':>8} {'ratio':>6}")
    print(f"{'sequential (baseline)':<58} {seq_s:>8.2f} {1.0:>6.2f}")
    print(f"{'stacked under torch.func.vmap':<58} {stack_s:>8.2f} {stack_s / seq_s:>6.2f}")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--sizes", nargs="+", default=["8x64", "16x112"])
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    print_calibration()
    if args.smoke_test:
        args.epochs, args.sizes = 2, ["8x64"]
    for spec in args.sizes:
        frames, size = (int(v) for v in spec.split("x"))
        bench_size(frames, size, args.epochs)


if __name__ == "__main__":
    main()
