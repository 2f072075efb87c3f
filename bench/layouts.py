"""CPU memory layouts: each network's own path against the same modules in NCHW and in
channels-last.

oneDNN has NCHW and channels-last kernels for convolution and pooling, and which is faster
depends on the CPU's vector units and on what the graph must do. Three regimes, each timed
here in both layouts and in the network's own path, in turns within one run (and checked to
give the same numbers):

- ``embed``: graph-free features (DM's real frames and clips, the class groups' scores, the
  test clips of every evaluation). ``ConvNet`` runs its whole trunk channels-last;
  ``ConvNet3D`` all three blocks on an AVX-512 CPU, its first block on others.
- ``train``: a training step of the module's own weights (ConvNet3D: the evaluation
  protocol and the experts; ConvNet: the groups' frame network). ``ConvNet3D`` runs
  channels-last on an AVX-512 CPU, NCHW on others; ``ConvNet`` NCHW everywhere.
- ``unroll``: MTT's student, weights from a flat vector (``functional_call``), its gradient
  taken with a graph and differentiated again into the data (ConvNet3D only). Weights not
  the module's own keep ``ConvNet3D`` in NCHW.

    python bench/layouts.py [--repeats 5] [--smoke-test]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from calibration import print_calibration

from s2d_ray.models import create, flatten_params, functional_forward

# (regime, network, input shape per item, items per call): DM's real side at the static
# stage's batch_real 64, an ipc-1 evaluation step on the embedded set (10 clips), an expert's
# micro-batch at 16x112² (8 clips), MTT's batch_syn 10.
CASES = [
    ("embed", "convnet", (8, 3, 64, 64), 64),
    ("embed", "convnet", (16, 3, 112, 112), 64),
    ("embed", "convnet3d", (8, 3, 64, 64), 64),
    ("embed", "convnet3d", (16, 3, 112, 112), 16),
    ("train", "convnet", (8, 3, 64, 64), 64),
    ("train", "convnet3d", (8, 3, 64, 64), 10),
    ("train", "convnet3d", (16, 3, 112, 112), 8),
    ("unroll", "convnet3d", (8, 3, 64, 64), 10),
]


def seconds(calls, repeats: int) -> list[float]:
    """Each call's best of ``repeats``, the calls taken in turn (a machine's speed drifts
    over a run, and a turn of each sees the same drift), after one warm-up each."""
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for i, call in enumerate(calls):
            started = time.perf_counter()
            call()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


class InLayout(torch.nn.Module):
    """``net.embed`` with every module on tensors of one memory format (``None``: the
    network's own path)."""

    def __init__(self, net: torch.nn.Module, fmt: torch.memory_format | None) -> None:
        super().__init__()
        self.net, self.fmt = net, fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt is None:
            return self.net.embed(x)
        fmt = self.fmt
        if self.net.input_kind == "clip":
            x = x.permute(0, 2, 1, 3, 4)
            fmt = torch.channels_last_3d if fmt == torch.channels_last else fmt
        return self.net.features(x.contiguous(memory_format=fmt)).contiguous().flatten(1)


def train_step(embed: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward and backward into the module's own weights."""
    embed.zero_grad(set_to_none=True)
    loss = embed(x).square().mean()
    loss.backward()
    return loss.detach()


def unroll_step(embed: torch.nn.Module, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One student step as MTT takes it (weights from a flat vector, gradient with a graph),
    then the gradient through it into the data: the double backward."""
    x = x.detach().requires_grad_(True)
    theta = flat.detach().requires_grad_(True)
    features = functional_forward(embed, theta, x)
    (grad,) = torch.autograd.grad(features.square().mean(), theta, create_graph=True)
    (data_grad,) = torch.autograd.grad((theta - 0.01 * grad).square().sum(), x)
    return data_grad.square().sum()


def measure(regime: str, arch: str, shape, items: int, repeats: int) -> list[float]:
    """Seconds in the network's own path, in NCHW and in channels-last."""
    net = create(arch, num_classes=10, clip_shape=shape).eval()
    x = torch.randn(items, *(shape if net.input_kind == "clip" else shape[1:]))
    calls = []
    for fmt in (None, torch.contiguous_format, torch.channels_last):
        embed = InLayout(net, fmt)
        if regime == "embed":
            calls.append(torch.no_grad()(partial(embed, x)))
        elif regime == "train":
            calls.append(partial(train_step, embed, x))
        else:
            calls.append(partial(unroll_step, embed, flatten_params(net), x))
    own, *others = (call() for call in calls)  # also the warm-up
    for other in others:
        if not torch.allclose(own, other, rtol=1e-3, atol=1e-4):
            raise SystemExit(f"{arch} {regime}: the layouts give different numbers")
    return seconds(calls, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke-test", action="store_true", help="small cases, one repeat")
    args = p.parse_args()
    print_calibration()
    print(f"CPU capability (ATen): {torch.backends.cpu.get_cpu_capability()}")
    cases = CASES
    if args.smoke_test:
        cases = [(r, a, s, 2) for r, a, s, _ in CASES if a == "convnet3d" and s[-1] == 64]
    repeats = 1 if args.smoke_test else args.repeats
    print("| regime | network | input | items | own path s | NCHW s | channels-last s "
          "| own / NCHW |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    torch.manual_seed(0)
    for regime, arch, shape, items in cases:
        own, nchw, last = measure(regime, arch, shape, items, repeats)
        size = f"{shape[0]}x{shape[2]}²" if arch == "convnet3d" else f"{shape[2]}²"
        print(f"| {regime} | {arch} | {size} | {items} | {own:.3f} | {nchw:.3f} | {last:.3f} "
              f"| {own / nchw:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
